"""Hugging Face's TensorFlow SegFormer (`TFSegformerForSemanticSegmentation`, transformers 4.x)
as the seed's code saves it, into `architectures.segformer`.

Forms read (what `model.save_weights(...)` / `save_pretrained` write):
- a TF checkpoint (`Lips.ckpt`; also its `.index`, or the folder whose `checkpoint` names it).
  It is object-based: keys are attribute paths, and the object graph stored with it gives each
  variable's own Keras name, which is what we map;
- a Keras HDF5 weights file (`tf_model.h5`, `save_weights("x.h5")`): groups per top-level layer,
  datasets named by the same Keras weight names;
- a `save_pretrained` folder (config.json + tf_model.h5), whose config.json also gives the
  class names (id2label) and the attention heads.

Those names are `<model>/segformer/encoder/block.0.1/attention/self/query/kernel` and the like:
the module path equals the PyTorch model's (`segformer.encoder.block.0.1.attention.self.query`),
so `segformer_hf.weight_table` and `canonical_name` say which of our layers each one fills. Keras
layouts are ours already (conv HWIO, Dense [in, out]); only the depthwise conv differs: HF's is a
grouped Conv2D, kernel [3, 3, 1, C], ours a DepthwiseConv2D, [3, 3, C, 1].

What the weights do not store, and where it comes from: attention heads and patch strides (no
tensor's shape depends on them). A `config.json` beside the checkpoint (save_pretrained writes
one) gives them; without it they are MiT's, the same for b0..b5 (heads 1,2,5,8; strides
4,2,2,2), and the import says so. Sizes, depths, sr ratios, MLP ratios, decoder width and the
class count are read from the tensor shapes.

The model behind it takes NCHW `pixel_values` ((x/255 - ImageNet mean)/std) and returns NCHW
logits at 1/4 resolution; our graph takes 0..255 NHWC pixels, normalises inside, and upsamples
to the input (bilinear, half-pixel, as HF's own post-processing): tests/test_import_segformer_tf.py
compares the two that way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from architectures.importers import Imported, refuse
from architectures.importers import tf_checkpoint as ckpt

_H5_SUFFIXES = (".h5", ".hdf5")
TF_MODEL_H5 = "tf_model.h5"  # what save_pretrained writes beside config.json
_MARK = "segformer/encoder/"  # in every HF TF SegFormer weight name, in none of our graph's
_ROOTS = ("segformer", "decode_head")
_MIT_HEADS = (1, 2, 5, 8)
_MIT_STRIDES = (4, 2, 2, 2)

# kind (segformer_hf.weight_table's) -> Keras weight names in the layer's get_weights() order
_LEAVES = {
    "conv": ("kernel", "bias"),
    "conv_nobias": ("kernel",),
    "depthwise": ("kernel", "bias"),
    "linear": ("kernel", "bias"),
    "layernorm": ("gamma", "beta"),
    "batchnorm": ("gamma", "beta", "moving_mean", "moving_variance"),
}


# ----------------------------------------------------------------------------- the interface


def claims(path: Path) -> bool:
    """An HDF5 file or TF checkpoint whose weight names are HF's TF SegFormer's."""
    p = _h5_in_folder(Path(path).expanduser())
    if p.is_file() and p.suffix in _H5_SUFFIXES:
        return any(_MARK in name for name in _h5_names(p))
    prefix = ckpt.prefix_of(p)
    if prefix is None:
        return False
    reader = ckpt.reader(prefix)
    return any(_MARK in name for name in ckpt.full_names(reader).values())


def config_overrides(path: Path) -> dict:
    from architectures.segformer import VARIANTS

    tensors, _, _ = _read(Path(path))
    shapes = {name: array.shape for name, array in tensors.items()}
    sizes, classes, _ = _sizes(Path(path), shapes)
    labels = _labels(Path(path), classes)
    classes_or_labels = {"labels": labels} if labels else {"num_classes": classes}
    variant = next((name for name, v in VARIANTS.items() if v == sizes), None)
    if variant:
        return {"variant": variant, **classes_or_labels}
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}
    return {"variant": "b0", **fields, **classes_or_labels}


def _labels(path: Path, classes: int) -> tuple[str, ...] | None:
    """The class names of a config.json beside the weights (save_pretrained writes the id2label the
    seed passes to from_pretrained), unless they are transformers' placeholders LABEL_0.."""
    id2label = (_config_json(path) or {}).get("id2label") or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else []
    if len(names) != classes or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return tuple(names)


def load(model, path: Path, config) -> Imported:
    from architectures.segformer import resolve_sizes
    from architectures.segformer_hf import weight_table

    path = Path(path)
    tensors, source, origin = _read(path)
    shapes = {name: array.shape for name, array in tensors.items()}
    sizes, classes, notes = _sizes(path, shapes)
    wanted = resolve_sizes(config.options)
    if sizes != wanted:
        differing = [k for k in wanted if wanted[k] != sizes[k]]
        raise refuse(path, "a SegFormer of other sizes than the model: " + "; ".join(
            f"{k} {list(sizes[k]) if isinstance(sizes[k], tuple) else sizes[k]} in the checkpoint, "
            f"{list(wanted[k]) if isinstance(wanted[k], tuple) else wanted[k]} in the model" for k in differing))

    encoder, decoder = weight_table(sizes)
    layers = {layer.name: layer for layer in model.layers}
    missing, mismatched_model, mismatched_file, assignments = {}, {}, {}, []
    used = set()
    for layer_name, module, kind in encoder + decoder:
        layer = layers.get(layer_name)
        if layer is None:
            raise refuse(path, f"the model has no layer {layer_name!r}: not our segformer graph")
        current = layer.get_weights()
        values = []
        for leaf, target in zip(_LEAVES[kind], current):
            key = f"{module}.{leaf}"
            if key not in tensors:
                missing[key] = target.shape
                continue
            used.add(key)
            value = tensors[key]
            if kind == "depthwise" and leaf == "kernel" and value.ndim == 4 and value.shape[2] == 1:
                value = value.transpose(0, 1, 3, 2)  # grouped Conv2D [kh, kw, 1, C] -> [kh, kw, C, 1]
            if value.shape != target.shape:
                mismatched_model[f"{layer_name}.{leaf}"] = target.shape
                mismatched_file[origin[key]] = tensors[key].shape
                continue
            values.append(value.astype(target.dtype))
        if len(values) == len(current):
            assignments.append((layer, values))
    leftover = {origin[k]: shapes[k] for k in tensors if k not in used}
    if mismatched_model:
        what = "tensor shapes do not fit the model"
        if "classifier.kernel" in mismatched_model:
            what = (f"the checkpoint classifies {classes} classes, the model "
                    f"{config.num_classes}; {what}")
        raise refuse(path, what, missing=mismatched_model, leftover=mismatched_file)
    if missing or leftover:
        raise refuse(path, "does not fit segformer: tensors missing from the checkpoint or left over",
                     missing=missing, leftover=leftover)
    for layer, values in assignments:
        layer.set_weights(values)
    return Imported(source=source, mapped=sum(len(v) for _, v in assignments), notes=tuple(notes))


# ----------------------------------------------------------------------------- reading


def _read(path: Path) -> tuple[dict, str, dict]:
    """(canonical module.leaf name -> array, what the file was, canonical -> the file's own name,
    for messages). Refuses files that are not a TF SegFormer's."""
    import numpy as np

    from architectures.segformer_hf import canonical_name

    p = _h5_in_folder(path.expanduser())
    raw: dict[str, np.ndarray] = {}
    if p.is_file() and p.suffix in _H5_SUFFIXES:
        import h5py

        source = "Hugging Face TFSegformerForSemanticSegmentation, Keras HDF5 weights (save_weights)"
        with h5py.File(p, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer_name in _attr_list(group, "layer_names"):
                layer = group[layer_name]
                for name in _attr_list(layer, "weight_names"):
                    raw[name] = np.asarray(layer[name])
    else:
        prefix = ckpt.prefix_of(p)
        if prefix is None:
            raise refuse(path, "not a TF checkpoint (no .index file) nor an .h5 file")
        source = ("Hugging Face TFSegformerForSemanticSegmentation, TF checkpoint (save_weights) "
                  f"{ckpt.describe_prefix(path, prefix)}")
        reader = ckpt.reader(prefix)
        for key, name in ckpt.full_names(reader).items():
            if _is_model_variable(key):
                raw[name] = reader.get_tensor(key)
    tensors, other, origin = {}, {}, {}
    for name, array in raw.items():
        parts = re.sub(r":\d+$", "", name).split("/")
        root = next((i for i, part in enumerate(parts) if part in _ROOTS), None)
        if root is None:
            other[name] = array.shape
            continue
        # canonical_name takes a parameter name (module.leaf): give it a stand-in leaf.
        module = canonical_name(".".join(parts[root:-1]) + ".x")[:-2]
        tensors[f"{module}.{parts[-1]}"] = array
        origin[f"{module}.{parts[-1]}"] = "/".join(parts[root:])
    if not any(k.startswith("stages.") for k in tensors):
        raise refuse(path, "not a Hugging Face TF SegFormer checkpoint: no segformer/encoder weights",
                     leftover=other)
    if other:
        raise refuse(path, "holds weights outside the SegFormer model", leftover=other)
    return tensors, source, origin


def _is_model_variable(key: str) -> bool:
    # Optimizer state (Adam's m and v, iterations) and the save counter are not the model.
    return (key.endswith(ckpt.VALUE_SUFFIX) and ".OPTIMIZER_SLOT" not in key
            and not key.startswith(("optimizer/", "save_counter/")))


def _h5_in_folder(p: Path) -> Path:
    """A save_pretrained folder (config.json + tf_model.h5) stands for its tf_model.h5; a folder
    that also has PyTorch weights (a Hub download has both) stays segformer_hf's, as before."""
    if not p.is_dir() or not (p / TF_MODEL_H5).is_file():
        return p
    if any(p.glob("*.safetensors")) or any(p.glob("pytorch_model*.bin")):
        return p
    return p / TF_MODEL_H5


def _attr_list(group, attr: str) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in group.attrs.get(attr, [])]


def _h5_names(path: Path) -> list[str]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            return [w for layer in _attr_list(group, "layer_names") if layer in group
                    for w in _attr_list(group[layer], "weight_names")]
    except OSError:
        return []


def _sizes(path: Path, shapes: dict) -> tuple[dict, int, list[str]]:
    """(SegFormer sizes, class count, notes) from tensor shapes and an optional config.json."""
    stages = 0
    while f"stages.{stages}.patch_embeddings.proj.kernel" in shapes:
        stages += 1
    if "decode_head.classifier.kernel" not in shapes:
        raise refuse(path, "holds no decode_head: an encoder (TFSegformerModel), not "
                           "TFSegformerForSemanticSegmentation")
    hidden, patch, depths, sr, mlp = [], [], [], [], []
    for i in range(stages):
        kernel = shapes[f"stages.{i}.patch_embeddings.proj.kernel"]
        hidden.append(int(kernel[3]))
        patch.append(int(kernel[0]))
        depth = 0
        while f"stages.{i}.blocks.{depth}.layernorm_before.gamma" in shapes:
            depth += 1
        depths.append(depth)
        reduction = shapes.get(f"stages.{i}.blocks.0.attention.sequence_reduction.sequence_reduction.kernel")
        sr.append(int(reduction[0]) if reduction else 1)
        fc1 = shapes.get(f"stages.{i}.blocks.0.mlp.fc1.kernel")
        mlp.append(int(fc1[1]) // hidden[-1] if fc1 else 4)
    notes = []
    heads, strides = _MIT_HEADS, _MIT_STRIDES
    hf = _config_json(path)
    if hf:
        heads = tuple(int(h) for h in hf.get("num_attention_heads", heads))
        strides = tuple(int(s) for s in hf.get("strides", strides))
        notes.append("attention heads and strides from config.json")
    else:
        notes.append(f"attention heads {list(heads)} and strides {list(strides)}: MiT's (not stored "
                     "in the weights; a config.json beside the checkpoint would override)")
    if len(heads) != stages or any(h % n for h, n in zip(hidden, heads)):
        raise refuse(path, f"hidden sizes {hidden} do not split into attention heads {list(heads)}; "
                           "put the model's config.json beside the checkpoint")
    sizes = {
        "hidden_sizes": tuple(hidden), "depths": tuple(depths), "num_attention_heads": tuple(heads),
        "sr_ratios": tuple(sr), "patch_sizes": tuple(patch), "strides": tuple(strides),
        "mlp_ratios": tuple(mlp),
        "decoder_hidden_size": int(shapes["decode_head.linear_projections.0.proj.kernel"][1]),
    }
    return sizes, int(shapes["decode_head.classifier.kernel"][3]), notes


def _config_json(path: Path) -> dict | None:
    p = Path(path).expanduser()
    folder = p if p.is_dir() else p.parent
    candidate = folder / "config.json"
    if not candidate.is_file():
        return None
    try:
        hf = json.loads(candidate.read_text())
    except ValueError:
        return None
    return hf if hf.get("model_type") == "segformer" else None
