"""Exact float-graph rewrites that let XNNPACK run a quantised file's ops itself.

`fuse_activations(blob)`: a standalone RELU / RELU6 / RELU_N1_TO_1 whose input is produced by a
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD or MUL with no fused activation (and read by
nothing else) becomes that op's fused activation. Same function in float (max(0, x) applied to the
op's result either way). It matters once the file is quantised: XNNPACK's delegate does not take
a standalone int8 RELU whose output scale differs from its input's (litert-quantizer gives every
op output its own scale), so each one falls back to TFLite's reference QuantizedReluX, which
requantises every element through MultiplyByQuantizedMultiplier; with the activation fused, the
convolution's output range starts at 0 (twice the int8 resolution for the same range) and XNNPACK's
convolution clamps in its own output stage, for free. MediaPipe's selfie segmenter has 22 such
RELUs (Keras ReLU layers the 2021 converter did not fuse).
"""

from __future__ import annotations

_FUSABLE_PRODUCERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL")
_ACTIVATIONS = {"RELU": "RELU", "RELU6": "RELU6", "RELU_N1_TO_1": "RELU_N1_TO_1"}


def fuse_activations(blob: bytes) -> tuple[bytes, list[str]]:
    """(the file with standalone activations fused into their producers, one line if any were)."""
    import numpy as np

    from exporter.convert.flatbuffer import op_name, read_model, schema, write_model

    fb = schema()
    model = read_model(blob)
    fused = 0
    for sg_index, subgraph in enumerate(model.subgraphs):
        ops = subgraph.operators or []
        producer = {int(t): op for op in ops for t in op.outputs}
        readers: dict[int, int] = {}
        for op in ops:
            for t in op.inputs:
                if t >= 0:
                    readers[int(t)] = readers.get(int(t), 0) + 1
        protected = {int(t) for t in list(subgraph.outputs)}
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == sg_index:
                protected.update(int(t.tensorIndex) for t in list(sig.outputs or []))
        drop = set()
        for op in ops:
            kind = op_name(model, op)
            if kind not in _ACTIVATIONS or len(op.inputs) != 1:
                continue
            source = int(op.inputs[0])
            prev = producer.get(source)
            if prev is None or readers.get(source) != 1 or source in protected:
                continue
            options = prev.builtinOptions
            if op_name(model, prev) not in _FUSABLE_PRODUCERS or options is None \
                    or not hasattr(options, "fusedActivationFunction") \
                    or options.fusedActivationFunction != fb.ActivationFunctionType.NONE:
                continue
            options.fusedActivationFunction = getattr(fb.ActivationFunctionType, _ACTIVATIONS[kind])
            prev.outputs = np.asarray([int(op.outputs[0])], np.int32)
            producer[int(op.outputs[0])] = prev
            drop.add(id(op))
            fused += 1
        subgraph.operators = [op for op in ops if id(op) not in drop]
    if not fused:
        return blob, []
    from architectures.importers.foreign.tflite_float import _compact

    _compact(model)
    return write_model(model), [f"fused {fused} standalone activation op{'s' if fused != 1 else ''} into "
                                "the convolutions/adds before them (XNNPACK runs them in int8)"]


def transpose_conv_to_depth_to_space(blob: bytes) -> tuple[bytes, list[str]]:
    """(the file with non-overlapping TRANSPOSE_CONVs as CONV_2D 1x1 + DEPTH_TO_SPACE, one line if any).

    A float TRANSPOSE_CONV whose kernel equals its stride (k x k, stride k: every output pixel gets
    exactly one kernel tap, no padding) computes out[h*k+dy, w*k+dx, o] = sum_c x[h, w, c] *
    W[o, dy, dx, c] + b[o]: a 1x1 CONV_2D to k*k*O channels (channel (dy*k+dx)*O + o holds
    W[o, dy, dx, :], bias b[o]) followed by DEPTH_TO_SPACE(k), which puts channel (dy*k+dx)*O + o
    of pixel (h, w) at (h*k+dy, w*k+dx, o). XNNPACK runs the 1x1 convolution as one GEMM
    instead of its sub-convolution path (for MediaPipe's selfie segmenter, 2x2 stride 2, 16 -> 1
    channels at 128x128: 3.7 M of 40 M A76 instructions in float).
    """
    import numpy as np

    from exporter.convert.flatbuffer import op_name, read_model, schema, write_model

    fb = schema()
    model = read_model(blob)
    done = 0

    def opcode(builtin):
        for i, code in enumerate(model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin and not code.customCode:
                return i
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = 1
        model.operatorCodes.append(code)
        return len(model.operatorCodes) - 1

    def constant(subgraph, name, array):
        buffer = fb.BufferT()
        buffer.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
        model.buffers.append(buffer)
        tensor = fb.TensorT()
        tensor.name, tensor.shape, tensor.type = name, np.asarray(array.shape, np.int32), fb.TensorType.FLOAT32
        tensor.buffer = len(model.buffers) - 1
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    def data(tensor):
        raw = model.buffers[tensor.buffer].data
        return None if raw is None or not len(raw) else np.frombuffer(bytes(bytearray(raw)), "<f4")

    for subgraph in model.subgraphs:
        new_ops = []
        for op in subgraph.operators or []:
            if op_name(model, op) != "TRANSPOSE_CONV" or len(op.inputs) < 3:
                new_ops.append(op)
                continue
            opts = op.builtinOptions
            w_t, x_t = subgraph.tensors[op.inputs[1]], subgraph.tensors[op.inputs[2]]
            out_t = subgraph.tensors[op.outputs[0]]
            bias_t = subgraph.tensors[op.inputs[3]] if len(op.inputs) > 3 and op.inputs[3] >= 0 else None
            o, kh, kw, c = (int(d) for d in w_t.shape)
            weights = data(w_t)
            bias = data(bias_t) if bias_t is not None else np.zeros(o, np.float32)
            if weights is None or bias is None or w_t.type != fb.TensorType.FLOAT32 \
                    or x_t.type != fb.TensorType.FLOAT32 or kh != kw or opts.strideH != kh or opts.strideW != kw \
                    or [int(d) for d in out_t.shape] != [int(x_t.shape[0]), int(x_t.shape[1]) * kh,
                                                         int(x_t.shape[2]) * kw, o]:
                new_ops.append(op)
                continue
            k = kh
            w4 = weights.reshape(o, k, k, c).transpose(1, 2, 0, 3).reshape(k * k * o, 1, 1, c)
            base = out_t.name or b"transpose_conv"
            w_index = constant(subgraph, base + b"/d2s_kernel", w4.astype(np.float32))
            b_index = constant(subgraph, base + b"/d2s_bias", np.tile(bias.astype(np.float32), k * k))
            mid = fb.TensorT()
            mid.name, mid.type = base + b"/d2s_channels", fb.TensorType.FLOAT32
            mid.shape = np.asarray([int(x_t.shape[0]), int(x_t.shape[1]), int(x_t.shape[2]), k * k * o], np.int32)
            subgraph.tensors.append(mid)
            mid_index = len(subgraph.tensors) - 1

            conv = fb.OperatorT()
            conv.opcodeIndex = opcode(fb.BuiltinOperator.CONV_2D)
            conv.inputs = np.asarray([op.inputs[2], w_index, b_index], np.int32)
            conv.outputs = np.asarray([mid_index], np.int32)
            conv_opts = fb.Conv2DOptionsT()
            conv_opts.padding, conv_opts.strideH, conv_opts.strideW = fb.Padding.VALID, 1, 1
            conv_opts.dilationHFactor = conv_opts.dilationWFactor = 1
            conv.builtinOptionsType, conv.builtinOptions = fb.BuiltinOptions.Conv2DOptions, conv_opts
            d2s = fb.OperatorT()
            d2s.opcodeIndex = opcode(fb.BuiltinOperator.DEPTH_TO_SPACE)
            d2s.inputs, d2s.outputs = np.asarray([mid_index], np.int32), np.asarray(op.outputs, np.int32)
            d2s_opts = fb.DepthToSpaceOptionsT()
            d2s_opts.blockSize = k
            d2s.builtinOptionsType, d2s.builtinOptions = fb.BuiltinOptions.DepthToSpaceOptions, d2s_opts
            new_ops += [conv, d2s]
            done += 1
        subgraph.operators = new_ops
    if not done:
        return blob, []
    from architectures.importers.foreign.tflite_float import _compact

    _compact(model)
    return write_model(model), [f"rewrote {done} TRANSPOSE_CONV op{'s' if done != 1 else ''} (kernel = stride) "
                                "as CONV_2D 1x1 + DEPTH_TO_SPACE"]
