"""Rewrites of a full-integer TFLite file's uint8 edges that compute the same function cheaper.

The converter ends a uint8-output file with QUANTIZE int8 -> uint8 on the full output tensor
([1, H, W, classes] at input resolution). LiteRT's XNNPACK delegate does not take that QUANTIZE
(it delegates float <-> quantised conversions and same-type requantisation only), so it runs on
TFLite's kernel outside the delegate: on an emulated Cortex-A76 it was 3.5 M of DeepLab's 34.7 M
instructions at 256x256 (21 classes), more than its whole ASPP head.

When the op before that QUANTIZE is a resize (RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR, whose
int8 output has its input's scale and zero point), the QUANTIZE can go before the resize: the
int8 -> uint8 QUANTIZE with an equal scale only adds 128 to every value, and interpolation
commutes with adding a constant exactly (XNNPACK's and TFLite's integer bilinear kernels round
a weighted sum whose weights sum to one), so the uint8 resize of the shifted small map gives the
same bytes as the shifted int8 resize, while the QUANTIZE touches 64x fewer values (DeepLab's
x8 upsampling). The uint8 resize runs in XNNPACK. A chain of resizes and reshapes (a separable
resize) moves the same way: each op carries values unchanged in quantisation.
"""

from __future__ import annotations

import numpy as np

_RESIZES = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
_CARRIERS = ("RESHAPE",)  # move values unchanged: the QUANTIZE commutes with them


def _same_quantization(a, b) -> bool:
    if a is None or b is None or a.scale is None or b.scale is None:
        return False
    return (np.allclose(np.asarray(a.scale), np.asarray(b.scale), rtol=0, atol=0)
            and list(np.asarray(a.zeroPoint)) == list(np.asarray(b.zeroPoint)))


def quantize_before_resize(model_content: bytes) -> bytes:
    """Move the output's int8 -> uint8 QUANTIZE in front of a final resize (module docstring).
    Files of any other shape come back unchanged."""
    from exporter.convert.flatbuffer import op_name, read_model, schema, write_model

    fb = schema()
    model = read_model(model_content)
    graph = model.subgraphs[0]
    changed = False
    for output in list(graph.outputs):
        producers = [i for i, op in enumerate(graph.operators) if output in list(op.outputs)]
        if len(producers) != 1:
            continue
        qi = producers[0]
        quantize = graph.operators[qi]
        if op_name(model, quantize) != "QUANTIZE":
            continue
        out_t = graph.tensors[output]
        mid = int(quantize.inputs[0])
        mid_t = graph.tensors[mid]
        if out_t.type != fb.TensorType.UINT8 or mid_t.type != fb.TensorType.INT8:
            continue
        # Equal scales: the QUANTIZE is a shift by 128 (zero points z and z + 128).
        if not (_same_scale(mid_t, out_t) and _zero(out_t) == _zero(mid_t) + 128):
            continue
        # The ops that carry the small map to `mid` unchanged in quantisation: resizes, and the
        # reshapes of a separable resize (architectures.layers.ResizeBilinear(separable=True)).
        chain, tensor = [], mid
        while True:
            users = [op for op in graph.operators if tensor in list(op.inputs)]
            makers = [i for i, op in enumerate(graph.operators) if tensor in list(op.outputs)]
            if len(users) != 1 or len(makers) != 1 or tensor in list(graph.outputs):
                break
            maker = graph.operators[makers[0]]
            if op_name(model, maker) not in (*_RESIZES, *_CARRIERS):
                break
            src = int(maker.inputs[0])
            src_t = graph.tensors[src]
            if src_t.type != fb.TensorType.INT8 or not _same_quantization(src_t.quantization, mid_t.quantization):
                break
            chain.append(makers[0])
            tensor = src
        if not any(op_name(model, graph.operators[i]) in _RESIZES for i in chain):
            continue
        src, first = tensor, min(chain)
        src_t = graph.tensors[src]
        # The small map in uint8, quantised as the output is.
        small = fb.TensorT()
        small.shape = list(src_t.shape)
        small.shapeSignature = None if src_t.shapeSignature is None else list(src_t.shapeSignature)
        small.type = fb.TensorType.UINT8
        small.buffer = 0
        name = src_t.name or b""
        small.name = (name if isinstance(name, bytes) else name.encode()) + b"_uint8"
        q = fb.QuantizationParametersT()
        q.scale = np.array(out_t.quantization.scale, np.float32)
        q.zeroPoint = np.array(out_t.quantization.zeroPoint, np.int64)
        small.quantization = q
        graph.tensors.append(small)
        small_i = len(graph.tensors) - 1
        quantize.inputs = np.array([src], np.int32)
        quantize.outputs = np.array([small_i], np.int32)
        # Chain ops, first to last: the first reads the uint8 map, the last writes the output; the
        # tensors between them become uint8 with the output's quantisation (a shift by 128).
        ordered = sorted(chain)
        graph.operators[ordered[0]].inputs = np.array([small_i, *list(graph.operators[ordered[0]].inputs)[1:]], np.int32)
        graph.operators[ordered[-1]].outputs = np.array([output], np.int32)
        for i in ordered[:-1]:
            between = graph.tensors[int(graph.operators[i].outputs[0])]
            between.type = fb.TensorType.UINT8
            between.quantization.zeroPoint = np.array(out_t.quantization.zeroPoint, np.int64)
        # Execution order: the QUANTIZE just before the chain (it reads only what the chain read).
        del graph.operators[qi]
        graph.operators.insert(first, quantize)
        changed = True
    return write_model(model) if changed else model_content


def _same_scale(a, b) -> bool:
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None or qa.scale is None or qb.scale is None:
        return False
    sa, sb = np.asarray(qa.scale, np.float32), np.asarray(qb.scale, np.float32)
    return sa.shape == sb.shape == (1,) and sa[0] == sb[0]


def _zero(t) -> int:
    zp = t.quantization.zeroPoint
    return int(np.asarray(zp)[0]) if zp is not None and len(zp) else 0
