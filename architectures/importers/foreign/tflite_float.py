"""A float .tflite file from elsewhere (MediaPipe's, a converter's) made into one that LiteRT's stock
interpreter and litert-quantizer both take, computing the same function.

`fix_float_tflite(blob, name)` returns the fixed flatbuffer and one human line per fix:

- float16 constants behind DEQUANTIZE ops (how MediaPipe ships its float models) are folded back to
  float32 constants: the DEQUANTIZE op goes, its consumers read the float32 constant directly (the
  values are the exact float16 values, widened);
- MediaPipe's custom op `Convolution2DTransposeBias` (the transposed convolution with a bias that
  TFLite's builtin lacked in 2019) becomes the builtin TRANSPOSE_CONV, version 3 (the version with
  the optional 4th input, the bias). The custom op's options are MediaPipe's 12-byte
  `TfLiteTransposeConvParams` {padding (1 SAME, 2 VALID), stride_width, stride_height} (a 4th int,
  the fused activation of newer headers, must be 0). MediaPipe's kernel computes the output size
  itself (`stride * (in - 1) + filter - pad_total`, pad_total = max(0, filter - (in - 1) % stride - 1)
  for SAME, 0 for VALID) and starts the output at -pad_total // 2; the builtin, given that output
  size as its constant `output_shape` input and the same padding kind, derives the same pad_total
  and the same floor-half offset, with the same OHWI weights, so the two compute the same sums;
- a file without a signature gets a "serving_default" SignatureDef over the first subgraph's inputs
  and outputs (named after their tensors), which litert-quantizer's calibration needs.

Metadata (`TFLITE_METADATA`, the MediaPipe model card and its buffers), the description and the
tensor names of the graph stay. Files we cannot take raise `ForeignModelError` in one line naming
the file: not a TFLite flatbuffer, truncated or corrupt, already quantised, a custom op without a
builtin equivalent, or a graph the interpreter refuses after the fixes.
"""

from __future__ import annotations

import struct

from architectures.importers.foreign.errors import ForeignModelError

TRANSPOSE_CONV_BIAS = "Convolution2DTransposeBias"
TRANSPOSE_CONV_BIAS_VERSION = 3  # TRANSPOSE_CONV's version with the optional bias input (op_version.cc)
SIGNATURE_KEY = "serving_default"

# TfLitePadding (the custom op's options) -> the schema's Padding of the builtin's options
_MP_PADDING_SAME, _MP_PADDING_VALID = 1, 2
_FLOAT_ACTIVATION_TYPES = ("INT8", "UINT8", "INT16")


def fix_float_tflite(blob: bytes, name: str) -> tuple[bytes, list[str]]:
    """(a float32 TFLite flatbuffer that LiteRT and litert-quantizer run, one line per fix applied).

    `name` is the file's name, for the errors. A file that needs no fix comes back re-serialised
    (same graph) with an empty list.
    """
    from exporter.convert.flatbuffer import schema, write_model

    fb = schema()
    model = _read(blob, name)
    files = _associated_files(blob, name)
    _refuse_quantised(model, name)
    fixes = []
    folded = _fold_float16_dequantize(model, fb)
    if folded:
        fixes.append(f"folded {folded} float16 constant{'s' if folded != 1 else ''} behind DEQUANTIZE "
                     "ops back to float32 (DEQUANTIZE ops removed, consumers read the constants)")
    rewritten = _rewrite_custom_ops(model, fb, name)
    if rewritten:
        fixes.append(f"rewrote {len(rewritten)} MediaPipe {TRANSPOSE_CONV_BIAS} custom op"
                     f"{'s' if len(rewritten) != 1 else ''} as builtin TRANSPOSE_CONV "
                     f"v{TRANSPOSE_CONV_BIAS_VERSION} with its bias input ({', '.join(rewritten)})")
    _compact(model)
    added = _add_signature(model, fb)
    if added:
        fixes.append(added)
    out = _append_files(write_model(model), files)
    _check_runs(out, name)
    return out, fixes


# --- reading and refusing ----------------------------------------------------------------------

def _read(blob: bytes, name: str):
    from exporter.convert.flatbuffer import read_model

    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ForeignModelError(f"{name}: not a TFLite flatbuffer (no TFL3 file identifier)")
    try:
        model = read_model(blob)
    except Exception:  # the generated reader fails with struct/index/value errors on short buffers
        raise ForeignModelError(f"{name}: truncated or corrupt TFLite file ({len(blob)} bytes)") from None
    if not model.subgraphs:
        raise ForeignModelError(f"{name}: TFLite file without a graph")
    for buffer in model.buffers or []:
        if buffer.offset > 1 or buffer.size:
            # the >2 GB layout keeps constants after the flatbuffer; ModelT would drop them
            end = buffer.offset + buffer.size
            if end > len(blob):
                raise ForeignModelError(f"{name}: truncated or corrupt TFLite file ({len(blob)} bytes)")
            raise ForeignModelError(f"{name}: TFLite file with external (offset) buffers is not supported")
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            if tensor.buffer >= len(model.buffers or []):
                raise ForeignModelError(f"{name}: truncated or corrupt TFLite file (a tensor names a missing buffer)")
    return model


def _type_name(value: int) -> str:
    from exporter.convert.flatbuffer import schema

    names = {v: k for k, v in vars(schema().TensorType).items() if not k.startswith("_")}
    return names.get(value, str(value))


def _is_constant(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    return data is not None and len(data) > 0


def _refuse_quantised(model, name: str) -> None:
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors or []:
            kind = _type_name(tensor.type)
            if kind not in _FLOAT_ACTIVATION_TYPES:
                continue
            what = "weights" if _is_constant(model, tensor) else "activations"
            raise ForeignModelError(f"{name}: already quantised ({kind.lower()} {what}); give the float model")


def _associated_files(blob: bytes, name: str) -> list[tuple[object, bytes]]:
    """The zip archive of associated files (labels) appended after the flatbuffer, as (info, bytes)."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return [(info, zf.read(info)) for info in zf.infolist()]
    except zipfile.BadZipFile:
        if b"PK\x03\x04" in blob[_flatbuffer_extent(blob):]:
            raise ForeignModelError(f"{name}: truncated TFLite file (its appended associated-files zip "
                                    "is cut short)") from None
        return []
    except Exception:  # noqa: BLE001 - a zip that lists but does not read
        raise ForeignModelError(f"{name}: truncated or corrupt associated-files zip in the TFLite file") from None


def _flatbuffer_extent(blob: bytes) -> int:
    """Where the last constant buffer's bytes end (what follows is padding or an appended zip)."""
    from exporter.convert.flatbuffer import schema

    root = schema().Model.GetRootAs(bytearray(blob), 0)
    end = 0
    for i in range(root.BuffersLength()):
        tab = root.Buffers(i)._tab
        o = tab.Offset(4)
        if o:
            end = max(end, tab.Vector(o) + tab.VectorLen(o))
    return end


def _append_files(content: bytes, files) -> bytes:
    """`content` with the original's associated files appended again as a zip (as MediaPipe's
    metadata populator writes them: offsets absolute within the whole file)."""
    import io
    import zipfile

    if not files:
        return content
    out = io.BytesIO()
    out.write(content)
    with zipfile.ZipFile(out, "a") as zf:
        for info, data in files:
            zf.writestr(zipfile.ZipInfo(info.filename, date_time=info.date_time), data,
                        compress_type=info.compress_type)
    return out.getvalue()


# --- the fixes -----------------------------------------------------------------------------------

def _opcode_index(model, fb, builtin: int, version: int = 1) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode \
                and code.version == version:
            return i
    code = fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # values above 127 live only in builtinCode
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _op_kind(model, op) -> tuple[str, str | None]:
    from exporter.convert.flatbuffer import op_name

    code = model.operatorCodes[op.opcodeIndex]
    custom = code.customCode.decode() if code.customCode else None
    return op_name(model, op), custom


def _fold_float16_dequantize(model, fb) -> int:
    """DEQUANTIZE(float16 constant) -> the float32 constant itself; the number folded."""
    import numpy as np

    folded = 0
    for subgraph in model.subgraphs:
        keep = []
        for op in subgraph.operators or []:
            kind, _ = _op_kind(model, op)
            if kind == "DEQUANTIZE" and len(op.inputs) == 1 and len(op.outputs) == 1:
                src = subgraph.tensors[op.inputs[0]]
                dst = subgraph.tensors[op.outputs[0]]
                if _type_name(src.type) == "FLOAT16" and _type_name(dst.type) == "FLOAT32" \
                        and _is_constant(model, src) and op.outputs[0] not in list(subgraph.outputs):
                    half = np.frombuffer(bytes(bytearray(model.buffers[src.buffer].data)), dtype="<f2")
                    buffer = fb.BufferT()
                    buffer.data = np.frombuffer(half.astype("<f4").tobytes(), dtype=np.uint8)
                    model.buffers.append(buffer)
                    dst.buffer = len(model.buffers) - 1
                    if src.name:
                        dst.name = src.name  # the weight's own name (not "<name>_dequantize")
                    folded += 1
                    continue
            keep.append(op)
        subgraph.operators = keep
    return folded


def _rewrite_custom_ops(model, fb, name: str) -> list[str]:
    """Convolution2DTransposeBias -> TRANSPOSE_CONV v3; refuses any other custom op."""
    import numpy as np

    done = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            kind, custom = _op_kind(model, op)
            if custom is None and kind != "CUSTOM":
                continue
            if custom != TRANSPOSE_CONV_BIAS:
                what = "TensorFlow (Flex) op" if custom and custom.startswith("Flex") else "custom op"
                raise ForeignModelError(f"{name}: {what} '{custom}' has no builtin equivalent; "
                                        "LiteRT's stock interpreter cannot run this file")
            options = bytes(bytearray(op.customOptions if op.customOptions is not None else []))
            if len(options) not in (12, 16) or len(op.inputs) != 3 or len(op.outputs) != 1:
                raise ForeignModelError(f"{name}: {TRANSPOSE_CONV_BIAS} op with unexpected inputs or options")
            padding, stride_w, stride_h = struct.unpack("<3i", options[:12])
            activation = struct.unpack("<i", options[12:16])[0] if len(options) == 16 else 0
            if padding not in (_MP_PADDING_SAME, _MP_PADDING_VALID) or stride_w < 1 or stride_h < 1 or activation:
                raise ForeignModelError(f"{name}: {TRANSPOSE_CONV_BIAS} op with unsupported options")
            x, weights, bias = (subgraph.tensors[i] for i in op.inputs)
            out = subgraph.tensors[op.outputs[0]]
            if len(x.shape) != 4 or len(weights.shape) != 4 or len(bias.shape) != 1 \
                    or weights.shape[3] != x.shape[3] or weights.shape[0] != bias.shape[0]:
                raise ForeignModelError(f"{name}: {TRANSPOSE_CONV_BIAS} op with mismatched shapes")
            filter_h, filter_w = int(weights.shape[1]), int(weights.shape[2])
            in_h, in_w = int(x.shape[1]), int(x.shape[2])

            def size(n, f, s):
                pad = max(0, f - (n - 1) % s - 1) if padding == _MP_PADDING_SAME else 0
                return s * (n - 1) + f - pad

            shape = [int(x.shape[0]), size(in_h, filter_h, stride_h), size(in_w, filter_w, stride_w),
                     int(weights.shape[0])]
            if out.shape is not None and len(out.shape) and [int(d) for d in out.shape] != shape:
                raise ForeignModelError(f"{name}: {TRANSPOSE_CONV_BIAS} output shape disagrees with its options")
            buffer = fb.BufferT()
            buffer.data = np.frombuffer(np.asarray(shape, "<i4").tobytes(), dtype=np.uint8)
            model.buffers.append(buffer)
            shape_tensor = fb.TensorT()
            shape_tensor.shape = np.asarray([4], np.int32)
            shape_tensor.type = fb.TensorType.INT32
            shape_tensor.buffer = len(model.buffers) - 1
            shape_tensor.name = (out.name or b"transpose_conv") + b"/output_shape"
            subgraph.tensors.append(shape_tensor)

            opts = fb.TransposeConvOptionsT()
            opts.padding = fb.Padding.SAME if padding == _MP_PADDING_SAME else fb.Padding.VALID
            opts.strideW, opts.strideH = stride_w, stride_h
            opts.fusedActivationFunction = fb.ActivationFunctionType.NONE
            op.opcodeIndex = _opcode_index(model, fb, fb.BuiltinOperator.TRANSPOSE_CONV,
                                           TRANSPOSE_CONV_BIAS_VERSION)
            op.inputs = np.asarray([len(subgraph.tensors) - 1, op.inputs[1], op.inputs[0], op.inputs[2]], np.int32)
            op.builtinOptionsType = fb.BuiltinOptions.TransposeConvOptions
            op.builtinOptions = opts
            op.customOptions = None
            op.customOptionsFormat = 0
            done.append(f"{'SAME' if padding == _MP_PADDING_SAME else 'VALID'}, stride {stride_h}x{stride_w}, "
                        f"{in_h}x{in_w} -> {shape[1]}x{shape[2]}")
    return done


def _compact(model) -> None:
    """Drops the tensors, buffers and operator codes nothing uses any more, renumbering the rest."""
    import numpy as np

    used_buffers = {0}
    for subgraph in model.subgraphs:
        used = set(int(i) for i in list(subgraph.inputs) + list(subgraph.outputs))
        for op in subgraph.operators or []:
            for field in (op.inputs, op.outputs, op.intermediates):
                used.update(int(i) for i in (field if field is not None else []) if i >= 0)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == model.subgraphs.index(subgraph):
                used.update(int(t.tensorIndex) for t in list(sig.inputs or []) + list(sig.outputs or []))
        order = [i for i in range(len(subgraph.tensors)) if i in used]
        remap = {old: new for new, old in enumerate(order)}

        def renumber(values):
            if values is None:
                return None
            return np.asarray([remap[int(v)] if v >= 0 else int(v) for v in values], np.int32)

        subgraph.tensors = [subgraph.tensors[i] for i in order]
        subgraph.inputs, subgraph.outputs = renumber(subgraph.inputs), renumber(subgraph.outputs)
        for op in subgraph.operators or []:
            op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
            op.intermediates = renumber(op.intermediates)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == model.subgraphs.index(subgraph):
                for t in list(sig.inputs or []) + list(sig.outputs or []):
                    t.tensorIndex = remap[int(t.tensorIndex)]
        used_buffers.update(t.buffer for t in subgraph.tensors)
    used_buffers.update(m.buffer for m in model.metadata or [])
    used_buffers.update(int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else []))
    order = [i for i in range(len(model.buffers)) if i in used_buffers]
    remap = {old: new for new, old in enumerate(order)}
    model.buffers = [model.buffers[i] for i in order]
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = remap[tensor.buffer]
    for m in model.metadata or []:
        m.buffer = remap[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = np.asarray([remap[int(b)] for b in model.metadataBuffer], np.int32)

    used_codes = sorted({op.opcodeIndex for s in model.subgraphs for op in s.operators or []})
    code_remap = {old: new for new, old in enumerate(used_codes)}
    model.operatorCodes = [model.operatorCodes[i] for i in used_codes]
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            op.opcodeIndex = code_remap[op.opcodeIndex]


def _add_signature(model, fb) -> str | None:
    if model.signatureDefs:
        return None
    subgraph = model.subgraphs[0]

    def maps(indices, prefix):
        out, seen = [], set()
        for n, index in enumerate(indices):
            tensor_name = (subgraph.tensors[index].name or b"").decode() or f"{prefix}_{n}"
            if tensor_name in seen:
                tensor_name = f"{tensor_name}_{n}"
            seen.add(tensor_name)
            entry = fb.TensorMapT()
            entry.name = tensor_name.encode()
            entry.tensorIndex = int(index)
            out.append(entry)
        return out

    sig = fb.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY.encode()
    sig.subgraphIndex = 0
    sig.inputs = maps(subgraph.inputs, "input")
    sig.outputs = maps(subgraph.outputs, "output")
    model.signatureDefs = [sig]
    names = lambda entries: ", ".join(e.name.decode() for e in entries)  # noqa: E731
    return f"added signature '{SIGNATURE_KEY}' (inputs: {names(sig.inputs)}; outputs: {names(sig.outputs)})"


def _check_runs(blob: bytes, name: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from exporter.errors import first_line

    try:
        interpreter = Interpreter(model_content=blob)
        interpreter.allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - the interpreter's own message, first line
        raise ForeignModelError(f"{name}: LiteRT cannot load the fixed file: {first_line(exc)}") from None
