"""Reading what tf.keras code saves, in every form the seed's users save it, into a rebuilt copy of
their graph (architectures.importers.seed_graphs), then into ours.

Forms: a TF checkpoint (`model.save_weights("Lips.ckpt")` or ModelCheckpoint(save_weights_only):
given as its prefix, its `.index` file, or the folder whose `checkpoint` file names the latest);
a weights `.h5`; a full-model `.h5` or `.keras`; a SavedModel folder. Keras' own loaders do the
matching (by object graph for checkpoints, by layer order for .h5), which is structural because
the graph they load into is the user's own; every mismatch becomes one line with names and shapes.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tempfile
from pathlib import Path

from architectures.importers import Imported, refuse
from exporter.errors import first_line
from architectures.importers.tf_checkpoint import VALUE_SUFFIX as VALUE, prefix_of
_TOP_BIAS = re.compile(r"^layer_with_weights-(\d+)/bias" + re.escape(VALUE) + "$")


@dataclasses.dataclass(frozen=True)
class Form:
    kind: str  # "checkpoint", "h5-weights", "h5-model", "keras", "savedmodel"
    location: Path  # the checkpoint prefix, or the file/folder itself
    description: str


def form_of(path: Path) -> Form | None:
    """Which of the saved forms `path` is, or None (not a Keras-saved model or weights)."""
    path = Path(path)
    prefix = prefix_of(path)
    if prefix is not None:
        return Form("checkpoint", prefix, f"TF checkpoint {prefix.name} (tf.keras save_weights)")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return Form("savedmodel", path, f"SavedModel {path.name}")
    if path.is_file() and path.suffix == ".keras":
        return Form("keras", path, f"Keras model file {path.name}")
    if path.is_file() and path.suffix in (".h5", ".hdf5"):
        kind = "h5-model" if _is_full_model_h5(path) else "h5-weights"
        return Form(kind, path, f"{'Keras model' if kind == 'h5-model' else 'Keras weights'} file {path.name}")
    return None


def _is_full_model_h5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "model_weights" in f
    except OSError:  # truncated, or not HDF5 at all
        raise refuse(path, "not a readable HDF5 file (Keras .h5 files are HDF5)") from None


def h5_layer_names(path: Path) -> list[str]:
    """Top-level layer names of a Keras .h5 (weights or full model), in saved order."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        return [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("layer_names", [])]


def output_classes(form: Form) -> int | None:
    """The number of output channels: the bias of the graph's last weighted layer (both seed
    graphs end in a conv with bias), or the loaded model's output shape."""
    if form.kind == "checkpoint":
        from exporter.keras import tf

        biases = {int(m.group(1)): shape for name, shape in tf.train.list_variables(str(form.location))
                  if (m := _TOP_BIAS.match(name))}
        return int(biases[max(biases)][0]) if biases else None
    if form.kind == "h5-weights":
        import h5py

        with h5py.File(form.location, "r") as f:
            for name in reversed(h5_layer_names(form.location)):
                names = [n.decode() if isinstance(n, bytes) else n for n in f[name].attrs.get("weight_names", [])]
                biases = [n for n in names if n.split("/")[-1].startswith("bias")]
                if biases:
                    return int(f[name][biases[-1]].shape[0])
        return None
    model = load_model_file(form)
    return int(model.output_shape[-1])


@functools.lru_cache(maxsize=2)
def load_model_file(form: Form):
    """A full-model file (.keras, .h5 with its config, SavedModel) as the user's own Keras model,
    read once per run (claims, class count and load all look at it). Lambda layers (the seed's
    ViT has one) need safe_mode off: this is the user's own file."""
    from exporter.keras import keras

    try:
        return keras.models.load_model(str(form.location), compile=False, safe_mode=False)
    except TypeError:  # loaders without safe_mode (.h5, SavedModel)
        return keras.models.load_model(str(form.location), compile=False)


def read_into(reference, form: Form, what: str) -> int:
    """Load `form` into `reference` (the user's graph rebuilt); refuse in one line what does not fit.
    Returns the number of tensors read."""
    if form.kind == "checkpoint":
        return _checkpoint_into(reference, form, what)
    if form.kind == "h5-weights":
        return _h5_weights_into(reference, form, what)
    try:
        loaded = load_model_file(form)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds; the first line says which
        raise refuse(form.location, f"cannot read as a Keras model: {first_line(exc)}") from None
    return _layers_into(reference, loaded, form, what)


def _checkpoint_into(reference, form: Form, what: str) -> int:
    from exporter.keras import tf

    expected = _model_tensors(reference)
    found = {name[: -len(VALUE)]: tuple(shape) for name, shape in tf.train.list_variables(str(form.location))
             if name.endswith(VALUE) and not _bookkeeping(name)}
    missing = {k: s for k, s in expected.items() if found.get(k) != s}
    leftover = {k: s for k, s in found.items() if expected.get(k) != s}
    if missing or leftover:
        raise refuse(form.location, f"not a checkpoint of {what}", missing, leftover)
    status = reference.load_weights(str(form.location))
    status.expect_partial()  # the optimizer's slots and step counter are not the model's
    status.assert_existing_objects_matched()
    return len(found)


def _model_tensors(reference) -> dict[str, tuple]:
    """The checkpoint keys and shapes `reference.save_weights` writes: what a matching file holds."""
    from exporter.keras import tf

    with tempfile.TemporaryDirectory() as tmp:
        reference.save_weights(f"{tmp}/reference.ckpt")
        return {name[: -len(VALUE)]: tuple(shape) for name, shape in tf.train.list_variables(f"{tmp}/reference.ckpt")
                if name.endswith(VALUE) and not _bookkeeping(name)}


def _bookkeeping(name: str) -> bool:
    return name.startswith(("optimizer/", "save_counter", "_CHECKPOINTABLE")) or ".OPTIMIZER_SLOT" in name


def _h5_weights_into(reference, form: Form, what: str) -> int:
    """Keras' .h5 weights are per layer in `trainable + non-trainable` order, so the order inside
    a nested model depends on whether it was frozen when saved (the tutorial freezes its
    down_stack; fine-tuning unfreezes it). Both are tried; tensors are matched by attribute name
    (kernel, gamma, moving_mean, ...) and shape, since a gamma and a moving mean share a shape."""
    import h5py

    with h5py.File(form.location, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        found = [(f"{layer}/{name.decode() if isinstance(name, bytes) else name}", tuple(group[layer][name].shape))
                 for layer in h5_layer_names(form.location) for name in group[layer].attrs.get("weight_names", [])]
    nested = [layer for layer in reference.layers if hasattr(layer, "layers")]
    for flip in (False, True):
        for layer in nested if flip else ():
            layer.trainable = not layer.trainable
        expected = [(w.name, tuple(w.shape)) for layer in reference.layers
                    for w in layer.trainable_weights + layer.non_trainable_weights]
        if _signature(expected) == _signature(found):
            reference.load_weights(str(form.location))
            return len(found)
    missing, leftover = _shape_difference(expected, found)
    what_else = "" if missing or leftover else " (same shapes in another order)"
    raise refuse(form.location, f"not a weights file of {what}{what_else}", missing, leftover)


def _signature(tensors: list) -> list[tuple]:
    """(attribute, shape) per tensor: 'block_1_expand_BN/gamma:0' -> ('gamma', shape)."""
    return [(name.split("/")[-1].split(":")[0], shape) for name, shape in tensors]


def _layers_into(reference, loaded, form: Form, what: str) -> int:
    """Weighted leaf layers of the user's loaded model into the rebuilt graph's, pairwise."""
    mine, theirs = _leaves(reference), _leaves(loaded)
    pairs = list(zip(mine, theirs))
    if len(mine) != len(theirs) or any(_shapes(a) != _shapes(b) or type(a) is not type(b) for a, b in pairs):
        expected = [(w.name, tuple(w.shape)) for layer in mine for w in layer.weights]
        found = [(w.name, tuple(w.shape)) for layer in theirs for w in layer.weights]
        missing, leftover = _shape_difference(expected, found)
        what_else = "" if missing or leftover else " (same tensors, other layers)"
        raise refuse(form.location, f"not a model of {what}{what_else}", missing, leftover)
    for a, b in pairs:
        a.set_weights(b.get_weights())
    return sum(len(layer.weights) for layer in mine)


def _leaves(model) -> list:
    """Layers that hold weights, nested models (the tutorial's down_stack, its Sequentials) opened."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += _leaves(layer)
        elif layer.weights:
            out.append(layer)
    return out


def _shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]


def _shape_difference(expected: list, found: list) -> tuple[dict, dict]:
    """(missing, left over): tensors whose shape has no counterpart on the other side (as
    multisets of shapes)."""
    return _unmatched(expected, found), _unmatched(found, expected)


def _unmatched(tensors: list, other: list) -> dict:
    """{name: shape} of `tensors` left once each shape in `other` has been matched once."""
    from collections import Counter

    available = Counter(shape for _, shape in other)
    out = {}
    for name, shape in tensors:
        if available[shape]:
            available[shape] -= 1
        else:
            out[name] = shape
    return out


def move_into_ours(model, pairs: dict, form: Form, what: str, read: int) -> Imported:
    """The rebuilt graph's weights into our graph, layer by layer as `pairs` names them."""
    moved = 0
    for layer, ours in pairs.items():
        target = model.get_layer(ours)
        if _shapes(target) != _shapes(layer):
            raise refuse(form.location, f"{what}: layer {ours} takes {_shapes(target)}, the file has {_shapes(layer)}")
        target.set_weights(layer.get_weights())
        moved += len(layer.weights)
    return Imported(source=f"{form.description}, {what}", mapped=moved,
                    notes=(f"{read} tensors read from the file",) if read != moved else ())


def first_kernels(form: Form, n: int = 2) -> list[tuple]:
    """Shapes of the first `n` kernels in the order the user's graph holds them: a cheap
    fingerprint of which code built it (read from the file, no graph built)."""
    if form.kind == "checkpoint":
        from exporter.keras import tf

        found = dict(tf.train.list_variables(str(form.location)))
        keys = sorted((k for k in found if k.endswith(("/kernel" + VALUE, "/depthwise_kernel" + VALUE))
                       and not _bookkeeping(k)), key=_object_path)
        return [tuple(found[k]) for k in keys[:n]]
    if form.kind in ("h5-weights", "h5-model"):
        import h5py

        shapes = []
        with h5py.File(form.location, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer in h5_layer_names(form.location):
                for name in group[layer].attrs.get("weight_names", []):
                    name = name.decode() if isinstance(name, bytes) else name
                    if name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel"):
                        shapes.append(tuple(group[layer][name].shape))
                if len(shapes) >= n:
                    return shapes[:n]
        return shapes
    kernels = [tuple(w.shape) for layer in _leaves(load_model_file(form)) for w in layer.weights
               if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")]
    return kernels[:n]


def _object_path(key: str) -> tuple:
    """`layer_with_weights-3/layer_with_weights-12/kernel/...` -> (3, 12): the saved layer order."""
    return tuple(int(m) for m in re.findall(r"layer_with_weights-(\d+)", key))


def seed_importer(build_reference, ours_last_layer: str, what: str, fingerprint: list[tuple]):
    """The importer functions (claims, config_overrides, load) for a graph the seed's Keras code
    builds: `build_reference(config) -> (model, pairs)` rebuilds it; a file is claimed when its
    first kernels are `fingerprint` (so another architecture's checkpoint is not), unless it is an
    .h5 saved from our own graph (its last layer `ours_last_layer`), which loads as it is."""

    def claims(path: Path) -> bool:
        form = form_of(path)
        if form is None or (form.kind == "h5-weights" and ours_last_layer in h5_layer_names(form.location)):
            return False
        try:
            return first_kernels(form, len(fingerprint)) == fingerprint
        except Exception:  # noqa: BLE001 - unreadable as this kind: not this importer's file
            return False

    def config_overrides(path: Path) -> dict:
        classes = output_classes(form_of(path))
        return {} if classes is None else {"num_classes": classes}

    def load(model, path: Path, config) -> Imported:
        form = form_of(path)
        reference, pairs = build_reference(config)
        described = f"{what} with {config.num_classes} classes"
        return move_into_ours(model, pairs, form, described, read_into(reference, form, described))

    return claims, config_overrides, load
