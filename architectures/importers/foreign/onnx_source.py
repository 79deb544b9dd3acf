"""ONNX files for `convert --from`: a float32 TFLite through onnx2tf that keeps the file's own
input and output contract, and int8 ONNX of the file as it is.

The contract kept: an app that feeds the ONNX file feeds the TFLite file the same tensor (same
layout, same normalisation, float32) and reads the same tensor back. onnx2tf turns the graph into
NHWC inside; `keep_ncw_or_nchw_or_ncdhw_input_names` (NCHW inputs) or
`keep_nwc_or_nhwc_or_ndhwc_input_names` (NHWC inputs) keeps the input as the file has it (one
TRANSPOSE inside the TFLite graph), and the output onnx2tf hands back NHWC (its
`model.onnx_output_layouts`) is transposed back here, in the signature function. The TFLite file
is converted here from onnx2tf's Keras model (builtin ops only, a `serving_default` signature
keyed by the ONNX names), not taken from onnx2tf's own files (those allow Flex ops and cost a
SavedModel and a float16 conversion more), and is checked against ONNX Runtime on one input.

onnx2tf prints a great deal and calls `sys.exit` on some failures: both are caught here. Its
output is shown when the `onnx2tf` logger is enabled for INFO or SEGEXPORT_ONNX2TF_VERBOSE=1.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from architectures.importers.foreign.errors import ForeignModelError
from exporter.errors import first_line

ENGINE = "onnx2tf 1.29.24"
# The TFLite output may differ from ONNX Runtime's by float rounding only: a max abs difference
# above this fraction of the output's range means a wrong conversion, not rounding.
MAX_RELATIVE_DIFF = 1e-3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def onnx_to_float_tflite(path: Path, workdir: Path) -> tuple[bytes, dict]:
    """(float32 TFLite flatbuffer, facts) for the ONNX segmentation model at `path`, converted by
    onnx2tf in `workdir` (created; the user's file is never written).

    facts: {"engine": "onnx2tf 1.29.24", "input_layout": "NCHW"|"NHWC", "output_layout":
    "NCHW"|"NHWC", "input_name", "output_name", "input_shape", "output_shape" (lists, batch 1),
    "max_abs_diff" (TFLite vs ONNX Runtime on one seeded normal input), "notes": [str, ...]}.
    The TFLite's input and output have the ONNX file's names (made TF-safe), shapes and layouts.
    Raises ForeignModelError (one line: file name and cause) for anything it cannot convert.
    """
    path, workdir = Path(path), Path(workdir)
    name = path.name
    model = _load(path)
    contract = _contract(name, model)
    notes = list(contract.pop("notes"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "source.onnx"
    fixed = _with_batch_one(model, contract["input_name"])
    try:
        import onnx

        onnx.save(fixed, str(source))  # external data (if any) inlined; onnx2tf rewrites its input file
    except Exception as exc:
        raise ForeignModelError(f"{name}: cannot copy the model for conversion: {first_line(exc)}") from exc
    keras_model = _onnx2tf(name, source, workdir / "onnx2tf", contract)
    blob, transposed = _to_tflite(name, keras_model, contract)
    if contract["input_layout"] == "NCHW":
        notes.append("input kept NCHW as in the ONNX file (onnx2tf keep_ncw_or_nchw_or_ncdhw_input_names): "
                     "a TRANSPOSE to NHWC at the start")
    if transposed:
        notes.append("onnx2tf computes the output NHWC; a TRANSPOSE at the end gives it back in the ONNX "
                     f"file's {contract['output_layout']} layout")
    diff = _check_against_onnxruntime(name, fixed, blob, contract)
    notes.append(f"checked against ONNX Runtime on one input: max abs difference {diff:.2e}")
    facts = {"engine": ENGINE, "input_layout": contract["input_layout"],
             "output_layout": contract["output_layout"], "input_name": contract["tf_input_name"],
             "output_name": contract["tf_output_name"], "input_shape": contract["input_shape"],
             "output_shape": contract["output_shape"], "max_abs_diff": diff, "notes": notes}
    return blob, facts


def open_source(path: Path, kind: str, work: Path, *, name: str, input_norm, labels, output):
    """The `ForeignModel` of an .onnx file (`architectures.importers.foreign`): float32 TFLite by
    onnx2tf (`onnx_to_float_tflite`), quantised TFLite by AI Edge Quantizer from it, ONNX Runtime
    on the original file as the reference, int8 ONNX by `quantise_foreign_onnx`."""
    from architectures.importers.foreign import (Contract, ForeignModel, check_head, class_names, normalisation,
                                                 output_kind)
    from architectures.importers.foreign.tflite_source import _engine as quantizer_engine
    from exporter.progress import say

    path = Path(path)
    blob, facts = onnx_to_float_tflite(path, Path(work) / "onnx2tf")
    if facts["input_layout"] != facts["output_layout"]:
        raise ForeignModelError(f"{path.name}: input {facts['input_layout']} {facts['input_shape']} but output "
                                f"{facts['output_layout']} {facts['output_shape']}: both NCHW or both NHWC are supported")
    channels_first = facts["input_layout"] == "NCHW"
    in_shape, out_shape = facts["input_shape"], facts["output_shape"]
    if (in_shape[1] if channels_first else in_shape[3]) != 3:
        raise ForeignModelError(f"{path.name}: input {in_shape} is not RGB; --from takes RGB image models")
    ih, iw = (in_shape[2], in_shape[3]) if channels_first else (in_shape[1], in_shape[2])
    nhwc = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]] if channels_first else out_shape
    h, w, c = check_head(nhwc, path.name)
    model = _load(path)
    mean, std, norm_from = normalisation(input_norm, None, path.name)
    last = _last_op(model)
    out, out_from = output_kind(output, None, last, c, path.name)
    names, names_from = class_names(labels, None, c, path.name)
    contract = Contract(height=ih, width=iw, channels_first=channels_first, mean=mean, std=std, norm_source=norm_from,
                        head=0, channels=c, output=out, output_source=out_from, labels=names, labels_source=names_from)
    fixes = [n for n in facts["notes"] if not n.startswith("checked against")]
    say(f"{path.name}: ONNX, converted by {ENGINE}; input {contract.describe_input()}, output "
        f"{out_shape} {facts['output_layout']} {out} ({out_from}); {facts['notes'][-1]}")

    def quantise(precision: str, calibration: np.ndarray | None) -> bytes:
        from exporter.convert.aeq import quantise_tflite

        return quantise_tflite(blob, precision, calibration)

    def reference():
        import onnxruntime as ort

        session = ort.InferenceSession(_with_batch_one(model, facts_input).SerializeToString(),
                                       providers=["CPUExecutionProvider"])

        def predict(pixels):
            x = contract.inputs(pixels)
            y = np.concatenate([session.run(None, {facts_input: x[i:i + 1]})[0] for i in range(len(x))])
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1) if channels_first else y, np.float32)
        return predict

    initialisers = {t.name for t in model.graph.initializer}
    facts_input = next(i.name for i in model.graph.input if i.name not in initialisers)
    return ForeignModel(path=path, kind=kind, name=name, engine=f"{ENGINE} + {quantizer_engine()}",
                        reference_description=f"ONNX Runtime {_ort_version()} on the original file",
                        float32=blob, contract=contract, fixes=fixes, metadata_source=None,
                        _quantise=quantise, _reference=reference, onnx_path=path)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _last_op(model) -> str | None:
    """The op type producing the graph's output, past Identity/Reshape/Transpose (e.g. "softmax")."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tensor = model.graph.output[0].name
    for _ in range(8):
        node = producer.get(tensor)
        if node is None:
            return None
        if node.op_type not in ("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze"):
            return node.op_type.lower()
        tensor = node.input[0]
    return None


def quantise_foreign_onnx(onnx_path: Path, calibration: np.ndarray, per_tensor: bool = False,
                          range_percentile: float | None = None) -> bytes:
    """Static int8 QDQ ONNX of the foreign file at `onnx_path` (`quantise_onnx`'s recipe: int8
    weights in a 7-bit range, uint8 activations, percentile ranges), with the file's own float32
    input and output (name, layout, normalisation) kept. `calibration` is [N, ...] in the model's
    own input contract, one sample per row (e.g. [N, 3, H, W] ImageNet-normalised floats)."""
    from exporter.convert.onnx import quantise_onnx
    from exporter.convert.ranges import DEFAULT_PERCENTILE
    from exporter.errors import ConversionError

    onnx_path = Path(onnx_path)
    model = _load(onnx_path)
    contract = _contract(onnx_path.name, model)
    calibration = np.asarray(calibration, dtype=np.float32)
    want = tuple(contract["input_shape"][1:])
    if calibration.ndim != 4 or tuple(calibration.shape[1:]) != want:
        raise ForeignModelError(f"{onnx_path.name}: calibration batch is {list(calibration.shape)}, the model "
                                f"takes [N, {', '.join(map(str, want))}] ({contract['input_layout']})")
    blob = _with_batch_one(model, contract["input_name"]).SerializeToString()
    try:
        return quantise_onnx(blob, calibration, contract["input_name"], per_tensor=per_tensor,
                             range_percentile=DEFAULT_PERCENTILE if range_percentile is None else range_percentile)
    except ConversionError as exc:
        raise ForeignModelError(f"{onnx_path.name}: {first_line(exc)}") from exc


def _load(path: Path):
    """The checked ModelProto at `path`, or a one-line refusal."""
    import onnx

    name = path.name
    if not path.is_file():
        raise ForeignModelError(f"{name}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ForeignModelError(f"{name}: not an ONNX model, or a truncated one ({first_line(exc)})") from exc
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise ForeignModelError(f"{name}: not an ONNX model, or a truncated one (no graph in it)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ForeignModelError(f"{name}: not a valid ONNX model, or a truncated one ({first_line(exc)})") from exc
    return model


def _dims(value_info) -> list:
    """Dims of a graph input/output: ints, or the symbolic name (str) / None where not fixed."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in shape.dim]


def _layout(shape: list[int], fallback: str, image: tuple[int, int] | None = None) -> str:
    """NCHW or NHWC read from a 4-D shape: the channel axis is the one that differs from the two
    spatial ones (or the smaller end axis), or the one that leaves the `image`'s aspect ratio
    (H, W of the input); `fallback` where the shape cannot tell."""
    _, a, b, c = shape
    if b == c != a or (a <= 4 < c):
        return "NCHW"
    if a == b != c or (c <= 4 < a):
        return "NHWC"
    if image is not None:
        aspect = image[0] / image[1]
        chw, hwc = abs(np.log(b / c / aspect)), abs(np.log(a / b / aspect))
        if min(chw, hwc) < 0.05 and abs(chw - hwc) > 0.05:
            return "NCHW" if chw < hwc else "NHWC"
    return fallback


def _tf_name(name: str, fallback: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return safe if safe and safe[0].isalpha() else (f"{fallback}_{safe}" if safe else fallback)


def _contract(name: str, model) -> dict:
    """The file's input/output contract, or a refusal: one float32 4-D image input of a fixed
    size, one 4-D output (shape from one ONNX Runtime run)."""
    import onnx

    initialisers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialisers]
    notes = []
    if len(inputs) != 1:
        raise ForeignModelError(f"{name}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}): "
                                "a segmentation model takes one image")
    if len(model.graph.output) != 1:
        outs = ", ".join(o.name for o in model.graph.output)
        raise ForeignModelError(f"{name}: {len(model.graph.output)} outputs ({outs}): export the class "
                                "scores only (one output [1, C, H, W] or [1, H, W, C])")
    inp = inputs[0]
    elem = inp.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise ForeignModelError(f"{name}: input '{inp.name}' is {onnx.helper.tensor_dtype_to_np_dtype(elem)}, "
                                "not float32")
    dims = _dims(inp)
    if len(dims) != 4:
        raise ForeignModelError(f"{name}: input '{inp.name}' is {len(dims)}-D {dims}: expected an image "
                                "[1, 3, H, W] or [1, H, W, 3]")
    if dims[0] != 1:
        if isinstance(dims[0], int):
            raise ForeignModelError(f"{name}: input batch is {dims[0]}: export with batch 1")
        notes.append(f"dynamic batch '{dims[0]}' fixed to 1")
    if not all(isinstance(d, int) for d in dims[1:]):
        raise ForeignModelError(f"{name}: input '{inp.name}' has a dynamic size {['?' if not isinstance(d, int) else d for d in dims]}: "
                                "give a fixed input size (export without dynamic H, W axes)")
    input_shape = [1, *dims[1:]]
    input_layout = _layout(input_shape, "NCHW")
    if input_shape[1 if input_layout == "NCHW" else 3] not in (1, 3, 4):
        notes.append(f"input has {input_shape[1 if input_layout == 'NCHW' else 3]} channels")
    output_shape = _output_shape(name, model, inp.name, input_shape)
    out = model.graph.output[0]
    if len(output_shape) != 4:
        raise ForeignModelError(f"{name}: output '{out.name}' is {len(output_shape)}-D {output_shape}: "
                                "not a segmentation model (expected [1, C, H, W] or [1, H, W, C] class scores)")
    spatial = tuple(input_shape[2:]) if input_layout == "NCHW" else tuple(input_shape[1:3])
    output_layout = _layout(output_shape, input_layout, spatial)
    return {"input_name": inp.name, "output_name": out.name, "input_shape": input_shape,
            "output_shape": output_shape, "input_layout": input_layout, "output_layout": output_layout,
            "tf_input_name": _tf_name(inp.name, "input"), "tf_output_name": _tf_name(out.name, "output"),
            "notes": notes}


def _output_shape(name: str, model, input_name: str, input_shape: list[int]) -> list[int]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(_with_batch_one(model, input_name).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        value = session.run(None, {input_name: np.zeros(input_shape, np.float32)})[0]
    except Exception as exc:
        raise ForeignModelError(f"{name}: ONNX Runtime cannot run it: {first_line(_strip_ort(exc))}") from exc
    return list(np.shape(value))


def _strip_ort(exc: Exception) -> str:
    """ORT's messages start with "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ..."; keep the cause."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc).strip())


def _with_batch_one(model, input_name: str):
    """A copy of `model` whose input batch is 1 (a no-op copy when it already is)."""
    import copy

    fixed = copy.deepcopy(model)
    for inp in fixed.graph.input:
        if inp.name == input_name:
            dim = inp.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_param")
            dim.dim_value = 1
    return fixed


def _verbose() -> bool:
    return os.environ.get("SEGEXPORT_ONNX2TF_VERBOSE") == "1" or logging.getLogger("onnx2tf").isEnabledFor(logging.INFO)


def _onnx2tf(name: str, source: Path, out_dir: Path, contract: dict):
    """onnx2tf's Keras model of `source` (input kept in the file's layout), its chatter captured."""
    import contextlib
    import io

    keep = {"keep_ncw_or_nchw_or_ncdhw_input_names" if contract["input_layout"] == "NCHW"
            else "keep_nwc_or_nhwc_or_ndhwc_input_names": [contract["input_name"]]}
    captured = io.StringIO()
    verbose = _verbose()
    quiet = contextlib.nullcontext() if verbose else _redirected(captured)
    # The input onnx2tf runs ONNX Runtime on to check each op's conversion: seeded values in the
    # file's own input shape (its default is a download, below).
    sample = out_dir.parent / "onnx2tf_sample_input.npy"
    np.save(sample, np.random.default_rng(0).standard_normal(contract["input_shape"]).astype(np.float32))
    try:
        import exporter.keras  # noqa: F401  (Keras 2 selected before TensorFlow loads)

        with _process_state_kept(), quiet, _no_download():
            import onnx2tf

            model = onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(out_dir),
                                    not_use_onnxsim=True, disable_model_save=True, non_verbose=not verbose,
                                    custom_input_op_name_np_data_path=[[contract["input_name"], str(sample)]],
                                    **keep)
    except (Exception, SystemExit) as exc:
        cause = _first_error(captured.getvalue()) or (first_line(exc) if not isinstance(exc, SystemExit)
                                                     else "onnx2tf stopped")
        raise ForeignModelError(f"{name}: onnx2tf cannot convert it: {cause}") from exc
    if model is None:
        raise ForeignModelError(f"{name}: onnx2tf cannot convert it: "
                                f"{_first_error(captured.getvalue()) or 'no model came back'}")
    return model


class _process_state_kept:
    """Undo what importing and running onnx2tf does to the whole process: at import it ignores
    every warning, seeds `random`, NumPy's and TensorFlow's global generators with 0, enables
    TensorFlow's op determinism, sets TF_CPP_MIN_LOG_LEVEL=3 and TensorFlow's logger to FATAL;
    `convert` sets CUDA_VISIBLE_DEVICES=-1."""

    _ENV = ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS", "CUDA_VISIBLE_DEVICES")

    def __enter__(self):
        import random
        import warnings

        from tensorflow.python.eager import context
        from tensorflow.python.framework import config

        self.filters = list(warnings.filters)
        self.random, self.numpy = random.getstate(), np.random.get_state()
        self.env = {key: os.environ.get(key) for key in self._ENV}
        self.tf_logger = logging.getLogger("tensorflow").level
        self.determinism = config.is_op_determinism_enabled()
        self.seed = context.global_seed()
        return self

    def __exit__(self, *exc):
        import random
        import warnings

        from tensorflow.python.eager import context
        from tensorflow.python.framework import config

        warnings.filters[:] = self.filters
        if hasattr(warnings, "_filters_mutated"):  # the module's cache of the filters
            warnings._filters_mutated()
        random.setstate(self.random)
        np.random.set_state(self.numpy)
        for key, value in self.env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        logging.getLogger("tensorflow").setLevel(self.tf_logger)
        if not self.determinism:
            config.disable_op_determinism()
        context.set_global_seed(self.seed)
        return False


class _no_download:
    """onnx2tf fetches 20 sample images from GitHub (into the current directory) whenever the
    graph's input ends in 3 channels (an NHWC input); here it gets seeded local ones instead."""

    def __enter__(self):
        import onnx2tf.onnx2tf as module

        self._module, self._original = module, module.download_test_image_data
        module.download_test_image_data = _sample_images
        return self

    def __exit__(self, *exc):
        self._module.download_test_image_data = self._original
        return False


def _sample_images() -> np.ndarray:
    """[20, 128, 128, 3] float32 in [0, 1]: smooth seeded colour fields, in place of onnx2tf's download."""
    coarse = np.random.default_rng(0).random((20, 8, 8, 3), dtype=np.float32)
    return np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)


class _redirected:
    """sys.stdout and sys.stderr into `buffer` (onnx2tf prints with print; native lines from
    TensorFlow's C++ are left to the CLI's fd-level filter, `exporter.quiet`)."""

    def __init__(self, buffer):
        import contextlib

        self._stack = contextlib.ExitStack()
        self._buffer = buffer

    def __enter__(self):
        import contextlib

        self._stack.enter_context(contextlib.redirect_stdout(self._buffer))
        self._stack.enter_context(contextlib.redirect_stderr(self._buffer))
        return self._buffer

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def _first_error(text: str) -> str | None:
    """The first line onnx2tf printed as an ERROR, without its colours and prefix."""
    for line in _ANSI.sub("", text).splitlines():
        line = line.strip()
        if line.startswith("ERROR:"):
            cause = line[len("ERROR:"):].strip()
            if cause:
                return cause[:200]
    return None


def _to_tflite(name: str, keras_model, contract: dict) -> tuple[bytes, bool]:
    """(float32 TFLite, whether an output TRANSPOSE was added): builtin ops only, one
    `serving_default` signature {tf_input_name: input} -> {tf_output_name: output}, both in the
    ONNX file's layouts."""
    from exporter.keras import tf

    onnx_out = contract["output_shape"]
    tf_out = [int(d) for d in keras_model.outputs[0].shape]
    tf_in = [int(d) for d in keras_model.inputs[0].shape]
    if tf_in != contract["input_shape"]:
        raise ForeignModelError(f"{name}: onnx2tf changed the input shape {contract['input_shape']} to {tf_in}")
    # onnx2tf says per output whether its tensor is the NHWC permutation of the ONNX one; by the
    # shapes where it does not say.
    layouts = getattr(keras_model, "onnx_output_layouts", None) or {}
    permuted = [onnx_out[0], onnx_out[2], onnx_out[3], onnx_out[1]]
    if contract["output_name"] in layouts:
        to_onnx_layout = bool(layouts[contract["output_name"]])
    else:
        to_onnx_layout = tf_out != onnx_out and tf_out == permuted
    if tf_out != (permuted if to_onnx_layout else onnx_out):
        raise ForeignModelError(f"{name}: onnx2tf's output {tf_out} is not the ONNX output {onnx_out}"
                                f"{' in NHWC' if to_onnx_layout else ''}")
    in_key, out_key = contract["tf_input_name"], contract["tf_output_name"]

    @tf.function(input_signature=[tf.TensorSpec(contract["input_shape"], tf.float32, name=in_key)])
    def serve(x):
        y = keras_model(x, training=False)
        if isinstance(y, (list, tuple)):
            y = y[0]
        return {out_key: tf.transpose(y, [0, 3, 1, 2]) if to_onnx_layout else y}

    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], tf.Module())
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        blob = converter.convert()
    except Exception as exc:
        raise ForeignModelError(f"{name}: the TFLite converter cannot convert onnx2tf's graph "
                                f"(builtin ops only): {first_line(exc)}") from exc
    return blob, to_onnx_layout


def _check_against_onnxruntime(name: str, model, blob: bytes, contract: dict) -> float:
    """Max abs difference of the TFLite file from ONNX Runtime on one seeded normal input; a
    ForeignModelError when it is beyond float rounding (a wrong conversion)."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    x = np.random.default_rng(0).standard_normal(contract["input_shape"]).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {contract["input_name"]: x})[0]
    try:
        runner = Interpreter(model_content=blob).get_signature_runner("serving_default")
        got = runner(**{contract["tf_input_name"]: x})[contract["tf_output_name"]]
    except Exception as exc:
        raise ForeignModelError(f"{name}: LiteRT cannot run the converted file: {first_line(exc)}") from exc
    if got.shape != want.shape:
        raise ForeignModelError(f"{name}: the converted file returns {list(got.shape)}, ONNX Runtime {list(want.shape)}")
    diff = float(np.max(np.abs(got - want)))
    scale = float(np.max(want) - np.min(want)) or 1.0
    if not np.isfinite(diff) or diff > MAX_RELATIVE_DIFF * scale:
        raise ForeignModelError(f"{name}: onnx2tf's conversion computes something else: max abs difference "
                                f"{diff:.3g} from ONNX Runtime on an output of range {scale:.3g}")
    return diff
