"""A foreign float TFLite file (MediaPipe's selfie segmenter, float16 weights behind DEQUANTIZE, the
custom op Convolution2DTransposeBias, no signature) made runnable and quantised: real files, no mocks.

The model comes from the mediapipe wheel (`selfie_segmentation.tflite`, 256x256x3 floats in [0, 1],
one sigmoid channel out); the folder is $SEGEXPORT_MEDIAPIPE_MODELS, default
<repo>/.cache/mediapipe-models. The photograph is matplotlib's grace_hopper.jpg; the held-out
samples are crops of it and the calibration samples their mirror images (one photograph is all the
installed packages ship with a person in it).
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("SEGEXPORT_MEDIAPIPE_MODELS", ROOT / ".cache" / "mediapipe-models"))
SELFIE = MODELS / "selfie_segmentation.tflite"


def _photo() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def original() -> bytes:
    if not SELFIE.is_file():
        pytest.skip(f"MediaPipe's float selfie segmenter missing ({SELFIE}); set SEGEXPORT_MEDIAPIPE_MODELS "
                    "to the folder holding selfie_segmentation.tflite (from the mediapipe wheel)")
    return SELFIE.read_bytes()


@pytest.fixture(scope="module")
def fixed(original):
    from architectures.importers.foreign.tflite_float import fix_float_tflite

    return fix_float_tflite(original, SELFIE.name)


@pytest.fixture(scope="module")
def photos():
    """(calibration, held-out) [N, 256, 256, 3] floats in [0, 1]: crops of the photograph, and
    their mirror images for calibration."""
    from PIL import Image

    path = _photo()
    if path is None:
        pytest.skip("matplotlib's sample photograph grace_hopper.jpg is not installed")
    image = Image.open(path).convert("RGB")
    w, h = image.size
    boxes = [(0, 0, w, h), (0, 0, w, w), (64, 64, w - 64, h - 64), (120, 20, w, h - 40), (0, 40, w - 120, h - 20)]
    held = np.stack([np.asarray(image.crop(b).resize((256, 256), Image.BILINEAR)) for b in boxes])
    held = held.astype(np.float32) / 255.0
    return np.ascontiguousarray(held[:, :, ::-1]), held


def _run(blob: bytes, xs: np.ndarray, preserve: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob, num_threads=2, experimental_preserve_all_tensors=preserve)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
    ys = []
    for x in xs:
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        ys.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(ys), interpreter


def _ops(blob: bytes) -> list[str]:
    from exporter.convert.flatbuffer import op_name, read_model

    model = read_model(blob)
    return [op_name(model, op) for op in model.subgraphs[0].operators]


def _mediapipe_transpose_conv(x, w, b, stride, same):
    """MediaPipe's Convolution2DTransposeBias kernel (transpose_conv_bias.cc), in float64 numpy:
    output size stride * (in - 1) + filter - pad_total, starting at -pad_total // 2, OHWI weights."""
    n, in_h, in_w, _ = x.shape
    outs, fh, fw, _ = w.shape
    pads = [max(0, f - (size - 1) % s - 1) if same else 0 for f, size, s in ((fh, in_h, stride[0]), (fw, in_w, stride[1]))]
    full = np.zeros((n, stride[0] * (in_h - 1) + fh, stride[1] * (in_w - 1) + fw, outs))
    for fy in range(fh):
        for fx in range(fw):
            full[:, fy:fy + stride[0] * (in_h - 1) + 1:stride[0], fx:fx + stride[1] * (in_w - 1) + 1:stride[1]] += \
                np.einsum("nhwc,oc->nhwo", x.astype(np.float64), w[:, fy, fx, :].astype(np.float64))
    top, left = pads[0] // 2, pads[1] // 2
    return full[:, top:full.shape[1] - pads[0] + top, left:full.shape[2] - pads[1] + left] + b


def _one_custom_op_model(in_hw, filter_hw, stride, padding, custom_code=b"Convolution2DTransposeBias", seed=0):
    """A file holding one Convolution2DTransposeBias op with float16 weights behind DEQUANTIZE
    (MediaPipe's layout), for sizes where SAME padding is asymmetric. Returns (blob, weights, bias)."""
    from exporter.convert.flatbuffer import schema, write_model

    fb = schema()
    rng = np.random.default_rng(seed)
    c_in, c_out = 3, 2
    w = rng.normal(size=(c_out, *filter_hw, c_in)).astype(np.float16)
    b = rng.normal(size=(c_out,)).astype(np.float16)
    pads = [max(0, f - (n - 1) % s - 1) if padding == 1 else 0 for f, n, s in zip(filter_hw, in_hw, stride)]
    out_hw = [s * (n - 1) + f - p for n, f, s, p in zip(in_hw, filter_hw, stride, pads)]

    model = fb.ModelT()
    model.version = 3
    model.buffers = [fb.BufferT()]

    def buffer(data: bytes | None) -> int:
        buf = fb.BufferT()
        if data is not None:
            buf.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buf)
        return len(model.buffers) - 1

    def tensor(name, shape, kind, data=None):
        t = fb.TensorT()
        t.name, t.shape, t.type = name.encode(), np.asarray(shape, np.int32), kind
        t.buffer = buffer(data) if data is not None else 0
        return t

    f32, f16 = fb.TensorType.FLOAT32, fb.TensorType.FLOAT16
    sg = fb.SubGraphT()
    sg.tensors = [tensor("x", (1, *in_hw, c_in), f32), tensor("w16", w.shape, f16, w.tobytes()),
                  tensor("b16", b.shape, f16, b.tobytes()), tensor("w", w.shape, f32), tensor("b", b.shape, f32),
                  tensor("y", (1, *out_hw, c_out), f32)]
    sg.inputs, sg.outputs = np.asarray([0], np.int32), np.asarray([5], np.int32)
    deq, custom = fb.OperatorCodeT(), fb.OperatorCodeT()
    deq.builtinCode = deq.deprecatedBuiltinCode = fb.BuiltinOperator.DEQUANTIZE
    custom.builtinCode = custom.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    custom.customCode = custom_code
    deq.version = custom.version = 1
    model.operatorCodes = [deq, custom]
    ops = []
    for src, dst in ((1, 3), (2, 4)):
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, np.asarray([src], np.int32), np.asarray([dst], np.int32)
        ops.append(op)
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 1, np.asarray([0, 3, 4], np.int32), np.asarray([5], np.int32)
    op.customOptions = np.frombuffer(struct.pack("<3i", padding, stride[1], stride[0]), np.uint8)
    ops.append(op)
    sg.operators = ops
    model.subgraphs = [sg]
    return write_model(model), w.astype(np.float32), b.astype(np.float32)


# --- the fixes -----------------------------------------------------------------------------------

def test_fixed_file_runs_and_keeps_metadata(original, fixed):
    from ai_edge_litert.interpreter import Interpreter

    from exporter.metadata import read_metadata

    blob, fixes = fixed
    assert len(fixes) == 3, fixes
    assert "float16" in fixes[0] and "TRANSPOSE_CONV" in fixes[1] and "serving_default" in fixes[2]
    ops = _ops(blob)
    assert "DEQUANTIZE" not in ops and "CUSTOM" not in ops and ops.count("TRANSPOSE_CONV") == 1
    signatures = Interpreter(model_content=blob).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["input_1"], "outputs": ["activation_10"]}}
    assert read_metadata(blob) == read_metadata(original)  # the MediaPipe model card
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.read("labels.txt") == b"selfie\n"


def test_float16_fold_equals_the_dequantised_graph(original, fixed, photos):
    """The folded file computes what the file with its DEQUANTIZE ops computes (only the custom op
    rewritten, so LiteRT can run it), and every folded constant is its float16 value widened."""
    from architectures.importers.foreign import tflite_float as tf_float
    from exporter.convert.flatbuffer import read_model, schema, write_model

    fb = schema()
    reference = tf_float._read(original, "ref")
    tf_float._rewrite_custom_ops(reference, fb, "ref")
    tf_float._compact(reference)
    tf_float._add_signature(reference, fb)
    reference_blob = write_model(reference)
    assert _ops(reference_blob).count("DEQUANTIZE") == 110

    blob, _ = fixed
    _, held = photos
    want, _ = _run(reference_blob, held[:2])
    got, _ = _run(blob, held[:2])
    np.testing.assert_allclose(got, want, atol=1e-6)

    src = read_model(original)
    halves = {t.name: np.frombuffer(bytes(bytearray(src.buffers[t.buffer].data)), "<f2")
              for t in src.subgraphs[0].tensors if t.type == fb.TensorType.FLOAT16}
    out = read_model(blob)
    folded = {t.name: np.frombuffer(bytes(bytearray(out.buffers[t.buffer].data)), "<f4")
              for t in out.subgraphs[0].tensors if t.name in halves}
    assert len(folded) == len(halves) == 110
    assert all(out.subgraphs[0].tensors[i].type == fb.TensorType.FLOAT32 for i in range(len(out.subgraphs[0].tensors))
               if out.subgraphs[0].tensors[i].name in halves)
    for name, half in halves.items():
        np.testing.assert_array_equal(folded[name], half.astype(np.float32))


def test_transpose_conv_matches_mediapipe_kernel_in_the_model(fixed, photos):
    """In the real model: TRANSPOSE_CONV's output equals MediaPipe's kernel (numpy) on its input."""
    blob, _ = fixed
    _, held = photos
    _, interpreter = _run(blob, held[:1], preserve=True)
    tensors = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
    x = interpreter.get_tensor(tensors["add_13__xeno_compat__1"])
    w, b = interpreter.get_tensor(tensors["segment/Kernel"]), interpreter.get_tensor(tensors["segment/Bias"])
    y = interpreter.get_tensor(tensors["segment"])
    want = _mediapipe_transpose_conv(x, w, b, (2, 2), same=True)
    assert y.shape == want.shape == (1, 256, 256, 1)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("in_hw,filter_hw,stride,padding", [
    ((5, 6), (3, 3), (2, 2), 1),  # SAME: pad 2 rows (offset 1), 1 column (offset 0)
    ((4, 5), (4, 3), (3, 2), 1),  # SAME with uneven strides
    ((5, 6), (3, 2), (2, 3), 2),  # VALID
])
def test_transpose_conv_padding_and_strides(in_hw, filter_hw, stride, padding):
    from architectures.importers.foreign.tflite_float import fix_float_tflite

    blob, w, b = _one_custom_op_model(in_hw, filter_hw, stride, padding)
    out, fixes = fix_float_tflite(blob, "tiny.tflite")
    assert _ops(out) == ["TRANSPOSE_CONV"], fixes
    x = np.random.default_rng(1).normal(size=(1, *in_hw, 3)).astype(np.float32)
    got, _ = _run(out, x)
    want = _mediapipe_transpose_conv(x, w, b, stride, same=padding == 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


# --- quantised files ---------------------------------------------------------------------------

@pytest.mark.parametrize("precision,floor", [
    ("int8", 0.95), ("int16x8", 0.98), ("dynamic", 0.98), ("weight_only", 0.98), ("float16", 0.999)])
def test_quantised_files_run_and_agree(fixed, photos, precision, floor):
    from exporter.convert.aeq import quantise_tflite

    blob, _ = fixed
    calibration, held = photos
    quantised = quantise_tflite(blob, precision, calibration if precision in ("int8", "int16x8") else None)
    assert len(quantised) < len(blob)
    want, _ = _run(blob, held)
    got, _ = _run(quantised, held)  # float32 in and out for every precision (asserted in _run)
    agreement = float(((got > 0.5) == (want > 0.5)).mean())
    assert agreement >= floor, f"{precision}: {agreement:.4f} of pixels agree with the float file"


def test_keep_float_leaves_ops_float(fixed, photos):
    from exporter.convert.aeq import quantise_tflite
    from exporter.convert.flatbuffer import read_model, schema

    blob, _ = fixed
    calibration, held = photos
    quantised = quantise_tflite(blob, "int8", calibration, keep_float=["LOGISTIC"], int16=["TRANSPOSE_CONV"])
    model = read_model(quantised)
    sg = model.subgraphs[0]
    fb = schema()
    for op in sg.operators:
        name = _ops(quantised)[sg.operators.index(op)]
        if name == "LOGISTIC":
            assert sg.tensors[op.outputs[0]].type == fb.TensorType.FLOAT32
        if name == "TRANSPOSE_CONV":
            assert sg.tensors[op.outputs[0]].type == fb.TensorType.INT16
    got, _ = _run(quantised, held[:2])
    assert got.shape == (2, 256, 256, 1)


# --- bad files: one line naming the file ---------------------------------------------------------

def _error(blob: bytes, name: str) -> str:
    from architectures.importers.foreign.errors import ForeignModelError
    from architectures.importers.foreign.tflite_float import fix_float_tflite

    with pytest.raises(ForeignModelError) as caught:
        fix_float_tflite(blob, name)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(name + ": ") and len(message) < 200, message
    assert caught.value.exit_code == 2
    return message


def test_bad_files_raise_one_line(original, fixed, photos):
    from exporter.convert.aeq import quantise_tflite

    assert "truncated" in _error(original[: len(original) // 2], "half.tflite")
    assert "truncated" in _error(original[:-1], "cut.tflite")  # the appended labels zip cut short
    assert "not a TFLite flatbuffer" in _error(b"a text file renamed\n" * 20, "notes.tflite")
    int8 = quantise_tflite(fixed[0], "int8", photos[0][:2])
    assert "already quantised" in _error(int8, "selfie_int8.tflite")


def test_unknown_custom_op_is_refused():
    blob, _, _ = _one_custom_op_model((4, 4), (2, 2), (2, 2), 1, custom_code=b"MyFancyUpsample")
    assert "custom op 'MyFancyUpsample' has no builtin equivalent" in _error(blob, "fancy.tflite")


def test_xnnpack_rewrites_compute_the_same(fixed, photos):
    """The exact float rewrites for XNNPACK (standalone RELUs fused, TRANSPOSE_CONV 2x2/2 as
    CONV_2D 1x1 + DEPTH_TO_SPACE) leave the float outputs as they were."""
    from exporter.convert.xnnpack_rewrites import fuse_activations, transpose_conv_to_depth_to_space

    blob, _ = fixed
    _, held = photos
    fused, lines = fuse_activations(blob)
    rewritten, more = transpose_conv_to_depth_to_space(fused)
    assert len(lines) == len(more) == 1
    ops = _ops(rewritten)
    assert "RELU" not in ops and "TRANSPOSE_CONV" not in ops and ops.count("DEPTH_TO_SPACE") == 1
    want, _ = _run(blob, held[:2])
    got, _ = _run(rewritten, held[:2])
    np.testing.assert_allclose(got, want, atol=1e-5)
