"""Import Hugging Face SegFormer checkpoints (a local folder) into `architectures.segformer`.

A checkpoint folder holds `config.json` and `model.safetensors` (or `pytorch_model.bin`, or a
sharded `*.index.json` of either). Accepted models: `SegformerForSemanticSegmentation` (loads
whole), `SegformerModel` and `SegformerForImageClassification` (e.g. `nvidia/mit-b0`: the encoder
loads, the decoder stays freshly initialised for the requested labels and an ImageNet head is
skipped). Both key layouts are read: the one on the Hub and written by `save_pretrained`
(`segformer.encoder.block.0.0.attention.self.query...`) and transformers 5's module names
(`stages.0.blocks.0.attention.q_proj...`), with or without the `segformer.` prefix.

A Keras weights file (`.h5`, `.keras`, a TF checkpoint prefix) of this same Keras model, e.g. one
trained by the pipeline, loads with Keras' own `load_weights`.

Safetensors files are read with the `safetensors` package's numpy API (no PyTorch); `.bin` files
need PyTorch. Nothing is downloaded: a Hub name instead of a folder is an error that says how to
get the folder.

This module is imported by the registry's discovery; it registers nothing and imports nothing
heavy at module level.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from exporter.errors import WeightsError

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"

# Hub layout (transformers 4, the files on the Hub, and what save_pretrained writes) ->
# transformers 5 module names, which this module uses as the canonical names.
_RENAMES = (
    (r"^encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"^encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"^encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.sr\.", ".attention.sequence_reduction.sequence_reduction."),
    (r"\.attention\.self\.layer_norm\.", ".attention.sequence_reduction.layer_norm."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
    (r"^decode_head\.linear_c\.", "decode_head.linear_projections."),
)
# Tensors that are in real checkpoints but have no place in a segmentation model.
_IGNORED = (
    re.compile(r"\.num_batches_tracked$"),  # BatchNorm's step counter
    re.compile(r"^classifier\.(weight|bias)$"),  # SegformerForImageClassification's ImageNet head
)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ----------------------------------------------------------------------------- locating files


def _locate(path) -> tuple[Path, list[Path]]:
    """(checkpoint folder, weight files) for a folder or one weights file inside it."""
    p = Path(path).expanduser()
    if not p.exists():
        text = str(path)
        if _HUB_NAME.match(text) and not text.startswith((".", "~")):
            raise WeightsError(
                f"{text!r} is not a local folder; it looks like a Hugging Face Hub name. Nothing "
                "is downloaded at run time: on a machine with network, fetch the checkpoint with "
                f"`huggingface-cli download {text} --local-dir DIR` (or `hf download {text} "
                f"--local-dir DIR`, or `from_pretrained('{text}').save_pretrained('DIR')` in "
                "Python), copy DIR here and pass it as the weights"
            )
        raise WeightsError(f"weights folder {text!r} does not exist")
    if p.is_file():
        if p.suffix not in (".safetensors", ".bin", ".json"):
            raise WeightsError(
                f"{p} is not a Hugging Face checkpoint; pass the folder holding config.json "
                f"and {SAFETENSORS} or {PYTORCH_BIN}"
            )
        folder = p.parent
        files = _from_index(p) if p.name.endswith(".index.json") else [p]
        return folder, files
    folder = p
    for name in (SAFETENSORS, PYTORCH_BIN):
        if (folder / name).is_file():
            return folder, [folder / name]
    for name in (SAFETENSORS + ".index.json", PYTORCH_BIN + ".index.json"):
        if (folder / name).is_file():
            return folder, _from_index(folder / name)
    raise WeightsError(
        f"{folder} holds no {SAFETENSORS} or {PYTORCH_BIN} (found: "
        f"{', '.join(sorted(f.name for f in folder.iterdir())) or 'nothing'})"
    )


def _from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"cannot read the shard index {index}: {e}") from None
    files = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise WeightsError(f"shard(s) listed in {index.name} are missing: {', '.join(missing)}")
    return files


def read_hf_config(folder: Path) -> dict:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise WeightsError(f"{folder} has no config.json; a Hugging Face checkpoint folder needs one")
    try:
        hf = json.loads(config_path.read_text())
    except ValueError as e:
        raise WeightsError(f"{config_path} is not valid JSON: {e}") from None
    if hf.get("model_type") != "segformer":
        raise WeightsError(
            f"{config_path} describes a {hf.get('model_type')!r} model, not a SegFormer"
        )
    if hf.get("num_channels", 3) != 3:
        raise WeightsError(f"{config_path}: num_channels {hf['num_channels']}; only RGB (3) is supported")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise WeightsError(
            f"{config_path}: hidden_act {hf['hidden_act']!r}; only 'gelu' (exact, erf) is supported"
        )
    return hf


def _sizes_from_hf(hf: dict) -> dict:
    from architectures.segformer import VARIANTS

    defaults = VARIANTS["b0"]
    sizes = {}
    for field, default in defaults.items():
        value = hf.get(field, default)
        sizes[field] = int(value) if field == "decoder_hidden_size" else tuple(int(v) for v in value)
    blocks = hf.get("num_encoder_blocks", len(sizes["hidden_sizes"]))
    if blocks != len(sizes["hidden_sizes"]):
        raise WeightsError(
            f"config.json: num_encoder_blocks {blocks} but {len(sizes['hidden_sizes'])} hidden sizes"
        )
    return sizes


# ----------------------------------------------------------------------------- reading tensors


def _keys(files: list[Path]) -> list[str]:
    if all(f.suffix == ".safetensors" for f in files):
        from safetensors import safe_open

        keys = []
        for f in files:
            with safe_open(str(f), framework="numpy") as fh:
                keys.extend(fh.keys())
        return keys
    return list(_read_tensors(files))


def _read_tensors(files: list[Path]) -> dict:
    import numpy as np

    tensors = {}
    for f in files:
        if f.suffix == ".safetensors":
            try:
                from safetensors.numpy import load_file
            except ImportError:
                raise WeightsError(
                    "reading .safetensors needs the `safetensors` package: pip install safetensors"
                ) from None
            try:
                tensors.update(load_file(str(f)))
            except Exception as e:  # noqa: BLE001 - e.g. bfloat16 (numpy has none), a corrupt file
                raise WeightsError(f"cannot read {f}: {e}") from None
        else:
            try:
                import torch
            except ImportError:
                raise WeightsError(
                    f"{f.name} is a PyTorch pickle and reading it needs PyTorch (pip install "
                    "torch); or convert the checkpoint to safetensors where PyTorch is installed "
                    "(`from_pretrained(DIR).save_pretrained(DIR)` writes model.safetensors)"
                ) from None
            try:
                state = torch.load(str(f), map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - unpickling raises many types
                raise WeightsError(f"cannot read {f}: {e}") from None
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            for k, v in state.items():
                tensors[k] = v.detach().to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
    return {k: np.asarray(v) for k, v in tensors.items()}


def canonical_name(key: str) -> str:
    """A checkpoint key in transformers 5's names, without the `segformer.` prefix."""
    key = key.removeprefix("segformer.")
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def _canonical(keys) -> dict[str, str]:
    """canonical name -> original key; two keys naming one tensor is an error."""
    names: dict[str, str] = {}
    for key in keys:
        name = canonical_name(key)
        if name in names:
            raise WeightsError(f"checkpoint holds both {names[name]!r} and {key!r} for one tensor")
        names[name] = key
    return names


# ----------------------------------------------------------------------------- the mapping

# kind -> (Hugging Face parameter suffixes in Keras weight order, per-tensor transform)
_KINDS = {
    "conv": (("weight", "bias"), ("oihw_hwio", None)),
    "conv_nobias": (("weight",), ("oihw_hwio",)),
    "depthwise": (("weight", "bias"), ("dw_hwc1", None)),
    "linear": (("weight", "bias"), ("transpose", None)),
    "layernorm": (("weight", "bias"), (None, None)),
    "batchnorm": (("weight", "bias", "running_mean", "running_var"), (None, None, None, None)),
}


def _transform(array, how):
    if how == "oihw_hwio":
        return array.transpose(2, 3, 1, 0)
    if how == "dw_hwc1":  # [C, 1, kh, kw] -> [kh, kw, C, 1]
        return array.transpose(2, 3, 0, 1)
    if how == "transpose":
        return array.T
    return array


def weight_table(sizes: dict) -> tuple[list, list]:
    """(encoder, decoder) rows of (Keras layer name, Hugging Face module name, kind)."""
    encoder, decoder = [], []
    for i, _ in enumerate(sizes["hidden_sizes"]):
        s = f"stages.{i}."
        encoder += [
            (f"s{i}_patch_conv", s + "patch_embeddings.proj", "conv"),
            (f"s{i}_patch_ln", s + "patch_embeddings.layer_norm", "layernorm"),
        ]
        for j in range(sizes["depths"][i]):
            b, p = f"{s}blocks.{j}.", f"s{i}_b{j}_"
            encoder += [
                (p + "ln1", b + "layernorm_before", "layernorm"),
                (p + "q", b + "attention.q_proj", "linear"),
                (p + "k", b + "attention.k_proj", "linear"),
                (p + "v", b + "attention.v_proj", "linear"),
                (p + "o", b + "attention.o_proj", "linear"),
                (p + "ln2", b + "layernorm_after", "layernorm"),
                (p + "fc1", b + "mlp.fc1", "linear"),
                (p + "dwconv", b + "mlp.dwconv.dwconv", "depthwise"),
                (p + "fc2", b + "mlp.fc2", "linear"),
            ]
            if sizes["sr_ratios"][i] > 1:
                encoder += [
                    (p + "sr", b + "attention.sequence_reduction.sequence_reduction", "conv"),
                    (p + "sr_ln", b + "attention.sequence_reduction.layer_norm", "layernorm"),
                ]
        encoder.append((f"s{i}_ln", s + "layer_norm", "layernorm"))
        decoder.append((f"dec_proj{i}", f"decode_head.linear_projections.{i}.proj", "linear"))
    decoder += [
        ("dec_fuse", "decode_head.linear_fuse", "conv_nobias"),
        ("dec_bn", "decode_head.batch_norm", "batchnorm"),
        ("classifier", "decode_head.classifier", "conv"),
    ]
    return encoder, decoder


# ----------------------------------------------------------------------------- the hooks

_KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def _keras_weights(path) -> bool:
    """A Keras weights file or TF checkpoint of our own segformer (e.g. one trained here)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix in _KERAS_SUFFIXES
    return Path(str(p) + ".index").is_file()


def config_from_weights(path) -> dict:
    """Overrides for resolve_config from a checkpoint: sizes always, labels if it has a decoder.

    A Keras weights file of this architecture carries no config: no overrides.
    """
    from architectures.segformer import VARIANTS

    if _keras_weights(path):
        return {}
    folder, files = _locate(path)
    hf = read_hf_config(folder)
    sizes = _sizes_from_hf(hf)
    overrides: dict = {}
    variant = next((name for name, v in VARIANTS.items() if v == sizes), None)
    if variant:
        overrides["variant"] = variant
    else:
        overrides.update({"variant": "b0", **{k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}})
    names = _canonical(_keys(files))
    if any(name.startswith("decode_head.") for name in names):
        id2label = hf.get("id2label") or {}
        if id2label:
            labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
            overrides["labels"] = tuple(labels)
    return overrides


def load_weights(model, path, config) -> dict:
    """Copy every checkpoint tensor into `model`; returns what was loaded, skipped and left fresh.

    Raises WeightsError naming tensors the checkpoint lacks, tensors it has that map nowhere, and
    tensors whose shapes differ from the model's. The one allowed mismatch is the classifier of a
    checkpoint with another label count: it stays freshly initialised, as Hugging Face's
    `ignore_mismatched_sizes=True` does.
    """
    from architectures.segformer import resolve_sizes

    if _keras_weights(path):
        try:
            model.load_weights(str(path))
        except Exception as e:
            raise WeightsError(
                f"{path}: cannot load into segformer ({config.num_classes} classes, "
                f"{config.input_size}, {config.options}): {e}"
            ) from e
        return {"source": str(path), "format": "keras"}
    folder, files = _locate(path)
    hf = read_hf_config(folder)
    sizes = resolve_sizes(config.options)
    checkpoint_sizes = _sizes_from_hf(hf)
    if checkpoint_sizes != sizes:
        differing = sorted(k for k in sizes if sizes[k] != checkpoint_sizes[k])
        raise WeightsError(
            f"checkpoint {folder} has other sizes than the model ("
            + "; ".join(f"{k}: checkpoint {checkpoint_sizes[k]}, model {sizes[k]}" for k in differing)
            + "); build the model with the overrides from config_from_weights"
        )
    tensors = _read_tensors(files)
    names = _canonical(tensors)

    encoder, decoder = weight_table(sizes)
    has_decoder = any(name.startswith("decode_head.") for name in names)
    rows = encoder + (decoder if has_decoder else [])

    expected = {}
    for layer_name, module, kind in rows:
        for suffix in _KINDS[kind][0]:
            expected[f"{module}.{suffix}"] = layer_name
    missing = [n for n in expected if n not in names]
    unexpected = [
        names[n] for n in names if n not in expected and not any(p.search(n) for p in _IGNORED)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"tensor(s) that map to nothing in the model: {_listing(unexpected)}")
    if problems:
        raise WeightsError(f"checkpoint {folder} does not fit segformer: " + "; ".join(problems))

    fresh, skipped, mismatched, assignments = [], [], [], []
    for layer_name, module, kind in rows:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise WeightsError(f"the model has no layer {layer_name!r}; is it a segformer?") from None
        suffixes, transforms = _KINDS[kind]
        values = [
            _transform(tensors[names[f"{module}.{sfx}"]], how) for sfx, how in zip(suffixes, transforms)
        ]
        current = layer.get_weights()
        shapes_ok = len(current) == len(values) and all(
            c.shape == v.shape for c, v in zip(current, values)
        )
        if not shapes_ok:
            if layer_name == "classifier" and len(current) == len(values):
                skipped.append(f"{module} ({values[1].shape[0]} labels in the checkpoint, "
                               f"{current[1].shape[0]} in the model)")
                fresh.append(layer_name)
                continue
            mismatched.append(
                f"{module} -> {layer_name}: checkpoint {[v.shape for v in values]}, "
                f"model {[c.shape for c in current]}"
            )
            continue
        assignments.append((layer, [v.astype(c.dtype) for c, v in zip(current, values)]))
    if mismatched:
        raise WeightsError(f"checkpoint {folder}: shape mismatch for {_listing(mismatched)}")
    for layer, values in assignments:
        layer.set_weights(values)

    if not has_decoder:
        fresh += [layer_name for layer_name, _, _ in decoder]
    if skipped:
        warnings.warn(
            "segformer: classifier left freshly initialised: " + "; ".join(skipped), stacklevel=2
        )
    ignored = sorted(names[n] for n in names if n not in expected)
    return {
        "source": str(folder),
        "loaded_layers": len(assignments),
        "fresh_layers": fresh,
        "ignored_tensors": ignored,
        "decoder": "checkpoint" if has_decoder else "fresh",
    }


def _listing(items, limit: int = 12) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
