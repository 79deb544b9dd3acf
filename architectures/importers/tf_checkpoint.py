"""Finding and reading TensorFlow checkpoints without the graph that wrote them (shared helper).

A checkpoint reaches `--weights` in the forms users' code leaves on disk:
- its prefix, `Lips.ckpt` or `model.ckpt-30000` (on disk: `<prefix>.index` + `<prefix>.data-*`),
- one of those files (`Lips.ckpt.index`, `Lips.ckpt.data-00000-of-00001`),
- a folder whose `checkpoint` file names the latest one (Keras ModelCheckpoint, TF1 Saver and
  `research/deeplab` train_logdir folders). That file often holds absolute paths of the machine
  that trained (Colab's /content/drive/...): when the named path is not here, the same file name
  inside the folder is used.

`tf.train.load_checkpoint` reads both TF2 object-based checkpoints (keys are object paths such as
`layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE`; the variables' own names are in the
object graph, `full_names`) and TF1 name-based ones (keys are the variable names).
"""

from __future__ import annotations

import re
from pathlib import Path

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def prefix_of(path) -> Path | None:
    """The checkpoint prefix `path` names (prefix, .index/.data file or folder), or None."""
    p = Path(path).expanduser()
    if p.is_dir():
        return _latest_in(p)
    text = str(p)
    if text.endswith(".index"):
        text = text[: -len(".index")]
    else:
        text = _DATA_SUFFIX.sub("", text)
    prefix = Path(text)
    return prefix if Path(text + ".index").is_file() else None


def _latest_in(folder: Path) -> Path | None:
    state = folder / "checkpoint"
    if not state.is_file():
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state.read_text(errors="replace"), re.M)
    if not match:
        return None
    named = Path(match.group(1))
    for candidate in (named if named.is_absolute() else folder / named, folder / named.name):
        if Path(str(candidate) + ".index").is_file():
            return candidate
    return None


def describe_prefix(path, prefix: Path) -> str:
    return str(path) if Path(path) == prefix else f"{path} ({prefix.name})"


def reader(prefix: Path):
    import tensorflow as tf

    return tf.train.load_checkpoint(str(prefix))


def shapes(prefix: Path) -> dict[str, tuple]:
    """Every stored tensor's checkpoint key -> shape (no values read)."""
    return {k: tuple(v) for k, v in reader(prefix).get_variable_to_shape_map().items()}


def full_names(ckpt_reader) -> dict[str, str]:
    """Object-based checkpoints: checkpoint key -> the variable's own name (e.g. a Keras weight's
    `tf_segformer_for_semantic_segmentation/segformer/.../kernel`); {} for a TF1 checkpoint."""
    if not ckpt_reader.has_tensor(OBJECT_GRAPH_KEY):
        return {}
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(ckpt_reader.get_tensor(OBJECT_GRAPH_KEY))
    names = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.full_name:
                names[attribute.checkpoint_key] = attribute.full_name
    return names
