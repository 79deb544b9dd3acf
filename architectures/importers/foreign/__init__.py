"""Foreign files for `convert --from`: a segmentation model we did not build, in its own contract.

    fm = open_foreign(Path("model.onnx"), work, input_norm=None, labels=None, output=None)
    fm.float32              the float32 TFLite every TFLite file of the run is made from
    fm.quantise("int8", x)  a file at one precision, x: calibration inputs in the model's own contract
    fm.reference()          the original model in its own runtime: pixels 0..255 NHWC -> scores NHWC

One source module per kind (the engine that quantises it, the reference parity is measured against):

    keras       .keras / full-model .h5, SavedModel folder   TFLiteConverter        Keras / TF itself
    tflite      a float .tflite                               AI Edge Quantizer (*)  LiteRT on the file
    onnx        an .onnx                                      onnx2tf + AI Edge Q.   ONNX Runtime on the file

(*) after the lossless fixes the quantizer needs (float16 constants folded, MediaPipe custom ops as
their builtins, a signature; `tflite_float`).

Files made from a foreign model keep its input contract (`Contract`): the same real-valued input
(range, layout, size) and the same output meaning, so the app that feeds the original feeds them
unchanged. Anything we cannot read or convert is one line (`ForeignModelError`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from architectures.importers.foreign.errors import ForeignModelError

OUTPUTS = ("logits", "probabilities", "sigmoid")
# What MediaPipe's ImageSegmenter applies to the scores, per output kind and channel count.
_ACTIVATION = {("logits", 1): "SIGMOID", ("logits", 2): "SOFTMAX", ("probabilities", 2): "NONE",
               ("sigmoid", 1): "NONE"}


@dataclasses.dataclass(frozen=True)
class Contract:
    """What the original takes and gives, kept by every file made from it."""

    height: int
    width: int
    channels_first: bool  # input [1, 3, H, W] (as PyTorch exports) rather than [1, H, W, 3]
    mean: tuple[float, ...]  # input = (pixels 0..255 - mean) / std, per channel or one value
    std: tuple[float, ...]
    norm_source: str  # "metadata", "--input-norm", "assumed"
    head: int  # which output holds the masks
    channels: int  # its channels (1: one sigmoid or logit channel)
    output: str  # one of OUTPUTS
    output_source: str  # "metadata", "--output", "the last op"
    labels: tuple[str, ...]
    labels_source: str  # "metadata", "--labels", "data", "numbered"

    @property
    def num_classes(self) -> int:
        return 2 if self.channels == 1 else self.channels

    @property
    def logits(self) -> bool:
        """A one-channel head read as sigmoid(logits) > 0.5 (exporter.parity.class_map)."""
        return self.channels == 1 and self.output == "logits"

    @property
    def activation(self) -> str:
        return _ACTIVATION.get((self.output, min(self.channels, 2)), "NONE")

    def inputs(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB [N, H, W, 3] -> the model's own float input tensors."""
        x = (pixels.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.channels_first else x)

    def describe_input(self) -> str:
        from exporter.modelfile import _values

        layout = f"[1, 3, {self.height}, {self.width}]" if self.channels_first else f"[1, {self.height}, {self.width}, 3]"
        return (f"float32 {layout}, (pixels 0..255 - {_values(self.mean)}) / {_values(self.std)} "
                f"(from {self.norm_source})")

    def to_json(self) -> dict:
        return {"input_size": [self.height, self.width], "layout": "NCHW" if self.channels_first else "NHWC",
                "mean": list(self.mean), "std": list(self.std), "normalisation_from": self.norm_source,
                "description": self.describe_input(), "output_index": self.head, "output_channels": self.channels,
                "output": self.output, "output_from": self.output_source, "activation": self.activation,
                "labels_from": self.labels_source}


@dataclasses.dataclass
class ForeignModel:
    path: Path
    kind: str  # "keras", "savedmodel", "tflite", "onnx"
    name: str
    engine: str  # what writes the quantised TFLite files
    reference_description: str  # what parity is measured against
    float32: bytes
    contract: Contract
    fixes: list[str]  # what was done to the original to convert it, one line each
    metadata_source: bytes | None  # a TFLite whose MediaPipe metadata every file keeps (the original's)
    _quantise: Callable[[str, np.ndarray | None], bytes]
    _reference: Callable[[], Callable[[np.ndarray], np.ndarray]]
    onnx_path: Path | None = None  # the original ONNX file (its int8 ONNX is quantised from it)

    def quantise(self, precision: str, calibration: np.ndarray | None) -> bytes:
        if precision == "float32":
            return self.float32
        return self._quantise(precision, calibration)

    def reference(self):
        """A runner with `predict(pixels uint8 NHWC) -> float scores NHWC`: the original model."""
        return _Runner(self._reference())

    def to_json(self) -> dict:
        return {"file": str(self.path.resolve()), "kind": self.kind, "engine": self.engine, "fixes": self.fixes,
                "reference": self.reference_description, "contract": self.contract.to_json()}


class _Runner:
    runtime = "reference"

    def __init__(self, fn):
        self.predict = fn


def kind_of(path: Path) -> str:
    """The source kind by name and content, or one line saying why it is none."""
    if not path.exists():
        raise ForeignModelError(f"{path}: file not found")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise ForeignModelError(f"{path}: a folder without saved_model.pb; --from takes a .keras/.h5 file, a "
                                "SavedModel folder, a float .tflite or an .onnx")
    suffix = path.suffix.lower()
    kinds = {".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".tflite": "tflite", ".onnx": "onnx"}
    if suffix not in kinds:
        raise ForeignModelError(f"{path}: not a model file --from reads (.keras, .h5, a SavedModel folder, "
                                ".tflite, .onnx)")
    if path.stat().st_size == 0:
        raise ForeignModelError(f"{path}: empty file")
    return kinds[suffix]


def open_foreign(path: Path, work: Path, *, input_norm: str | None = None, labels: tuple[str, ...] | None = None,
                 output: str | None = None, name: str | None = None) -> ForeignModel:
    """Read the file, make its float32 TFLite and say how it is quantised (see the module doc).
    `work`: a scratch folder of this run (removed by the caller)."""
    path = Path(path)
    kind = kind_of(path)
    if output is not None and output not in OUTPUTS:
        raise ForeignModelError(f"--output {output!r}: choose from {', '.join(OUTPUTS)}")
    if kind in ("keras", "savedmodel"):
        from architectures.importers.foreign import keras_source as source
    elif kind == "tflite":
        from architectures.importers.foreign import tflite_source as source
    else:
        from architectures.importers.foreign import onnx_source as source
    return source.open_source(path, kind, Path(work), name=name or _stem(path), input_norm=input_norm,
                              labels=labels, output=output)


def _stem(path: Path) -> str:
    import re

    stem = path.name if path.is_dir() else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "model"


# --- the parts of the contract every source decides the same way ---------------------------------

def normalisation(input_norm: str | None, from_metadata: tuple | None, where: str) -> tuple[tuple, tuple, str]:
    """(mean, std, source): --input-norm, else the file's metadata, else assumed 0..255 as they are
    (said in the report: a model trained on [0, 1] inputs needs --input-norm 0,1)."""
    from architectures.input_norm import parse

    if input_norm is not None:
        norm = parse(input_norm)
        return tuple(norm.mean), tuple(norm.std), "--input-norm"
    if from_metadata is not None:
        return tuple(from_metadata[0]), tuple(from_metadata[1]), "metadata"
    return (0.0,), (1.0,), f"assumed: {where} declares no normalisation and no --input-norm was given"


def output_kind(choice: str | None, from_metadata: str | None, last_op: str | None, channels: int,
                file: str) -> tuple[str, str]:
    """(output, source) of the mask head: --output, else metadata, else the last op (softmax ->
    probabilities, sigmoid -> sigmoid, anything else logits)."""
    if choice is not None:
        out, source = choice, "--output"
    elif from_metadata is not None:
        out, source = from_metadata, "metadata"
    else:
        out = {"softmax": "probabilities", "sigmoid": "sigmoid", "logistic": "sigmoid"}.get((last_op or "").lower(), "logits")
        source = f"the last op ({last_op or 'none'})"
    if out == "sigmoid" and channels != 1:
        raise ForeignModelError(f"{file}: --output sigmoid needs a one-channel head; this one has {channels}")
    if out == "probabilities" and channels == 1:
        out = "sigmoid"
    return out, source


def class_names(labels: tuple[str, ...] | None, from_metadata: list | None, channels: int,
                file: str) -> tuple[tuple[str, ...], str]:
    classes = 2 if channels == 1 else channels
    for names, source in ((labels, "--labels"), (from_metadata, "metadata")):
        if not names:
            continue
        names = tuple(names)
        if channels == 1 and len(names) == 1:
            names = ("background", names[0])
        if len(names) != classes:
            raise ForeignModelError(f"{file}: {source} names {len(names)} classes; its output has {classes}")
        return names, source
    return tuple(f"class_{k}" for k in range(classes)), "numbered"


def check_head(shape, file: str) -> tuple[int, int, int]:
    """(h, w, c) of a 4-D NHWC output; one line for anything that is no segmentation output."""
    dims = list(shape)
    if len(dims) != 4:
        raise ForeignModelError(f"{file}: output is {len(dims)}-D {dims}: not a segmentation model "
                                "(expected [1, H, W, classes])")
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims[1:]):
        raise ForeignModelError(f"{file}: output {dims} has a dynamic size; give a model with a fixed input size")
    return int(dims[1]), int(dims[2]), int(dims[3])
