"""The converter's int8 weight grid, in one place: per output channel, symmetric, narrow range.

TFLite's quantiser gives each output channel the scale max|w| / 127 and stores
round(w / scale) in [-127, 127] (rounding half away from zero). Kernels here have their output
channels on the last axis (`graph.Unit.kernel`).
"""

from __future__ import annotations

import numpy as np

QMAX = 127


def channel_scales(kernel: np.ndarray) -> np.ndarray:
    """Per output channel (last axis) scale; a zero channel gets 1 (its codes are all 0)."""
    peak = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)
    return np.where(peak > 0, peak / QMAX, 1.0)


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def nearest_codes(kernel: np.ndarray) -> np.ndarray:
    return np.clip(round_half_away(kernel / channel_scales(kernel)), -QMAX, QMAX)


def fake_quant(kernel: np.ndarray) -> np.ndarray:
    """The kernel as the int8 file computes with it (codes times scales)."""
    return nearest_codes(kernel) * channel_scales(kernel)


def fake_quant_activation(x, lo: float, hi: float, levels: int = 256):
    """Per-tensor asymmetric 8-bit activation quantisation over [lo, hi] (zero exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (levels - 1) if hi > lo else 1.0
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, levels - 1)
    return (q - zero) * scale
