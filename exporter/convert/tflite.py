"""TFLite conversion, one recipe per precision.

float32: plain. int8: full-integer (TFLITE_BUILTINS_INT8 only, so a float op left behind fails
conversion instead of hiding in the file), calibrated on representative training samples,
uint8 pixels in and uint8 scores out by default (an app hands camera bytes straight in).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from exporter.convert.edges import quantize_before_resize
from exporter.convert.hybrid import float_weights_where_not_delegated
from exporter.convert.ranges import DEFAULT_PERCENTILE, check_percentile, clip_calibrated_ranges
from exporter.convert.signature import concrete_function
from exporter.errors import ConversionError

IO_TYPES = ("uint8", "int8", "float")


def _converter(model, config):
    from exporter.keras import tf

    fn = concrete_function(model, config)
    # An empty tf.Module as the trackable: given the Keras model, the converter first serialises
    # the whole model, which took 40-70 s per conversion even at 64x64 (about 5 s this way).
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], tf.Module())


def calibrated_converter(model, config, calibration_images, per_tensor: bool = False,
                         what: str = "int8 conversion"):
    """The post-training quantisation converter: calibrated on `calibration_images`, weights
    scaled per channel unless `per_tensor` (see `weight_scales`). to_tflite and the
    QuantizationDebugger session both start from it, so they quantise alike."""
    from exporter.keras import tf

    if calibration_images is None or not len(calibration_images):
        raise ConversionError(f"{what} needs representative samples")
    converter = _converter(model, config)
    converter.representative_dataset = representative(calibration_images)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel = per_tensor  # noqa: SLF001 - the converter's only switch
    return converter


def representative(images: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
    def gen():
        for image in images:
            yield [image[None].astype(np.float32)]

    return gen


def weight_scales(per_tensor: bool) -> str:
    """How int8 weights are scaled, as the report names it.

    Per-channel (the default) keeps accuracy on depthwise convs, whose channels differ widely in
    range, but stores a float scale and an int64 zero point per output channel for the weights and
    again for the int32 bias: ~28 bytes a channel, which on a depthwise-heavy model such as DeepLab
    (6.5k channels for 460k weights) adds half a byte per weight. Per-tensor stores one of each,
    and is what some NPU/DSP delegates require.
    """
    return "per-tensor" if per_tensor else "per-channel"


# One recipe per precision; the format table (exporter.formats) names them. A recipe sets the
# converter's options: configure(converter, tf, io).
def configure_float32(converter, tf, io: str) -> None:
    pass


def configure_float16(converter, tf, io: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def configure_dynamic(converter, tf, io: str) -> None:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]


def convert_dynamic(converter, calibration_images, io: str, range_percentile: float) -> bytes:
    """Hybrid ops XNNPACK has no kernel for keep float weights (exporter.convert.hybrid)."""
    return float_weights_where_not_delegated(converter.convert())


def configure_int8(converter, tf, io: str) -> None:
    # Only integer kernels allowed: a float op left behind fails here instead of hiding.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io not in IO_TYPES:
        raise ConversionError(f"unknown --io {io!r}; choose one of {', '.join(IO_TYPES)}")
    if io != "float":
        converter.inference_input_type = getattr(tf, io)
        converter.inference_output_type = getattr(tf, io)


def convert_int8(converter, calibration_images, io: str, range_percentile: float) -> bytes:
    """Percentile activation ranges (below 100), then cheap uint8 edges (uint8 I/O)."""
    if check_percentile(range_percentile) < 100.0:
        blob = _int8_with_ranges(converter, calibration_images, range_percentile, io)
    else:
        blob = converter.convert()
    return uint8_edges(blob) if io == "uint8" else blob


def configure_int16x8(converter, tf, io: str) -> None:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


def to_tflite(model, config, precision: str, calibration_images: np.ndarray | None = None,
              io: str = "uint8", per_tensor: bool = False, range_percentile: float = DEFAULT_PERCENTILE) -> bytes:
    """Convert a batch-1 Keras model at one precision of the format table (float I/O except int8's `io`).

    `per_tensor`: one int8 scale per weight tensor instead of one per output channel (see
    `weight_scales`). `range_percentile`: int8 activation ranges narrowed to this percentile of
    the calibration samples' values (`exporter.convert.ranges`; 100 keeps TFLite's min/max).
    """
    from exporter.formats import variant
    from exporter.keras import tf

    try:
        row = variant("tflite", precision)
    except ValueError:
        raise ConversionError(f"unknown precision {precision!r}") from None
    if row.calibrated:
        converter = calibrated_converter(model, config, calibration_images, per_tensor, what=f"{precision} conversion")
    else:
        converter = _converter(model, config)
    row.configure(converter, tf, io)
    try:
        if row.convert is not None:
            return row.convert(converter, calibration_images, io, range_percentile)
        return converter.convert()
    except ConversionError:
        raise
    except Exception as exc:  # the converter raises many types; the message is what matters
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConversionError(f"TFLite {precision} conversion of {config.name} failed: {first}") from exc


def uint8_edges(blob: bytes) -> bytes:
    """The uint8 pixel and score edges of a full-integer file, made cheap (every uint8 int8 file goes
    through here: post-training, QAT and --keep-float's selective ones)."""
    return quantize_before_resize(_pixels_in_as_bytes(blob))


def _int8_with_ranges(converter, calibration_images, percentile: float, io: str) -> bytes:
    """The converter's own int8 path (calibrate, then the MLIR quantiser) with the calibrated
    activation ranges narrowed to `percentile` in between; the converter has no hook there."""
    from tensorflow.lite.python import convert

    from exporter.keras import tf

    converter._experimental_calibrate_only = True  # noqa: SLF001 - stop after calibration
    calibrated = clip_calibrated_ranges(converter.convert(), calibration_images, percentile)
    dtype = tf.float32 if io == "float" else getattr(tf, io)
    # The arguments the converter's own int8 path passes (lite.py, `_quantize`).
    blob = convert.mlir_quantize(calibrated, disable_per_channel=converter._experimental_disable_per_channel,  # noqa: SLF001
                                 input_data_type=dtype, output_data_type=dtype)
    left = float_ops(blob)
    if left:  # TFLITE_BUILTINS_INT8 fails on a float op; the quantiser alone would keep it
        raise ConversionError(f"int8 quantisation left float ops: {', '.join(sorted(set(left)))}")
    return blob


def _pixels_in_as_bytes(model_content: bytes) -> bytes:
    """Give a uint8 input scale 1 and zero point 0, so the byte an app hands in is the pixel.

    The converter derives the input's scale from the calibration images' range: one that does not
    span exactly 0..255 gets a scale other than 1, and an app feeding camera bytes (MediaPipe does)
    would then feed rescaled pixels. The QUANTIZE op after the input requantises to the calibrated
    int8 parameters, so only pixels outside the calibrated range saturate, as they did before.
    """
    from exporter.convert.flatbuffer import op_name, read_model, schema, write_model

    model = read_model(model_content)
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    if tensor.type != schema().TensorType.UINT8 or tensor.quantization is None:
        return model_content
    consumers = {op_name(model, op) for op in graph.operators if graph.inputs[0] in list(op.inputs)}
    if consumers != {"QUANTIZE"}:
        return model_content
    tensor.quantization.scale = np.array([1.0], np.float32)
    tensor.quantization.zeroPoint = np.array([0], np.int64)
    return write_model(model)


# Ops that legitimately carry float tensors in a full-integer file: the I/O edges.
_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}


def op_histogram(model_content: bytes) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(op["op_name"] for op in _ops(model_content)))


def quant_param_bytes(model_content: bytes) -> int:
    """Bytes of the quantisation parameters stored per tensor: float32 scales, int64 zero points and
    float32 min/max, one of each per channel for per-channel weights (what the size check leaves out)."""
    from exporter.convert.flatbuffer import read_model

    total = 0
    for graph in read_model(model_content).subgraphs or []:
        for tensor in graph.tensors or []:
            q = tensor.quantization
            if q is None:
                continue
            total += sum(4 * len(v) for v in (q.scale, q.min, q.max) if v is not None)
            total += 8 * len(q.zeroPoint) if q.zeroPoint is not None else 0
    return total


def float_ops(model_content: bytes) -> list[str]:
    """Ops computing in float inside the file (excluding QUANTIZE/DEQUANTIZE at the edges)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_content,
                         experimental_op_resolver_type=_no_delegate_resolver())
    details = {t["index"]: t for t in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details():
        if op["op_name"] in _EDGE_OPS:
            continue
        tensors = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(details[i]["dtype"] == np.float32 for i in tensors if i in details):
            found.append(op["op_name"])
    return found


def _no_delegate_resolver():
    from ai_edge_litert.interpreter import OpResolverType

    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _ops(model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_content,
                         experimental_op_resolver_type=_no_delegate_resolver())
    return interp._get_ops_details()
