"""Activation ranges for int8: the calibrated min/max, narrowed to a percentile of the values.

TFLite's calibration keeps each activation tensor's min and max over the representative samples,
and int8 spreads its 256 codes over that whole range: a handful of outlying values then set the
step for every other value. Narrowing each range to the `percentile`-th percentile of the
tensor's values on the same samples (outliers saturate, everything else is rounded finer) is what
TensorRT, OpenVINO and NNCF offer as percentile calibration.

Measured on the trained DeepLab (128 px, 200 calibration samples, 100 held-out samples),
agreement of the post-training int8 file with float: min/max 99.17 %; 99.9999th percentile
99.28 %; 99.999th 99.39 %; 99.99th 99.26 %; 99.95th 98.75 % (too much clipping); a per-tensor
MSE-optimal choice among those 99.25 %. `DEFAULT_PERCENTILE` is the best of them; the UNet and the
selfie model did not lose agreement with it (README, "Activation ranges").

The same percentile starts QAT's ranges (`exporter.qat.calibrate_ranges`): one place decides it.
"""

from __future__ import annotations

import math

import numpy as np

from exporter.errors import ExporterError

DEFAULT_PERCENTILE = 99.999  # 100: TFLite's own min/max


def check_percentile(percentile: float) -> float:
    if not (isinstance(percentile, (int, float)) and math.isfinite(percentile) and 99.0 <= percentile <= 100.0):
        raise ExporterError(f"--range-percentile {percentile}: expected a number from 99 to 100 "
                            "(100 keeps TFLite's min/max ranges)")
    return float(percentile)


class TailTracker:
    """The k-th smallest and k-th largest of a stream of arrays, exactly, in O(k) memory.

    k is fixed by the total count and the percentile: with N values, the `percentile`-th
    percentile is (to one value) the k-th largest, k = N * (100 - percentile) / 100, at least 1.
    """

    def __init__(self, total: int, percentile: float):
        self.k = max(1, int(total * (100.0 - percentile) / 100.0))
        self.low = np.empty(0, np.float32)
        self.high = np.empty(0, np.float32)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).ravel()
        low = np.concatenate([self.low, values])
        high = np.concatenate([self.high, values])
        k = self.k
        self.low = low if low.size <= k else np.partition(low, k - 1)[:k]
        self.high = high if high.size <= k else np.partition(high, high.size - k)[-k:]

    def range(self) -> tuple[float, float]:
        """(k-th smallest, k-th largest) of everything added."""
        if not self.high.size:
            raise ValueError("no values added")
        return float(self.low.max()), float(self.high.min())


def narrowed(lo: float, hi: float, clip_lo: float, clip_hi: float) -> tuple[float, float]:
    """[lo, hi] narrowed to [clip_lo, clip_hi], never widened and always containing 0 (int8's
    zero point must represent 0 exactly: padding and ReLU produce it)."""
    return max(lo, min(clip_lo, 0.0)), min(hi, max(clip_hi, 0.0))


def _stat_tensors(graph) -> list[int]:
    """Activation tensors of a calibrated model that carry a per-tensor min/max, graph inputs and
    outputs excepted (the input keeps the pixel range the app's bytes map onto; the scores keep
    their extremes so that no two classes saturate into a tie)."""
    edges = set(graph.inputs) | set(graph.outputs)
    found = []
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if index in edges or q is None or q.min is None or q.max is None:
            continue
        if len(q.min) == 1 and len(q.max) == 1:
            found.append(index)
    return found


def clip_calibrated_ranges(calibrated: bytes, images: np.ndarray, percentile: float) -> bytes:
    """A calibrated (not yet quantised) TFLite model with each activation range narrowed to the
    `percentile`-th percentile of its values on `images` (the calibration samples, pixels 0..255).
    Percentile 100 returns it unchanged."""
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.flatbuffer import read_model, write_model

    percentile = check_percentile(percentile)
    if percentile >= 100.0:
        return calibrated
    model = read_model(calibrated)
    graph = model.subgraphs[0]
    indices = _stat_tensors(graph)
    if not indices:
        return calibrated
    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    details = {d["index"]: d for d in interp.get_tensor_details()}
    trackers = {i: TailTracker(len(images) * int(np.prod(details[i]["shape"])), percentile) for i in indices}
    for image in images:
        interp.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interp.invoke()
        for i, tracker in trackers.items():
            tracker.add(interp.get_tensor(i))
    for i, tracker in trackers.items():
        q = graph.tensors[i].quantization
        lo, hi = narrowed(float(q.min[0]), float(q.max[0]), *tracker.range())
        q.min = np.array([lo], np.float32)
        q.max = np.array([hi], np.float32)
    return write_model(model)


def onnx_range_overrides(model_path, images: np.ndarray, input_name: str, percentile: float) -> dict:
    """ONNX Runtime `TensorQuantOverrides` ({tensor: [{"rmin", "rmax"}]}) that narrow every float
    activation of the ONNX model at `model_path` to the `percentile`-th percentile of its values on
    `images`, as `clip_calibrated_ranges` does for TFLite: never wider than min/max, always holding
    0, the graph's input and output left to ORT's own min/max. Empty at percentile 100.

    ORT's own `CalibrationMethod.Percentile` histograms into 2048 bins over +-max|x| and cuts half
    the tail at each end: a different range from the TFLite file's, so both formats get this one.
    """
    import onnx
    import onnxruntime as ort

    percentile = check_percentile(percentile)
    if percentile >= 100.0:
        return {}
    model = onnx.load(str(model_path))
    graph = model.graph
    floats = {vi.name for vi in graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    edges = {t.name for t in graph.input} | {t.name for t in graph.output}
    names = [out for node in graph.node for out in node.output if out in floats and out not in edges]
    for name in names:  # expose every activation as an output: one run measures them all
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    trackers: dict[str, TailTracker] = {}
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for image in images:
        for name, value in zip(names, session.run(names, {input_name: image[None].astype(np.float32)})):
            if name not in trackers:
                trackers[name] = TailTracker(len(images) * value.size, percentile)
                lows[name], highs[name] = np.inf, -np.inf
            trackers[name].add(value)
            lows[name] = min(lows[name], float(value.min()))
            highs[name] = max(highs[name], float(value.max()))
    overrides = {}
    for name, tracker in trackers.items():
        lo, hi = narrowed(lows[name], highs[name], *tracker.range())
        overrides[name] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    return overrides
