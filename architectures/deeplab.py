"""The seed's DeepLab: `mobilenet_v3_small_seg` backbone with the LR-ASPP head, in TF2 Keras.

What the seed's TF1 `research/deeplab` flags build (`--model_variant=mobilenet_v3_small_seg
--output_stride=32 --aspp_with_squeeze_and_excitation=1 --aspp_convs_filters=128
--add_image_level_feature=1 --image_se_uses_qsigmoid=1 --aspp_with_concat_projection=0
--decoder_output_stride=8 --decoder_use_sum_merge=1 --decoder_output_is_logits=1`),
re-implemented layer for layer:

- Backbone: MobileNetV3-Small with its last stage halved (slim's `_reduce_consecutive_layers`
  on layers 10..13), no dilation. Layer numbers follow slim's endpoints: `layer1` is the stem
  conv, `layer2`..`layer12` the inverted-residual blocks, `layer13` the final 1x1 conv, so the
  decoder tap `layer_4/depthwise_output` (88 channels, stride 8) is `layer4_depthwise_relu` here.
- SE: global average pool, 1x1 conv (bias) to make_divisible(C/4, 8) + ReLU, 1x1 conv (bias)
  back to C, hard sigmoid relu6(x+3)/6, multiply.
- LR-ASPP head: 1x1 conv 128 + BN + ReLU on the 288-channel stride-32 features, multiplied by an
  image-level gate (global average pool, 1x1 conv 128 with bias, hard sigmoid); no projection.
- Decoder (sum merge, output is logits): bilinear-upsample the head to stride 8, 1x1 conv to
  the classes, plus a 1x1 conv to the classes on the stride-8 tap; then bilinear to input size.

Input size: 256x256 with half-pixel resizes (default) rather than the seed's 257x257 with
align-corners resizes (still there: `align_corners=True` with input_size=257). Why 256:
- A power of two halves exactly at every stride-2 stage (128, 64, 32, 16, 8), so both
  upsamplings are exact integer factors (x4 head, x8 logits).
  Those are Keras' stock `UpSampling2D(interpolation="bilinear")`, which tfmot's QAT registry
  already supports, instead of a custom align-corners layer that needs its own QuantizeConfig.
- 257 gives odd maps (129, 65, 33, 17, 9): the GPU delegate's work-group tiles and XNNPACK's
  pixel tiles end partly empty at every stage, for 0.8% more pixels; measured here the float
  model ran about 10% slower at 257 than at 256 (XNNPACK, 2 threads, noisy shared machine).
- Half-pixel centres are what TF2 (`tf.image.resize`), Keras and the other models of this
  toolchain use, and 256x256 is the input of the other segmenters here (unet, selfie); both
  geometries lower to one RESIZE_BILINEAR that XNNPACK and the GPU delegate accept, so the
  seed's geometry costs nothing to keep as an option for its TF1-trained weights.
With `align_corners=True` resizes use TF1's geometry, exact at 32k+1 inputs (257: 9 -> 33 -> 257,
x4 and x8 with corners aligned). Sizes whose maps are not integer multiples get exact-size
`ResizeBilinear` layers either way, so any input size builds.

Hard-swish is one `HardSwish` layer (one quantiser in QAT) computing x*relu6(x+3)/6. By default
(`hard_swish="xnnpack"`) it is written so that TFLite keeps it as ADD(x, 3)+RELU6, MUL(x, 1/6)
and MUL rather than fusing it into its HARD_SWISH builtin: LiteRT 2.3's XNNPACK delegate has no
int8 HARD_SWISH, so the builtin's 18 instances ran on reference kernels and split the int8 graph
into 19 XNNPACK partitions (int8 slower than float). With the three element-wise ops the int8
file is one XNNPACK partition (only the uint8 <-> int8 QUANTIZE at its edges stay outside).
`hard_swish="builtin"` keeps the issue's HARD_SWISH form (one op; best on runtimes with an int8
HARD_SWISH kernel). Same weights either way; float results differ by rounding only.

`freeze_bn=True` is the seed's `fine_tune_batch_norm=false`: BatchNormalization always runs in
inference mode (moving statistics never update) while gamma and beta stay trainable. It is
meant for fine-tuning trained weights: from scratch the fresh statistics (0, 1) never normalise.
tfmot's quantize_apply rebuilds the graph without the `training=False` call argument, so a
quantised copy would update its statistics again; `exporter.qat.freeze_batchnorm` re-pins every
BN of a QAT model, whatever this option says.
"""

from architectures import ArchSpec, register

VOC_LABELS = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# (expansion, kernel, stride, out, squeeze-excite, activation) for slim's layer_2..layer_12.
# expansion None: no expansion conv (slim's expand_input_by_factor(1) on 16 channels).
BLOCKS = (
    (None, 3, 2, 16, True, "relu"),  # layer2
    (72, 3, 2, 24, False, "relu"),  # layer3
    (88, 3, 1, 24, False, "relu"),  # layer4: depthwise output is the decoder tap
    (96, 5, 2, 40, True, "hswish"),  # layer5
    (240, 5, 1, 40, True, "hswish"),  # layer6
    (240, 5, 1, 40, True, "hswish"),  # layer7
    (120, 5, 1, 48, True, "hswish"),  # layer8
    (144, 5, 1, 48, True, "hswish"),  # layer9
    (144, 5, 2, 48, True, "hswish"),  # layer10 (halved: 288, 96 in MobileNetV3-Small)
    (288, 5, 1, 48, True, "hswish"),  # layer11 (halved: 576, 96)
    (288, 5, 1, 48, True, "hswish"),  # layer12 (halved: 576, 96)
)
STEM_FILTERS = 16
FEATURE_FILTERS = 288  # layer13: 1x1 conv (halved from 576)
HEAD_FILTERS = 128  # aspp_convs_filters
SE_RATIO = 4
DECODER_LAYER = 4
DECODER_ENDPOINT = "layer4_depthwise_relu"  # slim's layer_4/depthwise_output, stride 8
FEATURES_ENDPOINT = "layer13_hswish"  # stride 32, FEATURE_FILTERS channels
# From-scratch training on the small synthetic set needs running statistics that follow the
# weights (Keras' default 0.99 lags for many epochs); slim's epsilon.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3
# How hard-swish reaches TFLite (same function, same weights): "xnnpack" as MUL, ADD+RELU6, MUL,
# which XNNPACK delegates in int8 (default); "builtin" as TFLite's HARD_SWISH op, as the issue
# describes it, which LiteRT 2.3's XNNPACK runs in float only (int8: reference kernel).
HARD_SWISH_FORMS = ("xnnpack", "builtin")
# The hard sigmoid's 1/6 in the SE and image-level gates: "exact", or "tf1", the 0.16667 of TF1
# DeepLab's q_sigmoid and slim's MobileNetV3 SE, which a TF1 checkpoint's import sets
# (architectures/importers/deeplab_tf1.py) so the imported model computes what TF1 did.
HARD_SIGMOID_SCALES = {"exact": 1.0 / 6.0, "tf1": 0.16667}


def make_divisible(value: float, divisor: int = 8) -> int:
    """slim's _make_divisible: round to a multiple of divisor, never down by more than 10%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def build_deeplab(config):
    from architectures.layers import (
        HardSigmoid,
        HardSwish,
        ResizeBilinear,
        pixel_input,
        normalise_pixels,
    )
    from exporter.keras import keras

    layers = keras.layers
    opts = config.options
    align_corners = bool(opts["align_corners"])
    hswish_builtin = opts["hard_swish"] == "builtin"
    sixth_folded = opts.get("sixth") == "folded" and not hswish_builtin  # export only: `fold_sixth_weights`
    if opts["hard_swish"] not in HARD_SWISH_FORMS:
        raise ValueError(f"hard_swish must be one of {HARD_SWISH_FORMS}, got {opts['hard_swish']!r}")
    if opts["hard_sigmoid"] not in HARD_SIGMOID_SCALES:
        raise ValueError(f"hard_sigmoid must be one of {tuple(HARD_SIGMOID_SCALES)}, got {opts['hard_sigmoid']!r}")
    gate_scale = HARD_SIGMOID_SCALES[opts["hard_sigmoid"]]
    # Explicit training=False pins BN to inference mode in the graph (kept by clone_model and
    # quantize_annotate_model, lost by quantize_apply); gamma/beta remain trainable weights.
    bn_kwargs = {"training": False} if opts["freeze_bn"] else {}

    def bn(x, name):
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(
            x, **bn_kwargs
        )

    def act(x, kind, name):
        if kind == "relu":
            return layers.ReLU(name=f"{name}_relu")(x)
        return HardSwish(builtin=hswish_builtin, sixth_folded=sixth_folded, name=f"{name}_hswish")(x)

    def resize(x, size, name, separable=False):
        in_h, in_w = x.shape[1], x.shape[2]
        out_h, out_w = size
        if (in_h, in_w) == (out_h, out_w):
            return x
        if separable:
            return ResizeBilinear((out_h, out_w), align_corners=align_corners, separable=True, name=name)(x)
        if not align_corners and out_h % in_h == 0 and out_w % in_w == 0:
            return layers.UpSampling2D(
                (out_h // in_h, out_w // in_w), interpolation="bilinear", name=name
            )(x)
        return ResizeBilinear((out_h, out_w), align_corners=align_corners, name=name)(x)

    def squeeze_excite(x, name):
        channels = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
        s = layers.Conv2D(make_divisible(channels / SE_RATIO), 1, name=f"{name}_se_reduce")(s)
        s = layers.ReLU(name=f"{name}_se_relu")(s)
        s = layers.Conv2D(channels, 1, name=f"{name}_se_expand")(s)
        s = HardSigmoid(gate_scale, name=f"{name}_se_hsigmoid")(s)
        return layers.Multiply(name=f"{name}_se_mul")([x, s])

    inputs = pixel_input(config)
    x = normalise_pixels(inputs, config)  # [-1, 1] by default, as TF1 DeepLab's preprocessing

    # layer1: stem.
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="layer1_conv")(x)  # fmt: skip
    x = bn(x, "layer1_bn")
    x = act(x, "hswish", "layer1")

    tap = None
    for index, (expansion, kernel, stride, out, se, kind) in enumerate(BLOCKS, start=2):
        name = f"layer{index}"
        shortcut = x
        if expansion is not None and expansion != x.shape[-1]:
            x = layers.Conv2D(expansion, 1, use_bias=False, name=f"{name}_expand")(x)
            x = bn(x, f"{name}_expand_bn")
            x = act(x, kind, f"{name}_expand")
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                   name=f"{name}_depthwise")(x)  # fmt: skip
        x = bn(x, f"{name}_depthwise_bn")
        x = act(x, kind, f"{name}_depthwise")
        if index == DECODER_LAYER:
            tap = x
        if se:
            x = squeeze_excite(x, name)
        x = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(x)
        x = bn(x, f"{name}_project_bn")
        if stride == 1 and shortcut.shape[-1] == out:
            x = layers.Add(name=f"{name}_add")([shortcut, x])

    # layer13: final 1x1 conv of the (halved) last stage.
    x = layers.Conv2D(FEATURE_FILTERS, 1, use_bias=False, name="layer13_conv")(x)
    x = bn(x, "layer13_bn")
    features = act(x, "hswish", "layer13")

    # LR-ASPP: 1x1 conv branch gated by the image-level branch (global pool over the whole map;
    # the seed's 257 crop pooled its 9x9 map with a 9x9 window, i.e. globally).
    branch = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="aspp0_conv")(features)
    branch = bn(branch, "aspp0_bn")
    branch = layers.ReLU(name="aspp0_relu")(branch)
    gate = layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling_pool")(features)
    gate = layers.Conv2D(HEAD_FILTERS, 1, name="image_pooling_conv")(gate)
    gate = HardSigmoid(gate_scale, name="image_pooling_hsigmoid")(gate)
    head = layers.Multiply(name="aspp_gated")([branch, gate])

    # Decoder at output stride 8, sum merge, output is logits.
    head = resize(head, tap.shape[1:3], "decoder_upsample")
    head_logits = layers.Conv2D(config.num_classes, 1, name="decoder_aspp_logits")(head)
    tap_logits = layers.Conv2D(config.num_classes, 1, name="decoder_feature_logits")(tap)
    logits = layers.Add(name="decoder_sum")([head_logits, tap_logits])
    # export only ("logits_resize": "separable"): the same resize as two 1-D passes (layers.ResizeBilinear).
    logits = resize(logits, config.input_size, "logits", separable=opts.get("logits_resize") == "separable")
    return keras.Model(inputs, logits, name="deeplab")


# Layers a folded hard-swish's 6x output passes through unchanged in scale (linear in it, or a
# multiply by a gate computed from an already-corrected branch), on its way to the convs that absorb the 1/6.
_SCALE_PASSTHROUGH = ("GlobalAveragePooling2D", "Multiply", "UpSampling2D", "ResizeBilinear")
_SCALE_ABSORBERS = ("Conv2D", "DepthwiseConv2D")


def _sixth_absorbers(fixed) -> set[str]:
    """Names of the convs that read a `sixth_folded` HardSwish's output, directly or through
    `_SCALE_PASSTHROUGH` layers (SE pool and multiply, the head's gate and resize)."""
    absorbers: set[str] = set()
    for layer in fixed.layers:
        if type(layer).__name__ != "HardSwish" or not layer.sixth_folded:
            continue
        todo = [node.layer for node in layer._outbound_nodes]
        while todo:
            reader = todo.pop()
            kind = type(reader).__name__
            if kind in _SCALE_ABSORBERS:
                if reader.name in absorbers:
                    raise ValueError(f"{reader.name} reads a folded hard-swish twice")
                absorbers.add(reader.name)
            elif kind in _SCALE_PASSTHROUGH:
                todo.extend(node.layer for node in reader._outbound_nodes)
            else:
                raise ValueError(f"folded hard-swish {layer.name} reaches {kind} {reader.name}: not foldable")
    return absorbers


def fold_sixth_weights(model, fixed) -> None:
    """Trained weights into the export graph (`export_options`): every layer as it is, except the
    convs that read a hard-swish exported without its 1/6 (`HardSwish(sixth_folded=True)`), whose
    kernels take it (their biases and the BNs after them are unchanged: the conv's output is)."""
    absorbers = _sixth_absorbers(fixed)
    for layer in fixed.layers:
        weights = model.get_layer(layer.name).get_weights()
        if layer.name in absorbers:
            weights = [weights[0] / 6.0, *weights[1:]]
        layer.set_weights(weights)


register(
    ArchSpec(
        name="deeplab",
        description="DeepLab mobilenet_v3_small_seg + LR-ASPP, output stride 8 (the seed's DeepLab)",
        builder=build_deeplab,
        labels=VOC_LABELS,  # mask value 255 = ignore
        input_size=(256, 256),
        input_norm="-1,1",  # x * 2/255 - 1 (MobileNetV3, TF1 DeepLab)
        output="logits",
        min_input=32,
        input_multiple=32,
        options={"align_corners": False, "freeze_bn": False, "hard_swish": "xnnpack", "hard_sigmoid": "exact"},
        # Exported with each hard-swish's 1/6 in the kernels of the convs that read it (same
        # function; `fold_sixth_weights`). The int8 hard-swish is then ADD(+RELU6) and MUL(r, x),
        # which LiteRT's XNNPACK runs as one table lookup instead of three element-wise passes:
        # A76, 128x128, int8 7.27 M -> 6.29 M instructions, float32 10.00 -> 9.80 M (native output:
        # 5.40 -> 4.42 M, 8.59 -> 8.39 M); held-out agreement on the bench model 99.04 % -> 99.02 %.
        # "sixth" is export-only (absent: the 1/6 is the layer's own MUL).
        # The final resize to the input size as two 1-D passes (same function in float; layers.ResizeBilinear):
        # A76, 128x128, trained bench weights, default output contract: int8 6.29 M -> 5.90 M
        # instructions, float32 9.80 -> 9.60 M (held-out agreement 99.02 % -> 99.01 %).
        export_options={"sixth": "folded", "logits_resize": "separable"},
        export_weights=fold_sixth_weights,
        learning_rate=1e-3,
    )
)
