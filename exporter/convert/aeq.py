"""Quantising a float .tflite file with litert-quantizer (AI Edge Quantizer), for files we did not
build ourselves (`convert --from` a float TFLite file, after
`architectures.importers.foreign.tflite_float.fix_float_tflite`).

`quantise_tflite(float_blob, precision, calibration, keep_float, int16)` maps our precisions to the
quantizer's recipes:

| precision   | recipe                                   | calibration |
|-------------|------------------------------------------|-------------|
| int8        | static_wi8_ai8 (int8 weights per channel, int8 activations) | needed |
| int16x8     | static_wi8_ai16 (int8 weights, int16 activations)           | needed |
| dynamic     | dynamic_wi8_afp32 (int8 weights, activations quantised at run time) | - |
| weight_only | weight_only_wi8_afp32 (int8 weights dequantised to float)   | - |
| float16     | weight-only FLOAT_CASTING to 16 bits: float16 weights behind DEQUANTIZE, float compute | - |

Input and output of the static files: the quantizer leaves the graph's input and output tensors
float32 and puts a QUANTIZE op after the input and a DEQUANTIZE op before the output, so an int8
or int16x8 file keeps the original's real-valued contract (e.g. [0, 1] floats in, sigmoid scores
out) and an app that fed the float file feeds this one unchanged.

`keep_float` and `int16` name TFLite op types ("LOGISTIC", "TRANSPOSE_CONV", ...; the quantizer's
own names such as "CONV_2D_TRANSPOSE" work too) or output tensor names (exact names; a name
given as `re:<regex>` is a regular expression over the quantizer's op scope, the output tensor
names each followed by ";"). Those ops stay float (the quantizer inserts DEQUANTIZE/QUANTIZE
around them) or get int16 activations with int8 weights. Where rules overlap, a tensor-name rule
beats an op-type rule, and keep_float beats int16.

`ranges`: how the calibration samples set each activation tensor's range. "moving_average" is the
quantizer's own (each sample's min and max folded in with weight 0.05: a typical sample's range, so
the rarer wide samples saturate); "minmax" the smallest range that holds every calibration value.
On the trained SegFormer bench model the moving average put a LayerNorm's variance range at
[0, 9.50] where held-out samples reach 14.9 (so its RSQRT saturated, int8 and int16 alike).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from exporter.errors import ExporterError, first_line

PRECISIONS = ("int8", "int16x8", "dynamic", "weight_only", "float16")
STATIC = ("int8", "int16x8")
RANGES = ("moving_average", "minmax")

# TFLite builtin names that litert-quantizer spells differently
_OP_ALIASES = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}


def quantise_tflite(float_blob: bytes, precision: str, calibration: np.ndarray | None,
                    keep_float: Iterable[str] = (), int16: Iterable[str] = (),
                    ranges: str = "moving_average") -> bytes:
    """The quantised file of `float_blob` (a float32 TFLite file with a signature) at `precision`.

    `calibration` is a batch [N, ...] of the model's raw input tensors in its own input contract
    (e.g. [0, 1] floats for MediaPipe's selfie segmenter), needed for "int8" and "int16x8";
    `keep_float` / `int16` are per-op overrides, `ranges` the calibration rule (module docstring).
    """
    keep_float, int16 = list(keep_float), list(int16)
    if precision not in PRECISIONS:
        raise ExporterError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if ranges not in RANGES:
        raise ExporterError(f"unknown calibration ranges {ranges!r}; one of {', '.join(RANGES)}")
    if int16 and precision != "int8":
        raise ExporterError("int16 overrides apply to int8 files only")
    if precision in STATIC and (calibration is None or len(calibration) == 0):
        raise ExporterError(f"{precision} quantisation needs calibration inputs")

    import contextlib
    import io

    # The quantizer draws tqdm bars on stderr (calibration, parameters, transformations) whatever
    # enable_progress_report says: `convert` says what it is doing itself, and --quiet means quiet.
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            model = _quantise(float_blob, precision, calibration, keep_float, int16, ranges)
    except ExporterError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer's messages run long; keep the first line
        raise ExporterError(f"litert-quantizer could not make the {precision} file: {first_line(exc)}") from None
    if model is None:
        raise ExporterError(f"litert-quantizer returned no {precision} file")
    return inline_buffers(bytes(model))


def inline_buffers(blob: bytes) -> bytes:
    """The file with every buffer inside the flatbuffer. The quantizer writes constant data after
    the flatbuffer, addressed by offset, for larger models; every rewrite that reads and writes the
    object tree (metadata, exporter.convert.flatbuffer) keeps only what is inside, so those offsets
    would point past the end (LiteRT: "Constant buffer N specified an out of range offset")."""
    import numpy as np

    from exporter.convert.flatbuffer import read_model, write_model

    model = read_model(blob)
    moved = False
    for buf in model.buffers or []:
        if buf.offset > 1:
            buf.data = np.frombuffer(blob[buf.offset:buf.offset + buf.size], np.uint8)
            buf.offset = buf.size = 0
            moved = True
    return write_model(model) if moved else blob


def _quantise(float_blob: bytes, precision: str, calibration, keep_float: list, int16: list, ranges: str):
    from litert_quantizer import Quantizer, qtyping, recipe
    from litert_quantizer.algorithm_manager import AlgorithmName

    quantizer = Quantizer(bytearray(float_blob))
    if precision == "float16":
        quantizer.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16,
                                         algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        quantizer.load_quantization_recipe({
            "int8": recipe.static_wi8_ai8, "int16x8": recipe.static_wi8_ai16,
            "dynamic": recipe.dynamic_wi8_afp32, "weight_only": recipe.weight_only_wi8_afp32,
        }[precision]())
    if precision in STATIC:  # float32 input and output, QUANTIZE / DEQUANTIZE at the edges
        for edge in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            quantizer.update_quantization_recipe(".*", edge, algorithm_key=AlgorithmName.NO_QUANTIZE)
    for item in int16:
        regex, op = _scope(item, qtyping)
        quantizer.add_static_config(regex, op, activation_num_bits=16, weight_num_bits=8)
    for item in keep_float:
        regex, op = _scope(item, qtyping)
        quantizer.update_quantization_recipe(regex, op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    result = None
    if quantizer.need_calibration:
        data = _calibration_data(float_blob, calibration)
        if ranges == "minmax":
            result = _calibrate_minmax(quantizer, float_blob, data)
        else:
            result = quantizer.calibrate(data, num_threads=2)
    model = quantizer.quantize(result, enable_progress_report=False).quantized_model
    return model


def _calibrate_minmax(quantizer, float_blob: bytes, data: dict) -> dict:
    """The quantizer's calibration with its min/max rule in place of the moving average
    (`Quantizer.calibrate` takes no update rule; its Calibrator does)."""
    from litert_quantizer import calibrator
    from litert_quantizer.utils import qsv_utils

    calib = calibrator.Calibrator(float_blob, num_threads=2, qsv_update_func=qsv_utils.min_max_update)
    calib.calibrate(data, quantizer._recipe_manager)  # noqa: SLF001 - the recipe the Quantizer was given
    return calib.get_model_qsvs()


def calibration_inputs(images_uint8: np.ndarray, mean, std, layout: str = "NHWC") -> np.ndarray:
    """Images [N, H, W, C] uint8 as a model's float inputs: (pixel - mean) / std per channel, in
    `layout` ("NHWC" or "NCHW"). MediaPipe's selfie segmenter ([0, 1] floats) is mean 0, std 255."""
    x = (np.asarray(images_uint8, np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if layout == "NCHW":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if layout != "NHWC":
        raise ExporterError(f"unknown layout {layout!r}; NHWC or NCHW")
    return x


def _scope(item: str, qtyping) -> tuple[str, object]:
    """(output-tensor regex, op name) for a keep_float / int16 entry."""
    import re

    names = {op.value: op for op in qtyping.TFLOperationName}
    op_name = _OP_ALIASES.get(item, item)
    if op_name in names and op_name not in ("*", "INPUT", "OUTPUT"):
        return ".*", names[op_name]
    if item.startswith("re:"):
        return item[3:], qtyping.TFLOperationName.ALL_SUPPORTED
    # the quantizer matches an op's scope: its output tensor names, each followed by ";"
    return f"(^|;){re.escape(item)};", qtyping.TFLOperationName.ALL_SUPPORTED


def _calibration_data(float_blob: bytes, calibration: np.ndarray) -> dict:
    """{signature key: [{input name: one sample with batch 1}, ...]} for the quantizer."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=bytes(float_blob)).get_signature_list()
    if not signatures:
        raise ExporterError("the float file has no signature (fix it with fix_float_tflite first)")
    key, io = next(iter(signatures.items()))
    if len(io["inputs"]) != 1:
        raise ExporterError(f"calibration feeds one input; the model has {len(io['inputs'])}")
    name = io["inputs"][0]
    samples = np.asarray(calibration, np.float32)
    return {key: [{name: sample[None]} for sample in samples]}
