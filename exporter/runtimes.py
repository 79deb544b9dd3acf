"""One interface over the runtimes an artifact runs in: Keras, LiteRT and ONNX Runtime.

`runner.predict(pixels)` takes uint8 RGB [1, H, W, 3] and returns float scores [1, H, W, C];
quantised inputs and outputs are (de)quantised here with the file's own parameters, so parity
compares like with like. `runner.invoke()` re-runs the last input, for timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class KerasRunner:
    runtime = "keras"

    def __init__(self, model):
        self.model = model

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(pixels.astype(np.float32), training=False))


class LiteRTRunner:
    runtime = "litert"

    def __init__(self, path: Path, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def set_input(self, pixels: np.ndarray) -> None:
        dtype = self.input["dtype"]
        scale, zero = self.input["quantization"]
        if np.issubdtype(dtype, np.integer):
            if scale == 1.0 and zero == 0 and dtype == np.uint8:
                value = pixels.astype(np.uint8)
            else:
                info = np.iinfo(dtype)
                value = np.clip(np.round(pixels / scale + zero), info.min, info.max).astype(dtype)
        else:
            value = pixels.astype(dtype)
        self.interpreter.set_tensor(self.input["index"], value)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def get_output(self) -> np.ndarray:
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output["quantization"]
        if np.issubdtype(out.dtype, np.integer):
            return (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.set_input(pixels)
        self.invoke()
        return self.get_output()


class OnnxRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 2):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.feed = None

    def set_input(self, pixels: np.ndarray) -> None:
        dtype = np.uint8 if "uint8" in self.input.type else np.float32
        self.feed = {self.input.name: pixels.astype(dtype)}

    def invoke(self):
        return self.session.run(None, self.feed)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.set_input(pixels)
        return np.asarray(self.invoke()[0], np.float32)


def open_runner(path: Path, threads: int = 2):
    path = Path(path)
    if path.suffix == ".tflite":
        return LiteRTRunner(path, threads)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads)
    raise ValueError(f"no runtime for {path.name}")
