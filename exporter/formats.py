"""The format table: one row per output variant, and the one place artifact names are built.

File names, the CLI's `--precision` choices, the report's rows and which checks apply all derive
from these rows. Adding a TFLite precision is one `Variant` row here and one converter recipe
(`configure`, optionally `convert`) in exporter/convert/tflite.py: see `register`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}

# The file roles besides the shipped one. With --qat both int8 files are measured: the better one
# ships as MODEL_int8.tflite, the other keeps MODEL_int8_<method>.tflite. --keep-float's file with
# float layers is MODEL_int8_mixed.tflite, its recipe MODEL_int8_mixed.recipe.json.
ALTERNATIVE = "alternative"  # measured beside the shipped file of the same precision; reported, not gated
SELECTIVE = "selective"  # int8 with layers kept float (--keep-float)
PEER = "peer"  # what another tool makes of the same float file (exporter.stages.peers); reported, never recommended
# Under a non-default output contract (exporter.output_contract): the float32 file of the DEFAULT contract
# (the model as trained, final resize and activation in it), MODEL_float32_default_contract.tflite. The
# speed check's baseline (exporter.policy.speed_baseline); measured, never recommended.
CONTRACT_BASELINE = "default_contract"


@dataclasses.dataclass(frozen=True)
class Variant:
    format: str  # "tflite" or "onnx"
    precision: str
    description: str  # what the file stores and computes in
    calibrated: bool = False  # needs representative samples (post-training quantisation)
    accuracy_gate: bool = False  # held to the model's int8 targets (exporter.policy)
    gpu_candidate: bool = False  # float kernels: checked for GPU-delegate compatibility
    integer_io: bool = False  # takes --io: uint8/int8 pixels in and scores out (full-integer files)
    full_integer: bool = False  # every op computes in integers (int8 or int16 activations): checked for float ops
    # TFLite recipe: configure(converter, tf, io) sets the converter's options for this precision;
    # convert(converter, calibration_images, io, range_percentile) replaces converter.convert().
    configure: Callable | None = None
    convert: Callable | None = None
    cli_flag: str | None = None  # the old boolean flag that also asks for it (--int8, --fp16, ...)
    method: str = "ptq"  # the report's method: "none" where nothing is quantised (float32, float16 weights)

    @property
    def key(self) -> tuple[str, str]:
        return self.format, self.precision


_TABLE: dict[tuple[str, str], Variant] = {}


def register(variant: Variant) -> Variant:
    """Add a row (a new precision is one call here plus its recipe functions)."""
    if variant.format not in SUFFIX:
        raise ValueError(f"unknown format {variant.format!r}")
    _TABLE[variant.key] = variant
    return variant


def unregister(fmt: str, precision: str) -> None:
    _TABLE.pop((fmt, precision), None)


def variant(fmt: str, precision: str) -> Variant:
    try:
        return _TABLE[(fmt, precision)]
    except KeyError:
        raise ValueError(f"no {fmt} variant {precision!r}") from None


def tflite_precisions() -> tuple[str, ...]:
    """The `--precision` choices, in the order files are written (float32 first)."""
    return tuple(p for f, p in _TABLE if f == "tflite")


def artifact_name(model: str, precision: str, fmt: str = "tflite", role: str | None = None) -> str:
    """`<model>_<precision>[_<role>]<suffix>` (DESIGN.md's contract); every artifact name comes from here."""
    if fmt == "tflite":
        variant(fmt, precision)  # unknown precisions fail here, not in a file name
    tail = f"_{role}" if role else ""
    return f"{model}_{precision}{tail}{SUFFIX[fmt]}"


def recipe_name(model: str) -> str:
    """The --keep-float recipe written beside MODEL_int8_mixed.tflite."""
    return f"{model}_int8_mixed.recipe.json"


def baseline_name(model: str, fmt: str = "tflite") -> str:
    """The float32 file every ratio and agreement is measured against."""
    return artifact_name(model, "float32", fmt)


def contract_baseline_name(model: str) -> str:
    """The default contract's float32 file a non-default-contract run writes beside its own (CONTRACT_BASELINE)."""
    return artifact_name(model, "float32", role=CONTRACT_BASELINE)


def parse_precisions(spec: str | None, flags: dict[str, bool] | None = None) -> tuple[str, ...]:
    """`--precision a,b` plus the old boolean flags -> the TFLite precisions to write (float32 always)."""
    from exporter.errors import ExporterError

    names = [x.strip() for x in (spec or "").split(",") if x.strip()]
    known = tflite_precisions()
    for name in names:
        if name not in known:
            raise ExporterError(f"--precision {name!r}: choose from {', '.join(known)}")
    by_flag = {v.cli_flag: v.precision for v in _TABLE.values() if v.cli_flag}
    names += [by_flag[flag] for flag, on in (flags or {}).items() if on]
    wanted = {"float32", *names}
    return tuple(p for p in known if p in wanted)


def _tflite_recipes():
    from exporter.convert import tflite as recipes

    return recipes


def _rows() -> None:
    r = _tflite_recipes()
    register(Variant("tflite", "float32", "float32 weights and activations", gpu_candidate=True,
                     configure=r.configure_float32, method="none"))
    register(Variant("tflite", "float16", "float16 weights, float32 compute on CPU (the GPU delegate's preferred "
                                          "input)", gpu_candidate=True, configure=r.configure_float16,
                     cli_flag="fp16", method="none"))
    register(Variant("tflite", "dynamic", "int8 weights, float activations (dynamic-range quantisation; "
                                          "depthwise weights float, which XNNPACK runs)", accuracy_gate=True,
                     configure=r.configure_dynamic, convert=r.convert_dynamic, cli_flag="dynamic"))
    register(Variant("tflite", "int8", "full-integer: int8 weights and activations", calibrated=True,
                     accuracy_gate=True, integer_io=True, full_integer=True, configure=r.configure_int8, convert=r.convert_int8, cli_flag="int8"))
    register(Variant("tflite", "int16x8", "int8 weights, int16 activations (float32 I/O)", calibrated=True,
                     accuracy_gate=True, full_integer=True, configure=r.configure_int16x8, cli_flag="int16x8"))
    register(Variant("onnx", "float32", "float32 ONNX (tf2onnx, opset 17)", method="none"))
    register(Variant("onnx", "int8", "int8 QDQ ONNX (ONNX Runtime static quantisation)", calibrated=True))


_rows()
