"""TF1 `research/deeplab` checkpoints (`model.ckpt-N`) of the seed's DeepLab into `architectures.deeplab`.

The seed trains with `--model_variant=mobilenet_v3_small_seg --output_stride=32
--add_image_level_feature=1 --aspp_with_squeeze_and_excitation=1 --image_se_uses_qsigmoid=1
--aspp_convs_filters=128 --aspp_with_concat_projection=0 --decoder_output_stride=8
--decoder_use_sum_merge=1 --decoder_filters=N --decoder_output_is_logits=1`. The variables that
graph creates (names from tensorflow/models: research/deeplab/model.py and core/feature_extractor.py,
research/slim/nets/mobilenet/{mobilenet,mobilenet_v3,conv_blocks}.py), one row per our layer:

    MobilenetV3/Conv                          layer1 stem 3x3 conv + BatchNorm
    MobilenetV3/expanded_conv[_k]             layer(k+2): expand/, depthwise/ (depthwise_weights),
                                              squeeze_excite/Conv and Conv_1 (with biases), project/
    MobilenetV3/Conv_1                        layer13 1x1 conv (288) + BatchNorm
    aspp0                                     LR-ASPP 1x1 conv + BatchNorm (epsilon 1e-5)
    image_pooling                             image-level gate 1x1 conv with biases (no BatchNorm)
    decoder/decoder_conv0                     1x1 conv to the classes on the upsampled head
    decoder/feature_projection0               1x1 conv to the classes on layer_4/depthwise_output

Where the two graphs differ in parameters, the import makes ours compute TF1's function:
- aspp0's BatchNorm has epsilon 1e-5 in TF1 (model.py's batch_norm_params), 1e-3 in our graph
  (slim's default, right for the backbone): gamma is rescaled by sqrt(var + 1e-3)/sqrt(var + 1e-5),
  the same normalisation in exact arithmetic.
- Geometry: TF1 resizes with align_corners=True, so the import sets `align_corners` (exact at
  32k+1 inputs, e.g. `--input-size 257`, the seed's crop).
- The SE and image-level gates multiply by 0.16667 in TF1 (utils.q_sigmoid, mobilenet_v3's
  squeeze_excite), by 1/6 in our graph: the import sets `hard_sigmoid="tf1"`.
What stays different is in docs/import-deeplab.md (the image pooling window at inputs other
than the training crop).

The class count is `--decoder_filters` (the logits are the decoder's output): read from
decoder/feature_projection0's shape. Optimizer slots (Adam, Momentum), global_step and EMA
shadows are ignored; any other variable that maps nowhere is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from architectures.importers import Imported, refuse
from architectures.importers import tf_checkpoint as ckpt

SCOPE = "MobilenetV3"
_BN = ("gamma", "beta", "moving_mean", "moving_variance")
_IGNORED = re.compile(
    r"(^global_step$|^beta[12]_power(_\d+)?$|/(Adam|Adam_1|Momentum|RMSProp|RMSProp_1)$|/ExponentialMovingAverage$)"
)
ASPP_BN_EPSILON = 1e-5  # research/deeplab/model.py: batch_norm_params for the ASPP and decoder


def _block_scope(layer: int) -> str:
    index = layer - 2  # slim's expanded_conv, expanded_conv_1, ... are layer_2, layer_3, ...
    return f"{SCOPE}/expanded_conv" + (f"_{index}" if index else "")


def weight_table(model) -> list[tuple[str, str, tuple[str, ...]]]:
    """(our layer, TF1 variable scope, TF1 leaves in our get_weights() order) for `model`."""
    names = {layer.name for layer in model.layers}
    rows = [("layer1_conv", f"{SCOPE}/Conv", ("weights",)),
            ("layer1_bn", f"{SCOPE}/Conv/BatchNorm", _BN)]
    layer = 2
    while f"layer{layer}_depthwise" in names:
        scope = _block_scope(layer)
        if f"layer{layer}_expand" in names:
            rows += [(f"layer{layer}_expand", f"{scope}/expand", ("weights",)),
                     (f"layer{layer}_expand_bn", f"{scope}/expand/BatchNorm", _BN)]
        rows += [(f"layer{layer}_depthwise", f"{scope}/depthwise", ("depthwise_weights",)),
                 (f"layer{layer}_depthwise_bn", f"{scope}/depthwise/BatchNorm", _BN)]
        if f"layer{layer}_se_reduce" in names:
            rows += [(f"layer{layer}_se_reduce", f"{scope}/squeeze_excite/Conv", ("weights", "biases")),
                     (f"layer{layer}_se_expand", f"{scope}/squeeze_excite/Conv_1", ("weights", "biases"))]
        rows += [(f"layer{layer}_project", f"{scope}/project", ("weights",)),
                 (f"layer{layer}_project_bn", f"{scope}/project/BatchNorm", _BN)]
        layer += 1
    rows += [
        (f"layer{layer}_conv", f"{SCOPE}/Conv_1", ("weights",)),
        (f"layer{layer}_bn", f"{SCOPE}/Conv_1/BatchNorm", _BN),
        ("aspp0_conv", "aspp0", ("weights",)),
        ("aspp0_bn", "aspp0/BatchNorm", _BN),
        ("image_pooling_conv", "image_pooling", ("weights", "biases")),
        ("decoder_aspp_logits", "decoder/decoder_conv0", ("weights", "biases")),
        ("decoder_feature_logits", "decoder/feature_projection0", ("weights", "biases")),
    ]
    return rows


# ----------------------------------------------------------------------------- the interface


def claims(path: Path) -> bool:
    """A name-based (TF1 Saver) checkpoint holding research/deeplab's MobilenetV3 variables."""
    prefix = ckpt.prefix_of(path)
    if prefix is None:
        return False
    return f"{SCOPE}/Conv/weights" in ckpt.shapes(prefix)


def config_overrides(path: Path) -> dict:
    shapes = _model_shapes(Path(path))
    projection = shapes.get("decoder/feature_projection0/weights")
    if projection is None:
        raise refuse(path, "holds no decoder/feature_projection0: not a DeepLab trained with "
                           "--decoder_output_stride=8 --decoder_output_is_logits=1 (the seed's flags)")
    # TF1 DeepLab resizes with corners aligned; our graph does so with this option.
    return {"num_classes": int(projection[-1]), "align_corners": True, "hard_sigmoid": "tf1"}


def load(model, path: Path, config) -> Imported:
    import numpy as np

    path = Path(path)
    prefix = ckpt.prefix_of(path)
    shapes = _model_shapes(path)
    reader = ckpt.reader(prefix)
    layers = {layer.name: layer for layer in model.layers}
    missing, mismatched_model, mismatched_file, assignments, used = {}, {}, {}, [], set()
    for layer_name, scope, leaves in weight_table(model):
        current = layers[layer_name].get_weights()
        values = []
        for leaf, target in zip(leaves, current):
            name = f"{scope}/{leaf}"
            if name not in shapes:
                missing[name] = target.shape
                continue
            used.add(name)
            if tuple(shapes[name]) != target.shape:
                mismatched_model[f"{layer_name}.{leaf}"] = target.shape
                mismatched_file[name] = shapes[name]
                continue
            values.append(reader.get_tensor(name).astype(target.dtype))
        if len(values) == len(current):
            assignments.append((layers[layer_name], values))
    leftover = {n: s for n, s in shapes.items() if n not in used}
    if mismatched_model:
        what = "tensor shapes do not fit the model"
        if any(k.startswith("decoder_") for k in mismatched_model):
            classes = shapes.get("decoder/feature_projection0/weights", (0,))[-1]
            what = f"the checkpoint has {classes} classes (--decoder_filters), the model {config.num_classes}; {what}"
        raise refuse(path, what, missing=mismatched_model, leftover=mismatched_file)
    if missing or leftover:
        raise refuse(path, "does not fit deeplab (mobilenet_v3_small_seg, LR-ASPP, decoder stride 8, "
                           "sum merge): variables missing or left over", missing=missing, leftover=leftover)
    notes = []
    for layer, values in assignments:
        if layer.name == "aspp0_bn":
            values = _refit_epsilon(values, ASPP_BN_EPSILON, layer.epsilon, np)
            notes.append(f"aspp0 BatchNorm epsilon {ASPP_BN_EPSILON:g} refitted to the graph's {layer.epsilon:g}")
        layer.set_weights(values)
    if not config.options.get("align_corners"):
        notes.append("align_corners off: TF1 DeepLab's function needs align_corners at a 32k+1 input")
    else:
        notes.append("exactly TF1's geometry at 32k+1 inputs (the seed's 257: --input-size 257)")
    source = f"TF1 research/deeplab checkpoint {ckpt.describe_prefix(path, prefix)} (mobilenet_v3_small_seg)"
    return Imported(source=source, mapped=sum(len(v) for _, v in assignments), notes=tuple(notes))


# ----------------------------------------------------------------------------- helpers


def _model_shapes(path: Path) -> dict[str, tuple]:
    """The checkpoint's model variables (optimizer state and counters left out) -> shapes."""
    prefix = ckpt.prefix_of(path)
    if prefix is None:
        raise refuse(path, "not a TF checkpoint: no .index file (give the model.ckpt-N prefix, its "
                           ".index, or the train_logdir holding `checkpoint`)")
    shapes = ckpt.shapes(prefix)
    if ckpt.OBJECT_GRAPH_KEY in shapes:
        raise refuse(path, "an object-based (TF2/Keras) checkpoint, not a TF1 research/deeplab one")
    return {n: s for n, s in shapes.items() if not _IGNORED.search(n)}


def _refit_epsilon(values, eps_from: float, eps_to: float, np):
    """BatchNorm weights giving, with epsilon `eps_to`, what they gave with `eps_from`:
    gamma / sqrt(var + eps_from) == gamma' / sqrt(var + eps_to)."""
    gamma, beta, mean, var = (v.astype(np.float64) for v in values)
    gamma = gamma * np.sqrt(var + eps_to) / np.sqrt(var + eps_from)
    return [gamma.astype(np.float32), *(v.astype(np.float32) for v in (beta, mean, var))]
