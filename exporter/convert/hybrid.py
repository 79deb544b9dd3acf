"""Dynamic-range files: the ops XNNPACK cannot run hybrid get their weights back in float.

`--precision dynamic` stores int8 weights and computes on float activations, quantising them per
inference. LiteRT's XNNPACK delegate runs that form for FULLY_CONNECTED, CONV_2D and
BATCH_MATMUL (its qd8 "dynamically quantised" GEMMs, SDOT on a Cortex-A76) but has no such
depthwise kernel: a hybrid DEPTHWISE_CONV_2D is left to TFLite's own kernel, which splits the
graph into extra XNNPACK partitions and quantises its input on every call. On an emulated
Cortex-A76 the 8 hybrid depthwise convolutions of a 128x128 SegFormer cost more instructions
(kernel, padding and input quantisation, about 5 M) than the same convolutions in float inside
XNNPACK (3.8 M).

So those weights are dequantised in the file (int8 value x its channel's scale, the exact
values the hybrid kernel multiplies by) and the op becomes a plain float depthwise convolution
that XNNPACK takes. Depthwise weights are a small share of a model's weights (9 per channel),
so the file grows little.
"""

from __future__ import annotations

import numpy as np

_KEEP_FLOAT = ("DEPTHWISE_CONV_2D",)


def float_weights_where_not_delegated(model_content: bytes) -> bytes:
    """Dequantise the int8 weights of hybrid ops XNNPACK does not run (module docstring).
    Files without such an op come back unchanged."""
    from exporter.convert.flatbuffer import op_name, read_model, schema, write_model

    fb = schema()
    model = read_model(model_content)
    changed = False
    for graph in model.subgraphs:
        for op in graph.operators:
            if op_name(model, op) not in _KEEP_FLOAT or len(op.inputs) < 2:
                continue
            activation, weights = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
            if activation.type != fb.TensorType.FLOAT32 or weights.type != fb.TensorType.INT8:
                continue
            buffer = model.buffers[weights.buffer]
            if buffer.data is None or weights.quantization is None:
                continue
            values = np.frombuffer(bytes(bytearray(buffer.data)), np.int8).reshape(weights.shape)
            real = _dequantise(values, weights.quantization)
            # A new buffer: the int8 one may be shared with another tensor.
            fresh = fb.BufferT()
            fresh.data = np.frombuffer(real.astype("<f4").tobytes(), np.uint8)
            model.buffers.append(fresh)
            weights.buffer = len(model.buffers) - 1
            weights.type = fb.TensorType.FLOAT32
            weights.quantization = None
            changed = True
    return write_model(model) if changed else model_content


def _dequantise(values: np.ndarray, q) -> np.ndarray:
    scale = np.asarray(q.scale, np.float32)
    zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float32)
    if scale.size > 1:  # per channel along quantizedDimension
        shape = [1] * values.ndim
        shape[q.quantizedDimension] = scale.size
        scale, zero = scale.reshape(shape), np.broadcast_to(zero, scale.shape).reshape(shape)
    return ((values.astype(np.float32) - zero) * scale).astype(np.float32)
