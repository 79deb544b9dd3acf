"""Per-layer quantisation error and selective precision, with TFLite's QuantizationDebugger.

The debugger calibrates the float model once (representative *training* samples; activation ranges
narrowed as the shipped int8 file's are, `exporter.convert.ranges`), then runs a
debug build in which every quantised op is followed by a NumericVerify op comparing its int8
output with the float op run on the same (dequantised) input. Over the *held-out* samples that
gives per-tensor error statistics; we rank tensors by RMSE / scale (the RMSE in units of the int8
step: ~0.29 is pure rounding noise, several steps means that layer is where int8 hurts).

`selective_int8` re-quantises the same calibrated model with chosen layers denylisted, so they
stay float: such a file is no longer full-integer (it holds float ops and QUANTIZE/DEQUANTIZE
pairs around them) and is recorded as such. `keep_float_auto` adds the worst layers one at a time
until the held-out mIoU target is met, within a few tries.
"""

from __future__ import annotations

import dataclasses
import io as _io
import math
import os
import tempfile

import numpy as np

from exporter.convert.ranges import DEFAULT_PERCENTILE, check_percentile, clip_calibrated_ranges
from exporter.errors import ConversionError

# Rounding alone gives RMSE = scale / sqrt(12) on a uniformly spread tensor.
ROUNDING_RMSE_OVER_SCALE = 1.0 / math.sqrt(12.0)


def _layers_of(tensor_name: str) -> list[str]:
    """Keras layer names in a TFLite tensor name: 'unet/up0_relu/Relu;unet/up0_deconv/conv...'
    -> ['up0_relu', 'up0_deconv'] (a fused op names every layer it absorbed, output first)."""
    names = []
    for part in tensor_name.split(";"):
        pieces = part.split("/")
        if len(pieces) >= 2 and pieces[1] not in names:
            names.append(pieces[1])
    return names


def _producer_layers(model_content: bytes) -> dict[str, list[str]]:
    """{op output tensor name: Keras layers} for a TFLite model: the layers named in the output
    tensor's name, then those named by the op's constant inputs (the graph's output tensor is
    called 'Identity', but its op's weights still carry the layer's name)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(model_content), 0)
    graph = model.Subgraphs(0)

    def name(i):
        return graph.Tensors(i).Name().decode()

    def constant(i):
        buf = model.Buffers(graph.Tensors(i).Buffer())
        return buf is not None and (buf.DataLength() > 0 or buf.Size() > 0)

    found = {}
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        inputs = [i for i in op.InputsAsNumpy().tolist() if i >= 0] if op.InputsLength() else []
        extra = [layer for i in inputs if constant(i) for layer in _layers_of(name(i))]
        for j in range(op.OutputsLength()):
            layers = _layers_of(name(op.Outputs(j)))
            found[name(op.Outputs(j))] = layers + [x for x in dict.fromkeys(extra) if x not in layers]
    for i in range(graph.TensorsLength()):
        found.setdefault(name(i), _layers_of(name(i)))
    return found


def _original_name(debug_name: str, names) -> str:
    if debug_name in names:
        return debug_name
    for cut in range(1, 4):
        head, tail = debug_name[:-cut], debug_name[-cut:]
        if tail.isdigit() and head in names:
            return head
    return debug_name


@dataclasses.dataclass
class Selective:
    """A TFLite file with some layers kept in float."""

    blob: bytes
    keep_float: list[str]  # what was asked (layer or tensor names)
    denylisted_nodes: list[str]  # the TFLite tensor names that stayed float
    float_ops: list[str]  # ops computing in float inside the file
    full_integer: bool  # False as soon as one op stays float
    # Denylisted tensors the quantiser kept int8 anyway (TF 2.21 ignores TRANSPOSE_CONV nodes).
    not_honoured: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {"keep_float": self.keep_float, "denylisted_nodes": self.denylisted_nodes,
                "float_ops": self.float_ops, "full_integer": self.full_integer,
                "not_honoured": self.not_honoured, "bytes": len(self.blob)}


def _still_quantised(blob: bytes, nodes: list[str]) -> list[str]:
    """Denylisted tensors that are integer in `blob` (the quantiser did not keep them float)."""
    if not nodes:
        return []
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.tflite import _no_delegate_resolver

    interp = Interpreter(model_content=blob, experimental_op_resolver_type=_no_delegate_resolver())
    dtypes = {t["name"]: t["dtype"] for t in interp.get_tensor_details()}
    return [n for n in nodes if dtypes.get(n) != np.float32]


class QuantDebugSession:
    """One calibration of `model` (batch 1, float) reused for statistics and selective files."""

    def __init__(self, model, config, calibration_images: np.ndarray, heldout_images: np.ndarray,
                 per_tensor: bool = False, range_percentile: float = DEFAULT_PERCENTILE):
        from exporter.convert.tflite import calibrated_converter, representative
        from exporter.keras import tf

        if heldout_images is None or not len(heldout_images):
            raise ConversionError("per-layer quantisation error needs held-out samples")
        self.config = config
        converter = calibrated_converter(model, config, calibration_images, per_tensor,
                                         what="per-layer quantisation error")
        self.debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative(heldout_images),
            debug_options=tf.lite.experimental.QuantizationDebugOptions())
        if check_percentile(range_percentile) < 100.0:  # the ranges the shipped int8 file has
            self.debugger.calibrated_model = clip_calibrated_ranges(
                self.debugger.calibrated_model, calibration_images, range_percentile)
            self.debugger.options = self.debugger.options  # the setter re-quantises from them
        self._stats: list[dict] | None = None

    def layer_stats(self) -> list[dict]:
        """Every quantised tensor, worst first by RMSE / scale, on the held-out samples."""
        if self._stats is not None:
            return self._stats
        import csv

        dbg = self.debugger
        dbg.run()
        dump = _io.StringIO()
        dbg.layer_statistics_dump(dump)
        dump.seek(0)
        interp = dbg._quant_interpreter  # noqa: SLF001 - the debugger's own interpreter
        calibrated = _producer_layers(dbg.calibrated_model)
        rows = []
        for row in csv.DictReader(dump):
            # The debug model renames the tensors it duplicates (a digit or two appended); a denylist
            # matches the calibrated model's names, so map back to the longest such prefix.
            debug_name = interp._get_tensor_details(int(row["tensor_idx"]), subgraph_index=0)["name"]
            tensor = _original_name(debug_name, calibrated)
            scale = float(row["scale"])
            mse = float(row["mean_squared_error"])
            rmse = math.sqrt(max(mse, 0.0))
            layers = calibrated.get(tensor) or _layers_of(tensor) or [tensor]
            rows.append({
                "tensor": tensor,
                "layer": layers[0],
                "layers": layers,
                "op": row["op_name"],
                "rmse_over_scale": rmse / scale if scale > 0 else float("inf"),
                "rmse": rmse,
                "mean_error": float(row["mean_error"]),
                "max_abs_error": float(row["max_abs_error"]),
                "scale": scale,
                "zero_point": int(float(row["zero_point"])),
                "elements": int(float(row["num_elements"])),
            })
        rows.sort(key=lambda r: (-r["rmse_over_scale"] if math.isfinite(r["rmse_over_scale"]) else -1e30))
        self._stats = rows
        return rows

    def nodes_for(self, keep_float) -> list[str]:
        """TFLite tensor names for layer names (every tensor a layer is part of) or tensor names."""
        stats = self.layer_stats()
        tensors = {r["tensor"] for r in stats}
        nodes, unknown = [], []
        for name in keep_float:
            if name in tensors:
                found = [name]
            else:
                found = [r["tensor"] for r in stats if name in r["layers"]]
            if not found:
                unknown.append(name)
            nodes += [n for n in found if n not in nodes]
        if unknown:
            known = sorted({layer for r in stats for layer in r["layers"]})
            raise ConversionError(f"--keep-float: no quantised op belongs to {', '.join(unknown)}; "
                                  f"layers with quantised ops: {', '.join(known[:40])}"
                                  + (" ..." if len(known) > 40 else ""))
        return nodes

    def quantize(self, keep_float=(), io: str = "uint8") -> Selective:
        """The calibrated model quantised to int8 except the `keep_float` layers/tensors."""
        from exporter.convert.tflite import IO_TYPES, float_ops, uint8_edges
        from exporter.keras import tf
        from tensorflow.lite.python import convert

        if io not in IO_TYPES:
            raise ConversionError(f"unknown --io {io!r}; choose one of {', '.join(IO_TYPES)}")
        nodes = self.nodes_for(keep_float) if keep_float else []
        dtype = tf.float32 if io == "float" else getattr(tf, io)
        dbg = self.debugger
        try:
            blob = convert.mlir_quantize(
                dbg.calibrated_model,
                disable_per_channel=dbg.converter._experimental_disable_per_channel,  # noqa: SLF001
                fully_quantize=not nodes,  # float islands need float kernels allowed
                input_data_type=dtype, output_data_type=dtype,
                denylisted_nodes=nodes or None)
        except Exception as exc:
            raise ConversionError(f"selective int8 quantisation of {self.config.name} failed: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc
        if io == "uint8":
            blob = uint8_edges(blob)
        floats = float_ops(blob)
        return Selective(blob, list(keep_float), nodes, floats, full_integer=not floats,
                         not_honoured=_still_quantised(blob, nodes))


def layer_errors(model, config, calibration_images, heldout_images, top: int | None = None) -> list[dict]:
    """Per-tensor int8 error of `model` (batch 1), worst first; the first `top` if given."""
    stats = QuantDebugSession(model, config, calibration_images, heldout_images).layer_stats()
    return stats[:top] if top else stats


def selective_int8(model, config, calibration_images, heldout, keep_float_layers, io: str = "uint8",
                   session: QuantDebugSession | None = None) -> Selective:
    """int8 TFLite keeping `keep_float_layers` (Keras layer or TFLite tensor names) in float.

    `heldout`: held-out images (or a SegData) the session ranks layers on. The result is not a
    full-integer file (`full_integer` is False whenever a float op is left): say so in reports.
    """
    images = getattr(heldout, "images", heldout)
    session = session or QuantDebugSession(model, config, calibration_images, images)
    return session.quantize(list(keep_float_layers), io=io)


def _evaluate_blob(blob: bytes, heldout, num_classes: int, reference_preds=None) -> dict:
    from exporter.parity import evaluate
    from exporter.runtimes import LiteRTRunner

    fd, path = tempfile.mkstemp(suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        return evaluate(LiteRTRunner(path, threads=2), heldout.images, heldout.masks, num_classes,
                        reference_preds=reference_preds)
    finally:
        os.unlink(path)


def worst_class_delta(iou: np.ndarray, reference_iou: np.ndarray) -> float:
    """The largest per-class IoU loss against the reference, as a (negative) delta (policy's rule,
    on per-class arrays); 0.0 when no class has both IoUs."""
    from exporter.policy import worst_class_drop

    worst = worst_class_drop(dict(enumerate(np.asarray(reference_iou, float).tolist())),
                             dict(enumerate(np.asarray(iou, float).tolist())))
    return -float(worst[1]) if worst else 0.0


def keep_float_auto(model, config, calibration_images, heldout, max_miou_drop: float = 0.003,
                    max_tries: int = 4, io: str = "uint8", session: QuantDebugSession | None = None,
                    reference: dict | None = None, max_class_drop: float | None = None) -> dict:
    """Greedily keep the worst-ranked layers in float until held-out mIoU is within
    `max_miou_drop` (a fraction) of the float model, and no class's IoU is more than
    `max_class_drop` below its float IoU (when given), trying at most `max_tries` layers.

    `heldout` is a SegData (images and masks). Returns {"keep_float", "met", "trials",
    "selective": Selective of the last file tried (or the full-integer one when it already meets
    the target), "reference_miou", "target_miou", "ranking"}.
    """
    from exporter.parity import evaluate
    from exporter.runtimes import KerasRunner

    session = session or QuantDebugSession(model, config, calibration_images, heldout.images)
    if reference is None:
        reference = evaluate(KerasRunner(model), heldout.images, heldout.masks, config.num_classes)
    target = reference["miou"] - max_miou_drop

    def meets(trial: dict) -> bool:
        return trial["miou"] >= target and (max_class_drop is None or trial["worst_class_delta"] >= -max_class_drop)

    ranking = session.layer_stats()
    candidates = []  # Keras layers in ranking order, each once
    for row in ranking:
        if row["layer"] not in candidates:
            candidates.append(row["layer"])
    keep: list[str] = []
    skipped: list[str] = []  # layers the quantiser would not keep float
    trials = []
    result = session.quantize([], io=io)
    pending = iter(candidates)
    for attempt in range(max_tries + 1):
        scores = _evaluate_blob(result.blob, heldout, config.num_classes, reference["preds"])
        worst = worst_class_delta(scores["per_class_iou"], reference["per_class_iou"])
        trials.append({"keep_float": list(keep), "miou": scores["miou"],
                       "miou_delta": scores["miou"] - reference["miou"], "agreement": scores["agreement"],
                       "worst_class_delta": worst, "float_ops": len(result.float_ops)})
        if meets(trials[-1]) or attempt == max_tries:
            break
        for layer in pending:
            trial = session.quantize([*keep, layer], io=io)
            if set(session.nodes_for([layer])) <= set(trial.not_honoured):
                skipped.append(layer)
                continue
            keep.append(layer)
            result = trial
            break
        else:
            break  # every candidate tried
    return {"keep_float": keep, "skipped": skipped, "met": meets(trials[-1]), "trials": trials,
            "selective": result, "reference_miou": reference["miou"], "target_miou": target,
            "ranking": ranking}
