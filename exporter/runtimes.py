"""One interface over the runtimes an artifact runs in: Keras, LiteRT and ONNX Runtime.

`runner.predict(pixels)` takes uint8 RGB [1, H, W, 3] and returns float scores [1, H, W, C];
quantised inputs and outputs are (de)quantised here with the file's own parameters, so parity
compares like with like. `runner.invoke()` re-runs the last input, for timing.

Files made elsewhere: `normalisation=(mean, std)` feeds (pixels - mean) / std instead (float
inputs, or integer ones quantised from it), `output=k` picks the k-th output tensor (default the
first), and an ONNX input [1, 3, H, W] is fed channels-first, its 4-D output read back as NHWC.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def input_tensor(pixels: np.ndarray, detail: dict) -> np.ndarray:
    """uint8 RGB pixels as the raw tensor a LiteRT input wants (`detail`: one entry of
    get_input_details()): quantised with the file's own scale and zero point for integer inputs."""
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if np.issubdtype(dtype, np.integer):
        if scale == 1.0 and zero == 0 and dtype == np.uint8:
            return pixels.astype(np.uint8)
        info = np.iinfo(dtype)
        return np.clip(np.round(pixels / scale + zero), info.min, info.max).astype(dtype)
    return pixels.astype(dtype)


def output_scores(raw: np.ndarray, detail: dict) -> np.ndarray:
    """A raw LiteRT output tensor as float scores, dequantised with the file's own parameters."""
    scale, zero = detail["quantization"]
    if np.issubdtype(raw.dtype, np.integer):
        return (raw.astype(np.float32) - zero) * scale
    return raw.astype(np.float32)


def normalise(pixels: np.ndarray, normalisation) -> np.ndarray:
    """(pixels - mean) / std as float32 (mean and std: one value or one per channel); None: as they are."""
    if normalisation is None:
        return pixels
    mean, std = (np.asarray(v, np.float32) for v in normalisation)
    return (pixels.astype(np.float32) - mean) / std


def channels_first(shape) -> bool:
    """An image input [1, C, H, W] (C of 1, 3 or 4) rather than [1, H, W, C]."""
    dims = list(shape)
    return (len(dims) == 4 and dims[1] in (1, 3, 4) and not (isinstance(dims[3], int) and dims[3] in (1, 3, 4)))


ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int16)": np.int16,
               "tensor(int32)": np.int32}


class KerasRunner:
    runtime = "keras"

    def __init__(self, model, output: int | None = None):
        self.model = model
        self.output_index = output or 0

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        out = self.model(pixels.astype(np.float32), training=False)
        if isinstance(out, (list, tuple)):
            out = out[self.output_index]
        return np.asarray(out)


class LiteRTRunner:
    """LiteRT's Python Interpreter with its default delegate (XNNPACK), as an app gets it.

    (XNNPACK's `experimental_default_delegate_latest_features` was tried: no measurable gain for
    any registered architecture, so it is not offered.)
    """

    runtime = "litert"

    def __init__(self, path: Path, threads: int = 2, output: int | None = None,
                 normalisation=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.outputs = self.interpreter.get_output_details()
        if output is not None:
            self.output = self.outputs[output]
        self.normalisation = normalisation

    def set_input(self, pixels: np.ndarray) -> None:
        pixels = normalise(pixels, self.normalisation)
        self.interpreter.set_tensor(self.input["index"], input_tensor(pixels, self.input))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_output(self) -> np.ndarray:
        return output_scores(self.interpreter.get_tensor(self.output["index"]), self.output)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.set_input(pixels)
        self.invoke()
        return self.get_output()


def delegation(interpreter) -> dict:
    """How the default delegate split an allocated interpreter's graph.

    {"partitions": delegate kernels (XNNPACK subgraphs), "undelegated": {op: count} of the ops
    left to LiteRT's own kernels}. The node list keeps every original op beside the DELEGATE
    nodes that replaced them, so an op counts as left out when none of its outputs comes out of
    a delegate and one of them is read by a delegate, by another left-out op or is a graph output
    (an op inside a delegate writes only what that delegate reads itself or hands out).
    """
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegate_out = {int(t) for op in delegates for t in op["outputs"]}
    needed = {int(t) for op in delegates for t in op["inputs"]}
    needed |= {d["index"] for d in interpreter.get_output_details()}
    if not delegates:
        left = original
    else:
        left, seen, changed = [], set(), True
        while changed:
            changed = False
            for op in original:
                outs = {int(t) for t in op["outputs"]}
                if op["index"] in seen or outs & delegate_out or not outs & needed:
                    continue
                left.append(op)
                seen.add(op["index"])
                needed |= {int(t) for t in op["inputs"]}
                changed = True
    counts = Counter(op["op_name"] for op in left)
    return {"partitions": len(delegates), "undelegated": dict(sorted(counts.items()))}


class OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2, output: int | None = None, normalisation=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.outputs = self.session.get_outputs()
        self.output_index = output or 0
        self.normalisation = normalisation
        self.channels_first = channels_first(self.input.shape)
        self.feed = None

    def set_input(self, pixels: np.ndarray) -> None:
        pixels = normalise(pixels, self.normalisation)
        if self.channels_first:
            pixels = pixels.transpose(0, 3, 1, 2)
        dtype = ONNX_DTYPES.get(self.input.type, np.float32)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            pixels = np.clip(np.round(pixels), info.min, info.max)
        self.feed = {self.input.name: np.ascontiguousarray(pixels.astype(dtype))}

    def invoke(self):
        return self.session.run(None, self.feed)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.set_input(pixels)
        out = np.asarray(self.invoke()[self.output_index], np.float32)
        if self.channels_first and out.ndim == 4:
            out = out.transpose(0, 2, 3, 1)
        return out


def open_runner(path: Path, threads: int = 2, **options):
    """A runner for the file by its suffix; `options`: output, normalisation (see the module doc)."""
    path = Path(path)
    if path.suffix == ".tflite":
        return LiteRTRunner(path, threads, **options)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads, **options)
    raise ValueError(f"no runtime for {path.name}")
