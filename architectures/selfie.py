"""The seed's selfie multiclass segmenter (its "modified ViT", MediaPipe-like), batch-agnostic.

Layer for layer the seed's network, with what its code gets wrong fixed:

- The seed rearranges the 1/8 and 1/16 feature maps into 4x4 patches with raw `tf.reshape` /
  `tf.transpose` whose shapes hard-code batch 1 (`(8, 4, 8, 512)`, `(1, 64, 16, 128)`). Here the
  same per-sample permutation is done with Keras `Reshape`/`Permute` layers whose shapes exclude
  the batch, so one set of weights trains at any batch size and exports at batch 1; no tensor
  goes above 4-D (mobile GPU delegates reject 5-D).
- The seed's `tf.multiply`/`tf.add`/`tf.image.resize` and its `Lambda(reduce_sum)` become Keras
  layers, so tfmot can wrap every node; its debug prints are gone.

What the seed's reshape/transpose pairs do (worked out at its own batch 1, 256x256 input): the
32x32x128 map x, with rows h = 4*h1 + h2 and columns w = 4*w1 + w2 (h1, w1 in 0..7: which 4x4
patch; h2, w2 in 0..3: where inside the patch), becomes a [16, 64, 128] tensor
`out[4*h2 + w2, 8*h1 + w1, c] = x[4*h1 + h2, 4*w1 + w2, c]`: axis 1 is the position inside a
patch, axis 2 the patch (MobileViT's unfold). The attention blocks take a softmax over the
patches for each in-patch position and sum over them; the seed's inverse pair restores the
layout exactly. The 16x16x192 map gets the same with 4x4 patches on a 4x4 grid ([16, 16, 192]).
Here the patch stays 4x4 and the grid follows the input size (input / 32 patches a side at the
1/8 stage, input / 64 at the 1/16 stage), so the model also builds at 64x64 or 128x128 for tests
and matches the seed exactly at 256x256.

Formulation choices for the int8 graph (same function, same weights; checked with LiteRT 2.3's
XNNPACK): the sum over patches is one SUM op (a `ReduceSum` layer), which XNNPACK runs in int8
(AVERAGE_POOL_2D it does not); the decoder's nearest 2x upsamplings are concatenations and
reshapes, since XNNPACK has no RESIZE_NEAREST_NEIGHBOR kernel (float or int8); the softmax over
patches keeps the seed's reshape-softmax-reshape form on the 1-channel score map, and each
rearrangement uses two transposes, the fewest this permutation allows with the batch kept as its
own axis. The float32 model is then one XNNPACK partition, and in int8 only the SOFTMAX ops (six
small attention ones and the output) and the uint8 input/output QUANTIZE run outside it.
"""

from architectures import ArchSpec, register

# The seed's id2label (MediaPipe's multiclass selfie classes; 0 is the background, "outer").
LABELS = ("outer", "hair", "face", "skin", "clothes", "accessories")
PATCH = 4  # side of the patches the attention blocks work on, at both stages
STAGE3_CHANNELS = 128  # the seed's MUL=128 large blocks, on the 1/8 map
STAGE4_CHANNELS = 192  # the seed's MUL=192 large blocks, on the 1/16 map
DECODER_CHANNELS = 64
HEAD_CHANNELS = 32
# Input side must be a multiple of 64: stride 16 to the last stage, then whole 4x4 patches.
INPUT_MULTIPLE = 16 * PATCH
STAGE_IN_GAIN = 0.02


def _init(kind: str) -> dict:
    """Initialiser keyword arguments that let the network train from scratch (the function is the seed's).

    The seed's network has no normalisation layer, and Keras' default glorot initialiser shrinks
    it to nothing: a depthwise kernel [k, k, C, 1] gets a variance of 2 / (k*k*(C + 1)), so each
    inverted-residual block cuts the signal ~50x; by the attention stages the features are ~1e-6,
    their squares ~1e-12, every gradient above the decoder underflows and the model only ever
    learns the background prior (measured: held-out mIoU stuck at the background's IoU for 12
    epochs). Variance-preserving He initialisation alone swings the other way: the attention
    blocks square their input and feed the square forward, so a stage input of ~5 became inf
    after one Adam step at lr 1e-3. So: He (ReLU) / LeCun (linear) initialisation, depthwise
    kernels over their true fan-in (k*k, which Keras calls fan_out for that shape), each
    attention block's two residual-branch outputs at zero (every block starts as the identity),
    and the convs feeding each attention stage scaled down (STAGE_IN_GAIN) so the squared
    features start below 1. A fresh initialiser per layer (Keras warns on reuse).
    """
    from exporter.keras import keras

    def scaled(gain, mode="fan_in"):
        return keras.initializers.VarianceScaling(gain, mode, "truncated_normal")

    kinds = {
        "conv": ("kernel_initializer", lambda: scaled(2.0)),  # followed by ReLU
        "linear": ("kernel_initializer", lambda: scaled(1.0)),
        "depthwise": ("depthwise_initializer", lambda: scaled(2.0, "fan_out")),
        "depthwise_linear": ("depthwise_initializer", lambda: scaled(1.0, "fan_out")),
        "residual_out": ("kernel_initializer", lambda: keras.initializers.Zeros()),
        "stage_in": ("kernel_initializer", lambda: scaled(STAGE_IN_GAIN)),
    }
    arg, make = kinds[kind]
    return {arg: make()}


def patch_unfold(x, grid, channels, name):
    """[B, gh*4, gw*4, C] -> [B, 16, gh*gw, C]: the seed's two reshape+transpose blocks.

    With h = 4*h1 + h2 and w = 4*w1 + w2, out[:, 4*h2 + w2, gw*h1 + w1, :] = x[:, h, w, :].
    Two transposes of at most three axes after the batch, as the permutation needs (the seed's
    first transpose folded the batch into its leading axis, which only works at batch 1).
    """
    from exporter.keras import keras

    gh, gw = grid
    p, c = PATCH, channels
    L = keras.layers
    y = L.Reshape((gh * p * gw, p, c), name=f"{name}_r0")(x)  # [(h1 h2 w1), w2, c]
    y = L.Permute((2, 1, 3), name=f"{name}_t0")(y)  # [w2, (h1 h2 w1), c]
    y = L.Reshape((p * gh, p, gw * c), name=f"{name}_r1")(y)  # [(w2 h1), h2, (w1 c)]
    y = L.Permute((2, 1, 3), name=f"{name}_t1")(y)  # [h2, (w2 h1), (w1 c)]
    return L.Reshape((p * p, gh * gw, c), name=f"{name}_r2")(y)  # [(h2 w2), (h1 w1), c]


def patch_fold(y, grid, channels, name):
    """The exact inverse of `patch_unfold`: [B, 16, gh*gw, C] -> [B, gh*4, gw*4, C]."""
    from exporter.keras import keras

    gh, gw = grid
    p, c = PATCH, channels
    L = keras.layers
    z = L.Reshape((p, p * gh, gw * c), name=f"{name}_r0")(y)  # [h2, (w2 h1), (w1 c)]
    z = L.Permute((2, 1, 3), name=f"{name}_t0")(z)  # [(w2 h1), h2, (w1 c)]
    z = L.Reshape((p, gh * p * gw, c), name=f"{name}_r1")(z)  # [w2, (h1 h2 w1), c]
    z = L.Permute((2, 1, 3), name=f"{name}_t1")(z)  # [(h1 h2 w1), w2, c]
    return L.Reshape((gh * p, gw * p, c), name=f"{name}_r2")(z)  # [(h1 h2), (w1 w2), c]


def _conv_block(x, expand, stride, out, name):
    """The seed's convBlock: 1x1 expand (ReLU), 3x3 depthwise (ReLU), 1x1 linear projection."""
    from exporter.keras import keras

    L = keras.layers
    x = L.Conv2D(expand, 1, padding="same", activation="relu", **_init("conv"), name=f"{name}_expand")(x)
    x = L.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu", **_init("depthwise"), name=f"{name}_dw")(x)
    return L.Conv2D(out, 1, padding="same", **_init("linear"), name=f"{name}_project")(x)


def _large_block(x, channels, num_patches, name, fold_double=False):
    """The seed's largeBlock on an unfolded map [B, 16, patches, C] (C = the seed's MUL).

    s = 2*x^2; a = softmax over patches of conv1x1(s -> 1); context = sum over patches of
    a * conv1x1(s); y = x + conv1x1(context * relu(conv1x1(s))); out = y + conv1x1(conv1x1(s)).
    """
    from architectures.layers import ReduceSum
    from exporter.keras import keras

    L = keras.layers
    p2 = PATCH * PATCH
    sq = L.Multiply(name=f"{name}_square")([x, x])
    if not fold_double:  # export folds the 2 into the four 1x1 convs that read s (`export_weights`)
        sq = L.Add(name=f"{name}_double")([sq, sq])
    # Context scores: one per position, softmax over the patches for each in-patch position.
    score = L.Conv2D(1, 1, **_init("linear"), name=f"{name}_score")(sq)
    score = L.Reshape((p2, 1, num_patches), name=f"{name}_score_r0")(score)
    score = L.Softmax(axis=-1, name=f"{name}_softmax")(score)
    score = L.Reshape((p2, num_patches, 1), name=f"{name}_score_r1")(score)
    value = L.Conv2D(channels, 1, **_init("linear"), name=f"{name}_value")(sq)
    context = L.Multiply(name=f"{name}_weigh")([score, value])
    context = ReduceSum(axis=2, name=f"{name}_sum")(context)  # [B, 16, 1, C]
    gate = L.Conv2D(channels, 1, activation="relu", **_init("conv"), name=f"{name}_gate_conv")(sq)
    mixed = L.Multiply(name=f"{name}_gate")([context, gate])
    mixed = L.Conv2D(channels, 1, **_init("residual_out"), name=f"{name}_proj")(mixed)
    mixed = L.Add(name=f"{name}_residual")([mixed, x])
    ffn = L.Conv2D(2 * channels, 1, padding="same", **_init("linear"), name=f"{name}_ffn_expand")(sq)
    ffn = L.Conv2D(channels, 1, padding="same", **_init("residual_out"), name=f"{name}_ffn_project")(ffn)
    return L.Add(name=f"{name}_out")([ffn, mixed])


def _dw_pw(x, dw_kernel, filters, name, activation=None):
    """Depthwise (k x k) then pointwise conv, the decoder's and head's separable unit."""
    from exporter.keras import keras

    L = keras.layers
    x = L.DepthwiseConv2D(dw_kernel, padding="same", activation=activation,
                           **_init("depthwise" if activation else "depthwise_linear"), name=f"{name}_dw")(x)
    pad = "same" if activation else "valid"  # as the seed; identical for a 1x1 conv
    return L.Conv2D(filters, 1, padding=pad, activation=activation,
                    **_init("conv" if activation else "linear"), name=f"{name}_pw")(x)


def build_selfie(config):
    from architectures.layers import DepthToSpace, normalise_pixels, pixel_input, upsample_nearest_2x
    from exporter.keras import keras

    L = keras.layers
    h, w = config.input_size
    if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise ValueError(f"selfie needs an input side that is a multiple of {INPUT_MULTIPLE}, got {h}x{w}")
    grid3 = (h // 8 // PATCH, w // 8 // PATCH)  # 8x8 patches at 256x256
    grid4 = (h // 16 // PATCH, w // 16 // PATCH)  # 4x4 patches at 256x256
    n3, n4 = grid3[0] * grid3[1], grid4[0] * grid4[1]

    fold_double = config.options.get("double") == "folded"  # export only: `export_weights`
    inputs = pixel_input(config)
    x0 = normalise_pixels(inputs, config)  # [0, 1] by default: the seed's "Normalized" runs
    x0 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", **_init("conv"), name="stem_conv")(x0)

    # Block 1 (1/2 -> 1/4): inverted residuals.
    x1 = _conv_block(x0, 96, 1, 64, "block1a")
    x1 = _conv_block(x1, 384, 2, 128, "block1b")
    x1_1 = _conv_block(x1, 768, 1, 128, "block1c")
    output1 = L.Add(name="output1")([x1_1, x1])

    # Block 2 (1/8), then the 4x4-patch attention stage.
    x2 = _conv_block(output1, 768, 2, 256, "block2a")
    x2 = L.Conv2D(STAGE3_CHANNELS, 3, padding="same", activation="relu", **_init("conv"), name="block2_conv3x3")(x2)
    x2 = L.Conv2D(STAGE3_CHANNELS, 1, padding="same", activation="relu", **_init("stage_in"), name="block2_conv1x1")(x2)
    x3 = patch_unfold(x2, grid3, STAGE3_CHANNELS, "stage3_unfold")
    for i in range(2):
        x3 = _large_block(x3, STAGE3_CHANNELS, n3, f"stage3_attn{i}", fold_double)
    x3 = patch_fold(x3, grid3, STAGE3_CHANNELS, "stage3_fold")
    output3 = L.Conv2D(256, 1, padding="same", **_init("linear"), name="output3")(x3)

    # Block 4 (1/16), second attention stage.
    x4 = _conv_block(output3, 1536, 2, 384, "block4a")
    x4 = L.Conv2D(STAGE4_CHANNELS, 3, padding="same", activation="relu", **_init("conv"), name="block4_conv3x3")(x4)
    x4 = L.Conv2D(STAGE4_CHANNELS, 1, padding="same", activation="relu", **_init("stage_in"), name="block4_conv1x1")(x4)
    x4 = patch_unfold(x4, grid4, STAGE4_CHANNELS, "stage4_unfold")
    for i in range(4):
        x4 = _large_block(x4, STAGE4_CHANNELS, n4, f"stage4_attn{i}", fold_double)
    x4 = patch_fold(x4, grid4, STAGE4_CHANNELS, "stage4_fold")
    x4 = L.Conv2D(384, 1, padding="same", **_init("linear"), name="block4_expand_out")(x4)
    x4 = L.DepthwiseConv2D(1, padding="same", **_init("depthwise_linear"), name="block4_dw_out")(x4)
    output4 = L.Conv2D(DECODER_CHANNELS, 1, **_init("linear"), name="output4")(x4)

    # FPN-like decoder: lateral 1x1 depthwise + pointwise, nearest-upsampled top-down path.
    def top_down(lateral, coarser, name):
        lat = _dw_pw(lateral, 1, DECODER_CHANNELS, f"{name}_lateral")
        up = upsample_nearest_2x(coarser, f"{name}_up")
        return L.Add(name=name)([lat, up])

    output5 = top_down(output3, output4, "output5")  # 1/8
    output6 = top_down(output1, output5, "output6")  # 1/4
    output7 = top_down(x0, output6, "output7")  # 1/2

    # Bilinear-upsampled 3x3 separable skips from every pyramid level, summed at 1/2.
    def skip(source, factor, name):
        s = _dw_pw(source, 3, DECODER_CHANNELS, name)
        if factor == 1:
            return s
        return L.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_up")(s)

    x8 = skip(output7, 1, "block8")
    output8 = L.Add(name="output8")([x8, skip(output6, 2, "block8_skip")])
    output9 = L.Add(name="output9")([output8, skip(output5, 4, "block9_skip")])
    output10 = L.Add(name="output10")([output9, skip(output4, 8, "block10_skip")])

    # Head: five depthwise-separable units, a 2x transposed conv to full size, softmax scores.
    x = output10
    for i in range(5):
        x = _dw_pw(x, 3, HEAD_CHANNELS, f"head{i}", activation="relu")
    if config.options.get("head") == "fused":  # export only: `export_weights`
        # The 2x2 stride-2 transposed conv and the 1x1 scores conv are both linear, with nothing
        # between them, and the deconv's taps do not overlap: each output phase is a 1x1 conv of the
        # half-size map, so the pair is one 1x1 conv to 4 x classes channels and DEPTH_TO_SPACE.
        # Same function; the 32-channel full-size map (TRANSPOSE_CONV, the only one left in the
        # graph, and the scores GEMM over it) is never made.
        x = L.Conv2D(4 * config.num_classes, 1, name="scores_phases")(x)
        x = DepthToSpace(2, name="scores_interleave")(x)
        scores = L.Softmax(name="scores")(x)
    else:
        x = L.Conv2DTranspose(HEAD_CHANNELS, 2, strides=2, padding="same", **_init("linear"), name="head_upsample")(x)
        scores = L.Conv2D(config.num_classes, 1, padding="same", activation="softmax", **_init("linear"),
                          name="scores")(x)
    return keras.Model(inputs, scores, name="selfie")


# The 1x1 convs of an attention block that read s = 2x^2 (`_large_block`).
_READS_DOUBLE = ("_score", "_value", "_gate_conv", "_ffn_expand")


def export_weights(model, fixed) -> None:
    """Trained weights into the export graph (`export_options`): every layer as it is, except
    scores_phases = the deconv (kernel [2, 2, filters, in]) followed by the scores conv, per phase,
    and, with double="folded", the four 1x1 convs reading s = 2x^2 take the 2 in their kernels."""
    import numpy as np

    folded = not any(layer.name.endswith("_double") for layer in fixed.layers)
    for layer in fixed.layers:
        if not layer.weights:
            continue
        if layer.name == "scores_phases":
            deconv, bias_d = model.get_layer("head_upsample").get_weights()
            kernel_s, bias_s = model.get_layer("scores").get_weights()
            w = kernel_s[0, 0]  # [filters, classes]
            # Output pixel (2i + a, 2j + b) = input (i, j) through tap (a, b): no padding at k = s = 2.
            # DEPTH_TO_SPACE reads channels in (a, b, class) order.
            fused = np.einsum("abfc,fn->cabn", deconv, w).reshape(deconv.shape[-1], -1)
            layer.set_weights([fused[None, None], np.tile(bias_d @ w + bias_s, 4)])
        elif folded and layer.name.startswith("stage") and layer.name.endswith(_READS_DOUBLE):
            kernel, bias = model.get_layer(layer.name).get_weights()
            layer.set_weights([2.0 * kernel, bias])  # exact: a power of two
        else:
            layer.set_weights(model.get_layer(layer.name).get_weights())


register(
    ArchSpec(
        name="selfie",
        description="The seed's MediaPipe-like selfie multiclass segmenter (its 'modified ViT')",
        builder=build_selfie,
        labels=LABELS,
        input_size=(256, 256),
        input_norm="0,1",
        output="softmax",
        min_input=INPUT_MULTIPLE,
        input_multiple=INPUT_MULTIPLE,
        options={"head": "transpose", "double": "add"},
        # Exported with the head's deconv and scores conv as one per-phase 1x1 conv, and each
        # attention block's s = x^2 + x^2 ADD folded into the convs reading s (same function).
        export_options={"head": "fused", "double": "folded"},
        export_weights=export_weights,
        # Its attention blocks square their input with no normalisation anywhere: at Adam's usual
        # 1e-3 the loss went to NaN within the first epoch and at 3e-4 one epoch spiked to 2e5 and
        # left the model predicting background only (128x128 synthetic scenes); 1e-4 trained stably.
        learning_rate=1e-4,
    )
)
