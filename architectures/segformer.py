"""SegFormer: the Mix Transformer (MiT) encoder and the all-MLP decoder, as one flat Keras graph.

Follows Hugging Face's `SegformerForSemanticSegmentation` op for op, so a Hugging Face checkpoint
imports exactly (`architectures.segformer_hf`):

- Overlapping patch embeddings: a strided conv with PyTorch's symmetric zero padding (an explicit
  ZeroPadding2D; TF's "same" pads the other side), then LayerNorm.
- Efficient self-attention: keys and values from a token grid reduced by a conv with
  kernel = stride = sr ratio (then LayerNorm); heads as an axis ([B, heads, N, d], never above
  4-D); scores are `(q @ k^T) * d**-0.5`, softmax, then `@ v`.
- Mix-FFN: Dense -> depthwise 3x3 -> exact (erf) GELU -> Dense.
- Decoder: a Dense per stage to `decoder_hidden_size`, bilinear upsampling to the 1/4 grid,
  concatenation (deepest stage first), 1x1 conv without bias, BatchNorm, ReLU, dropout, a 1x1
  classifier; then bilinear upsampling to the input size (half-pixel centres, as PyTorch's
  interpolate with align_corners=False).
- LayerNorm form (`layer_norm`): "keras" (LayerNormalization), or "centered"
  (`layers.CenteredLayerNormalization`, the same function as SUB, MUL, MEAN, ADD, RSQRT, MUL, ADD:
  ops with int16 kernels), which the int16x8 file's export graph uses (`precision_export_options`):
  Keras's form has a SQUARED_DIFFERENCE, which LiteRT runs in float and int32 only.
- Exported decoder (`decoder="folded"`, what `export_model` builds): the same function with the
  fuse conv folded into each stage's Dense. A 1x1 conv commutes with bilinear upsampling (both
  linear, the resize weights sum to 1) and a concat followed by a 1x1 conv is a sum of per-input
  1x1 convs, so fuse(concat(up(M_i x_i + b_i))) = sum_i up((M_i F_i) x_i + b_i F_i). That drops
  the 1x1 conv over 4 x 256 channels on the 1/4 grid (at 256x256, 1.07 G of b0's MACs) and
  leaves the BatchNorm, ReLU and classifier as they were.

Tensors stay NHWC [B, H, W, C] between ops (Dense and LayerNormalization act on the last axis),
so the only reshapes are the ones into and out of attention heads.

LayerNorm epsilon: every LayerNorm is PyTorch's default 1e-5, because that is what Hugging Face's
modeling code builds (`nn.LayerNorm(hidden_size)` throughout); its config's `layer_norm_eps`
(1e-6, the original MiT value) is never read by the model. BatchNorm: PyTorch's eps 1e-5 and
momentum 0.1 (Keras momentum 0.9). Not reproduced: stochastic depth (drop_path_rate) in training.
"""

from architectures import ArchSpec, register


LAYER_NORM_EPS = 1e-5
BATCH_NORM_EPS = 1e-5
BATCH_NORM_MOMENTUM = 0.9
CLASSIFIER_DROPOUT = 0.1

_MIT_COMMON = {
    "num_attention_heads": (1, 2, 5, 8),
    "sr_ratios": (8, 4, 2, 1),
    "patch_sizes": (7, 3, 3, 3),
    "strides": (4, 2, 2, 2),
    "mlp_ratios": (4, 4, 4, 4),
}
# The published MiT sizes (Xie et al. 2021, Table 6; Hugging Face's nvidia/mit-b0..b5 configs).
VARIANTS = {
    "b0": {"hidden_sizes": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": (64, 128, 320, 512), "depths": (2, 2, 2, 2), "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 4, 6, 3), "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 4, 18, 3), "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 8, 27, 3), "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": (64, 128, 320, 512), "depths": (3, 6, 40, 3), "decoder_hidden_size": 768},
}
VARIANTS = {name: {**_MIT_COMMON, **sizes} for name, sizes in VARIANTS.items()}

# Per-field overrides of the variant's sizes, named as in Hugging Face's SegformerConfig
# (None: the variant's value). The importer fills them in for checkpoints of other sizes.
SIZE_FIELDS = (
    "hidden_sizes",
    "depths",
    "num_attention_heads",
    "sr_ratios",
    "patch_sizes",
    "strides",
    "mlp_ratios",
    "decoder_hidden_size",
)


def resolve_sizes(options: dict) -> dict:
    """The variant's sizes with any per-field overrides applied; checked for consistency."""
    variant = options.get("variant") or "b0"
    if variant not in VARIANTS:
        raise ValueError(f"segformer has no variant {variant!r}; choose one of {sorted(VARIANTS)}")
    sizes = dict(VARIANTS[variant])
    for field in SIZE_FIELDS:
        if options.get(field) is not None:
            value = options[field]
            sizes[field] = int(value) if field == "decoder_hidden_size" else tuple(int(v) for v in value)
    stages = len(sizes["hidden_sizes"])
    for field in SIZE_FIELDS[:-1]:
        if len(sizes[field]) != stages:
            raise ValueError(f"segformer: {field} has {len(sizes[field])} entries, expected {stages}")
    for hidden, heads in zip(sizes["hidden_sizes"], sizes["num_attention_heads"]):
        if hidden % heads:
            raise ValueError(f"segformer: hidden size {hidden} is not divisible by {heads} heads")
    return sizes


class _Layers:
    """keras.layers with another LayerNormalization (the `layer_norm` option)."""

    def __init__(self, base, layer_norm):
        self._base, self.LayerNormalization = base, layer_norm

    def __getattr__(self, name):
        return getattr(self._base, name)


LAYER_NORMS = ("keras", "centered")


def build_segformer(config):
    from architectures.layers import CenteredLayerNormalization, normalise_pixels, pixel_input
    from exporter.keras import keras

    sizes = resolve_sizes(config.options)
    layers = keras.layers
    layer_norm = config.options.get("layer_norm") or "keras"
    if layer_norm not in LAYER_NORMS:
        raise ValueError(f"segformer has no layer_norm {layer_norm!r}; choose one of {', '.join(LAYER_NORMS)}")
    if layer_norm == "centered":
        layers = _Layers(keras.layers, CenteredLayerNormalization)
    inputs = pixel_input(config)
    x = normalise_pixels(inputs, config)  # (x / 255 - ImageNet mean) / ImageNet std by default

    features = []
    for i, hidden in enumerate(sizes["hidden_sizes"]):
        x = _patch_embedding(layers, x, i, hidden, sizes["patch_sizes"][i], sizes["strides"][i])
        for j in range(sizes["depths"][i]):
            x = _block(
                layers,
                x,
                f"s{i}_b{j}_",
                hidden,
                sizes["num_attention_heads"][i],
                sizes["sr_ratios"][i],
                sizes["mlp_ratios"][i],
            )
        x = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"s{i}_ln")(x)
        features.append(x)

    # All-MLP decoder.
    width = sizes["decoder_hidden_size"]
    grid = tuple(features[0].shape[1:3])
    folded = _decoder_kind(config.options) == "folded"
    projected = []
    for i, feature in enumerate(features):
        y = layers.Dense(width, name=f"dec_fold{i}" if folded else f"dec_proj{i}")(feature)
        if tuple(y.shape[1:3]) != grid:
            y = _resize(layers, y, grid, name=f"dec_up{i}")
        projected.append(y)
    if folded:
        y = layers.Add(name="dec_fuse")(projected)
    else:
        y = layers.Concatenate(name="dec_concat")(projected[::-1])
        y = layers.Conv2D(width, 1, use_bias=False, name="dec_fuse")(y)
    y = layers.BatchNormalization(
        epsilon=BATCH_NORM_EPS, momentum=BATCH_NORM_MOMENTUM, name="dec_bn"
    )(y)
    y = layers.ReLU(name="dec_relu")(y)
    y = layers.Dropout(CLASSIFIER_DROPOUT, name="dec_dropout")(y)
    y = layers.Conv2D(config.num_classes, 1, name="classifier")(y)
    scores = _resize(layers, y, tuple(config.input_size), name="logits")
    return keras.Model(inputs, scores, name="segformer")


def _patch_embedding(layers, x, i, hidden, kernel, stride):
    # PyTorch's Conv2d(padding=kernel // 2) pads both sides; TF's "same" would pad the bottom/right.
    x = layers.ZeroPadding2D(kernel // 2, name=f"s{i}_patch_pad")(x)
    x = layers.Conv2D(hidden, kernel, strides=stride, name=f"s{i}_patch_conv")(x)
    return layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=f"s{i}_patch_ln")(x)


def _block(layers, x, p, hidden, heads, sr, mlp_ratio):
    from architectures.layers import ExactGelu

    y = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=p + "ln1")(x)
    y = _attention(layers, y, p, hidden, heads, sr)
    x = layers.Add(name=p + "add1")([x, y])
    y = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=p + "ln2")(x)
    y = layers.Dense(hidden * mlp_ratio, name=p + "fc1")(y)
    y = layers.DepthwiseConv2D(3, padding="same", name=p + "dwconv")(y)
    y = ExactGelu(name=p + "gelu")(y)
    y = layers.Dense(hidden, name=p + "fc2")(y)
    return layers.Add(name=p + "add2")([x, y])


def _attention(layers, x, p, hidden, heads, sr):
    from architectures.layers import MatMul

    h, w = x.shape[1], x.shape[2]
    head_dim = hidden // heads
    q = layers.Dense(hidden, name=p + "q")(x)
    kv = x
    if sr > 1:
        kv = layers.Conv2D(hidden, sr, strides=sr, name=p + "sr")(kv)
        kv = layers.LayerNormalization(epsilon=LAYER_NORM_EPS, name=p + "sr_ln")(kv)
    kv_tokens = kv.shape[1] * kv.shape[2]
    k = layers.Dense(hidden, name=p + "k")(kv)
    v = layers.Dense(hidden, name=p + "v")(kv)

    def split(t, tokens, name):
        if heads == 1:  # [B, N, C]: no transposes for single-head stages
            return layers.Reshape((tokens, hidden), name=name + "_tokens")(t)
        t = layers.Reshape((tokens, heads, head_dim), name=name + "_split")(t)
        return layers.Permute((2, 1, 3), name=name + "_heads")(t)  # [B, heads, N, d]

    q = split(q, h * w, p + "q")
    k = split(k, kv_tokens, p + "k")
    v = split(v, kv_tokens, p + "v")
    scores = MatMul(transpose_b=True, scale=head_dim**-0.5, name=p + "scores")([q, k])
    probs = layers.Softmax(axis=-1, name=p + "softmax")(scores)
    context = MatMul(name=p + "context")([probs, v])
    if heads > 1:
        context = layers.Permute((2, 1, 3), name=p + "merge")(context)  # [B, N, heads, d]
    context = layers.Reshape((h, w, hidden), name=p + "grid")(context)
    return layers.Dense(hidden, name=p + "o")(context)


def _resize(layers, x, size, name):
    """Bilinear resize with half-pixel centres: UpSampling2D for integral factors, else Resizing."""
    h, w = x.shape[1], x.shape[2]
    if size[0] % h == 0 and size[1] % w == 0:
        return layers.UpSampling2D((size[0] // h, size[1] // w), interpolation="bilinear", name=name)(x)
    return layers.Resizing(size[0], size[1], interpolation="bilinear", name=name)(x)


DECODERS = ("reference", "folded")


def _decoder_kind(options: dict) -> str:
    kind = options.get("decoder") or "reference"
    if kind not in DECODERS:
        raise ValueError(f"segformer has no decoder {kind!r}; choose one of {', '.join(DECODERS)}")
    return kind


def fold_decoder_weights(model, folded) -> None:
    """Copy `model`'s weights (reference decoder) into `folded` (same sizes, folded decoder).

    Each stage's Dense (kernel M_i [C_i, W], bias b_i) absorbs its slice F_i [W, W] of the fuse
    conv's kernel: kernel M_i F_i, bias b_i F_i, computed in float64. The concat puts the deepest
    stage first, so stage i of n owns input channels (n-1-i)*W .. (n-i)*W of the fuse conv.
    """
    import numpy as np

    source = {layer.name: layer for layer in model.layers}
    fuse = source["dec_fuse"].get_weights()[0][0, 0].astype(np.float64)  # [n*W, W]
    stages = [layer for layer in folded.layers if layer.name.startswith("dec_fold")]
    width = fuse.shape[1]
    for layer in folded.layers:
        if layer.name.startswith("dec_fold"):
            i = int(layer.name[len("dec_fold"):])
            kernel, bias = (w.astype(np.float64) for w in source[f"dec_proj{i}"].get_weights())
            part = fuse[(len(stages) - 1 - i) * width:(len(stages) - i) * width]
            layer.set_weights([(kernel @ part).astype(np.float32), (bias @ part).astype(np.float32)])
        elif layer.weights:
            layer.set_weights(source[layer.name].get_weights())


def _config_from_weights(path):
    # Hugging Face PyTorch/safetensors folders and our own Keras weights (segformer_hf); its TF
    # checkpoints go through architectures/importers/segformer_tf first.
    from architectures.segformer_hf import config_from_weights

    return config_from_weights(path)


def _load_weights(model, path, config):
    from architectures.segformer_hf import load_weights

    return load_weights(model, path, config)


register(
    ArchSpec(
        name="segformer",
        description="SegFormer: MiT encoder (b0 default, b1..b5 via variant) + all-MLP decoder",
        builder=build_segformer,
        labels=("outer", "hair", "face", "skin", "clothes", "accessories"),
        input_size=(256, 256),
        input_norm="imagenet",  # as SegformerImageProcessor
        output="logits",
        min_input=32,
        input_multiple=32,
        options={"variant": "b0", "decoder": "reference", "layer_norm": "keras",
                 **{field: None for field in SIZE_FIELDS}},
        export_options={"decoder": "folded"},
        # int16x8: every LayerNorm without SQUARED_DIFFERENCE (no int16 kernel in LiteRT). Trained bench
        # model, 500 held-out samples: the full-int16 file meets the gate (docs/arm.md).
        precision_export_options={"int16x8": {"layer_norm": "centered"}},
        export_weights=fold_decoder_weights,
        config_from_weights=_config_from_weights,
        load_weights=_load_weights,
        learning_rate=3e-4,
    )
)
