"""SmoothQuant (Xiao et al. 2023): move activation outliers into the weights of matrix multiplies.

For a producer -> consumers edge through which a per-channel scale passes exactly
(`graph.scalable_edges`: a LayerNorm's gamma/beta or a linear/ReLU weight layer, read only by
Dense / conv / depthwise layers), activations are divided per channel by
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and the consumers' input channels multiplied by s_j.
Exact in float. int8 activations are per tensor and weights per output channel, so a few wide
input channels (transformer outliers) waste the activation's 256 codes; flattening them costs
the weights some precision instead.

alpha is measured per edge on the calibration images: each candidate (and no smoothing) is
scored by the consumers' output error with the activation rounded to 8 bits over its
DEFAULT_PERCENTILE range (as the converter's ranges do) and the weights on their int8 grid; the
best is kept and recorded. Each s_j is rounded to a power of two: multiplying by 2^k is exact in
float32, so the smoothed model computes bit for bit what the original did (a scale off by up to
sqrt(2) from the formula changes the balance negligibly).
"""

from __future__ import annotations

import numpy as np

from exporter.convert.ranges import DEFAULT_PERCENTILE
from exporter.ptq.grid import fake_quant, fake_quant_activation
from exporter.ptq.graph import Unit, input_range, scalable_edges, units
from exporter.ptq.layer_ops import apply_kernel, layer_inputs

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.75, 0.9)
MAX_IMAGES = 4
MAX_SCALE = 1e3


def edges(model) -> list:
    """LayerNorm outputs, and weight-layer outputs read only by matrix multiplies (Dense, 1x1 conv)."""
    found = []
    for edge in scalable_edges(model):
        if not isinstance(edge.producer, Unit):
            found.append(edge)
        elif all(_is_matmul(c) for c in edge.consumers):
            found.append(edge)
    return found


def _is_matmul(layer) -> bool:
    kind = layer.__class__.__name__
    return kind == "Dense" or (kind == "Conv2D" and tuple(layer.kernel_size) == (1, 1))


def _quantised_error(edge, x: np.ndarray, s: np.ndarray, unit_of) -> float:
    """Consumers' output error (relative) with x / s rounded to 8 bits and weights * s on the int8 grid."""
    xs = x / s
    lo, hi = np.percentile(xs, [100 - DEFAULT_PERCENTILE, DEFAULT_PERCENTILE])
    xq = fake_quant_activation(xs, lo, hi).astype(np.float32)
    err = 0.0
    for consumer in edge.consumers:
        unit = unit_of[consumer.name]
        kernel = unit.kernel()
        scaled = kernel * (s[:, None] if unit.kind != "DepthwiseConv2D" else s)
        ref = np.asarray(apply_kernel(unit, x, kernel))
        out = np.asarray(apply_kernel(unit, xq, fake_quant(scaled)))
        err += float(np.mean((out - ref) ** 2) / max(np.mean(ref**2), 1e-20))
    return err


def smooth(model, calibration_images: np.ndarray, alphas=ALPHAS) -> dict:
    """Smooth every edge of `model` in place with its measured alpha; returns the recipe entry."""
    images = np.asarray(calibration_images[:MAX_IMAGES], np.float32)
    unit_of = units(model)
    chosen = {}
    found = edges(model)
    # One capture serves every edge: smoothing one edge leaves every consumer's output unchanged.
    captured = layer_inputs(model, [e.consumers[0].name for e in found], images) if found else []
    for edge, x in zip(found, captured):
        act = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)
        wmax = np.max([input_range(c, unit_of) for c in edge.consumers], axis=0)
        ok = (act > 0) & (wmax > 0)
        best, best_err = None, _quantised_error(edge, x, np.ones_like(act), unit_of)
        baseline = best_err
        for alpha in alphas:
            s = np.ones_like(act)
            s[ok] = act[ok] ** alpha / wmax[ok] ** (1 - alpha)
            # Normalise so the typical channel keeps its scale; only the spread matters.
            s = np.clip(s / np.exp(np.mean(np.log(s[ok]))) if ok.any() else s, 1 / MAX_SCALE, MAX_SCALE)
            s = 2.0 ** np.round(np.log2(s))
            err = _quantised_error(edge, x, s, unit_of)
            if err < best_err:
                best, best_err, best_s = alpha, err, s
        if best is not None:
            edge.scale(best_s)
        chosen[edge.name] = {"alpha": best, "error_before": round(baseline, 6), "error_after": round(best_err, 6)}
    return {"edges": chosen, "alphas_tried": list(alphas)}
