"""What a .tflite or .onnx file is, read from the file alone (ours or anyone's).

    mf = open_model("model.tflite")
    mf.format, mf.precision, mf.inputs, mf.outputs, mf.ops, mf.metadata
    contract = input_contract(mf, mean=None, std=None)   # how pixels become its input, and why
    head = segmentation_head(mf)                          # which output, classes, sigmoid or argmax

Precision comes from the tensor types: int16 activations: int16x8; int8/uint8 activations: int8
(with `float_ops` naming float islands, if any); float16 constants: float16; int8 constants with
float activations: dynamic; otherwise float32. ONNX: Q/DQ or QLinear nodes: int8 (int16x8 with
16-bit zero points), DynamicQuantizeLinear or *Integer ops: dynamic, float16 initialisers: float16.

The input contract (`input_contract`): a file's MediaPipe metadata (NormalizationOptions) when it
has them; else our files' contract (RGB pixels 0..255, normalisation inside the graph: an input
named `pixels`, exporter.convert.signature); else --mean/--std; else 0..255 pixels, said so. A
uint8 input with metadata gets the raw pixels, as MediaPipe feeds it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError, first_line

SUFFIXES = (".tflite", ".onnx")
# Ops a segmentation output passes through after its activation (quantisation edges, layout).
_PASS_THROUGH = {"DEQUANTIZE", "QUANTIZE", "RESHAPE", "DequantizeLinear", "QuantizeLinear", "Reshape",
                 "Transpose", "Identity", "Cast"}
_SIGMOID_OPS = {"LOGISTIC", "Sigmoid"}
_ONNX_TYPE_NAMES = {"float": "float32", "double": "float64"}


@dataclasses.dataclass
class ModelFile:
    path: Path
    format: str  # "tflite" or "onnx"
    bytes: int
    inputs: list[dict]  # {name, shape, dtype, quantization: {scale, zero_point} or None}
    outputs: list[dict]
    ops: dict[str, int]  # op histogram
    precision: str
    float_ops: list[str]  # TFLite: ops computing in float inside a quantised file
    metadata: dict | None  # TFLite: MediaPipe metadata (exporter.metadata.read_metadata); ONNX: metadata_props
    sigmoid_outputs: set = dataclasses.field(default_factory=set)  # indices of outputs ending in a sigmoid
    blob: bytes | None = dataclasses.field(default=None, repr=False)  # TFLite bytes

    @property
    def name(self) -> str:
        return self.path.name

    def to_json(self) -> dict:
        return {"file": self.name, "format": self.format, "precision": self.precision, "bytes": self.bytes,
                "inputs": self.inputs, "outputs": self.outputs, "ops": self.ops, "float_ops": self.float_ops}


def open_model(path) -> ModelFile:
    """Read a model file; ExporterError (one line) when it is missing or not a valid model."""
    path = Path(path)
    if not path.exists():
        raise ExporterError(f"{path}: file not found")
    if not path.is_file():
        raise ExporterError(f"{path}: not a file")
    if path.suffix not in SUFFIXES:
        raise ExporterError(f"{path}: not a .tflite or .onnx file")
    return _tflite(path) if path.suffix == ".tflite" else _onnx(path)


# --- TFLite ---------------------------------------------------------------------------------

def _tflite(path: Path) -> ModelFile:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from exporter.convert.tflite import float_ops, op_histogram
    from exporter.metadata import read_metadata

    blob = path.read_bytes()
    try:
        interp = Interpreter(model_content=blob,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        ops = interp._get_ops_details()
    except Exception as exc:
        raise ExporterError(f"{path}: not a valid TFLite file ({first_line(exc)})") from None
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    inputs = [_tflite_tensor(d) for d in interp.get_input_details()]
    outputs = [_tflite_tensor(d) for d in interp.get_output_details()]
    try:
        metadata = read_metadata(blob)
    except ValueError as exc:
        metadata = {"error": str(exc)}
    producer = {int(t): op for op in ops for t in op["outputs"]}
    sigmoid = {i for i, d in enumerate(interp.get_output_details())
               if _ends_in_sigmoid(d["index"], lambda t: producer.get(t), lambda op: op["op_name"],
                                   lambda op: [int(x) for x in op["inputs"] if x >= 0])}
    return ModelFile(path=path, format="tflite", bytes=len(blob), inputs=inputs, outputs=outputs,
                     ops=op_histogram(blob), precision=_tflite_precision(interp, ops, tensors),
                     float_ops=sorted(set(float_ops(blob))), metadata=metadata, sigmoid_outputs=sigmoid, blob=blob)


def _tflite_tensor(d: dict) -> dict:
    scale, zero = d["quantization"]
    q = d.get("quantization_parameters") or {}
    scales = [float(s) for s in q.get("scales", [])]
    quant = None
    if scale or len(scales) > 1:
        quant = {"scale": float(scale) if len(scales) <= 1 else scales, "zero_point": int(zero)}
    return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
            "quantization": quant}


def _tflite_precision(interp, ops, tensors) -> str:
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    produced = {int(t) for op in ops for t in op["outputs"]} | graph_inputs
    constants = {int(t) for op in ops for t in op["inputs"] if t >= 0 and int(t) not in produced}
    edges = graph_inputs | {d["index"] for d in interp.get_output_details()}

    def types(ids):
        return {np.dtype(tensors[i]["dtype"]).name for i in ids if i in tensors}

    activations = types(produced - edges) or types(produced)
    weights = types(constants)
    if "int16" in activations:
        return "int16x8"
    if activations & {"int8", "uint8"}:
        return "int8"
    if "float16" in weights:
        return "float16"
    if "int8" in weights:
        return "dynamic"
    return "float32"


# --- ONNX -----------------------------------------------------------------------------------

def _onnx(path: Path) -> ModelFile:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ExporterError(f"{path}: not a valid ONNX file ({first_line(exc)})") from None
    graph = model.graph
    if not graph.node:
        raise ExporterError(f"{path}: not a valid ONNX file (no graph nodes)")
    initialisers = {i.name for i in graph.initializer}
    inputs = [_onnx_tensor(v) for v in graph.input if v.name not in initialisers]
    outputs = [_onnx_tensor(v) for v in graph.output]
    ops = dict(Counter(n.op_type for n in graph.node))
    init_types = {onnx.TensorProto.DataType.Name(i.data_type).lower() for i in graph.initializer}
    if "DynamicQuantizeLinear" in ops or any(op.endswith("Integer") for op in ops):
        precision = "dynamic"
    elif {"QuantizeLinear", "DequantizeLinear"} & set(ops) or any(op.startswith("QLinear") for op in ops):
        precision = "int16x8" if init_types & {"int16", "uint16"} else "int8"
    elif "float16" in init_types:
        precision = "float16"
    else:
        precision = "float32"
    producer = {o: n for n in graph.node for o in n.output}
    sigmoid = {i for i, v in enumerate(graph.output)
               if _ends_in_sigmoid(v.name, producer.get, lambda n: n.op_type, lambda n: list(n.input))}
    metadata = {p.key: p.value for p in model.metadata_props} or None
    return ModelFile(path=path, format="onnx", bytes=path.stat().st_size, inputs=inputs, outputs=outputs, ops=ops,
                     precision=precision, float_ops=[], metadata=metadata, sigmoid_outputs=sigmoid)


def _onnx_tensor(value) -> dict:
    import onnx

    t = value.type.tensor_type
    dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower()
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": value.name, "shape": dims, "dtype": _ONNX_TYPE_NAMES.get(dtype, dtype), "quantization": None}


def _ends_in_sigmoid(tensor, producer_of, op_name, op_inputs) -> bool:
    for _ in range(8):
        op = producer_of(tensor)
        if op is None:
            return False
        name = op_name(op)
        if name in _SIGMOID_OPS:
            return True
        if name not in _PASS_THROUGH or not op_inputs(op):
            return False
        tensor = op_inputs(op)[0]
    return False


# --- how to feed it and read it ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InputContract:
    """How 0..255 RGB pixels become the file's input, and where that rule came from."""

    source: str  # "metadata", "ours", "options", "default"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    raw: bool  # the pixels go in as they are (a uint8 input with metadata, our 0..255 contract)
    # What runners take (`exporter.runtimes.normalise`), before they quantise an integer input with
    # its own scale and zero point: None for 0..255 pixels.
    normalisation: tuple | None = None

    def describe(self) -> str:
        what = {"metadata": "its MediaPipe metadata", "ours": "this toolchain's contract",
                "options": "--mean/--std", "default": "assumed: no metadata, no --mean/--std"}[self.source]
        if self.raw and self.mean == (0.0,) and self.std == (1.0,):
            rule = "RGB pixels 0..255"
        elif self.raw:
            rule = (f"raw uint8 pixels (as MediaPipe feeds a uint8 input; its metadata says "
                    f"(pixels - {_values(self.mean)}) / {_values(self.std)})")
        else:
            rule = f"(pixels - {_values(self.mean)}) / {_values(self.std)}"
        return f"{rule}, from {what}"

    def to_json(self) -> dict:
        return {"source": self.source, "mean": list(self.mean), "std": list(self.std), "raw": self.raw,
                "description": self.describe()}


def input_contract(mf: ModelFile, mean=None, std=None) -> InputContract:
    """The file's input contract (see the module doc); `mean`/`std`: the user's, for files that declare none."""
    inp = mf.inputs[0]
    meta = mf.metadata if mf.format == "tflite" and isinstance(mf.metadata, dict) else None
    norm = (meta or {}).get("normalisation")
    if norm and norm.get("mean") and norm.get("std"):
        m, s = tuple(norm["mean"]), tuple(norm["std"])
        if inp["dtype"] == "uint8":  # MediaPipe hands a uint8 input the bytes as they are
            return InputContract("metadata", m, s, raw=True, normalisation=_raw_bytes(inp))
        return InputContract("metadata", m, s, raw=m == (0.0,) and s == (1.0,), normalisation=(m, s))
    if inp["name"] in ("pixels", "serving_default_pixels:0"):
        return InputContract("ours", (0.0,), (1.0,), raw=True)
    if mean is not None or std is not None:
        m = tuple(mean) if mean is not None else (0.0,)
        s = tuple(std) if std is not None else (1.0,)
        return InputContract("options", m, s, raw=False, normalisation=(m, s))
    return InputContract("default", (0.0,), (1.0,), raw=True)


def _raw_bytes(inp: dict):
    """The normalisation that a runner's own quantisation (q = x / scale + zero) turns back into the pixel."""
    q = inp["quantization"]
    if not q or not isinstance(q["scale"], float) or (q["scale"] == 1.0 and q["zero_point"] == 0):
        return None
    return (float(q["zero_point"]),), (1.0 / q["scale"],)


@dataclasses.dataclass(frozen=True)
class Head:
    """The segmentation output: which tensor, its size, its classes, and how a class is read off it."""

    index: int
    name: str
    height: int
    width: int
    channels: int  # 1: a sigmoid head
    channels_first: bool
    logits: bool  # 1-channel head without a sigmoid in the graph that MediaPipe's metadata says SIGMOID for

    @property
    def num_classes(self) -> int:
        return 2 if self.channels == 1 else self.channels

    @property
    def rule(self) -> str:
        if self.channels > 1:
            return "argmax"
        return "threshold 0.5 on sigmoid(logits)" if self.logits else "threshold 0.5"

    def to_json(self) -> dict:
        return {"output": self.index, "name": self.name, "size": [self.height, self.width],
                "channels": self.channels, "classes": self.num_classes, "rule": self.rule}


def segmentation_head(mf: ModelFile, choice: str | None = None) -> Head:
    """The output holding the masks: `choice` (an index or a name), else the 4-D output of the
    largest spatial size (the first of equals). ExporterError when there is none."""
    from exporter.runtimes import channels_first

    first = channels_first(mf.inputs[0]["shape"]) if mf.format == "onnx" else False
    candidates = []
    for i, out in enumerate(mf.outputs):
        shape = out["shape"]
        if len(shape) != 4 or not all(isinstance(v, int) for v in shape[1:]):
            continue
        h, w, c = (shape[2], shape[3], shape[1]) if first else (shape[1], shape[2], shape[3])
        candidates.append((i, h, w, c))
    if choice is not None:
        picked = [c for c in candidates if str(c[0]) == str(choice) or mf.outputs[c[0]]["name"] == choice]
        if not picked:
            names = ", ".join(f"{i}: {o['name']} {o['shape']}" for i, o in enumerate(mf.outputs))
            raise ExporterError(f"{mf.name}: --output {choice!r} is not a 4-D output of this file ({names})")
        best = picked[0]
    elif candidates:
        best = max(candidates, key=lambda c: (c[1] * c[2], -c[0]))
    else:
        shapes = ", ".join(str(o["shape"]) for o in mf.outputs)
        raise ExporterError(f"{mf.name}: no 4-D segmentation output (outputs {shapes})")
    i, h, w, c = best
    activation = (mf.metadata or {}).get("activation") if mf.format == "tflite" else None
    logits = c == 1 and i not in mf.sigmoid_outputs and activation == "SIGMOID"
    return Head(index=i, name=mf.outputs[i]["name"], height=h, width=w, channels=c, channels_first=first,
                logits=logits)


def input_size(mf: ModelFile) -> tuple[int, int, int]:
    """(height, width, channels) of the image input; ExporterError for inputs this cannot feed."""
    from exporter.runtimes import channels_first

    if len(mf.inputs) != 1:
        raise ExporterError(f"{mf.name}: {len(mf.inputs)} inputs; one image input is supported")
    shape = mf.inputs[0]["shape"]
    if len(shape) != 4:
        raise ExporterError(f"{mf.name}: input {shape} is not an image batch [1, H, W, C]")
    first = mf.format == "onnx" and channels_first(shape)
    h, w, c = (shape[2], shape[3], shape[1]) if first else (shape[1], shape[2], shape[3])
    if not all(isinstance(v, int) and v > 0 for v in (h, w, c)):
        raise ExporterError(f"{mf.name}: input {shape} has a dynamic size; a fixed height and width are needed")
    return h, w, c


def runner_options(contract: InputContract, head: Head | None = None) -> dict:
    """Keyword arguments for `exporter.runtimes.open_runner` that feed and read the file right."""
    return {"normalisation": contract.normalisation, "output": None if head is None else head.index}


def _values(v) -> str:
    v = list(v)
    return f"{v[0]:g}" if len(v) == 1 else "[" + ", ".join(f"{x:g}" for x in v) + "]"
