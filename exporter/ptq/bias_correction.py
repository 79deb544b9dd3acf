"""Empirical bias correction (Nagel et al. 2019, section 4.2, the empirical form).

Weight rounding shifts each output channel's mean: E[W~ x] != E[W x]. Layer by layer, in graph
order, on the calibration images: the mean of the float model's pre-activation output is
compared with that of a copy whose weights are already on the int8 grid (`grid.fake_quant`) and
whose earlier layers are already corrected, so the shifts that upstream rounding propagates are
corrected too; the difference goes into the bias (the conv's, or the folded BN's beta). With
`activations` the copy's layer inputs are also rounded to 8 bits over their calibration range
(per tensor, as the int8 file does), which corrects the mean shift activation rounding adds.

The returned float model keeps its float kernels (the converter rounds them to the same grid)
with the corrected biases; its float outputs change by design (by the shift the int8 file removes).
"""

from __future__ import annotations

import numpy as np

from exporter.ptq.grid import fake_quant, fake_quant_activation
from exporter.ptq.graph import units
from exporter.ptq.layer_ops import apply_kernel, channel_mean, layer_inputs

MAX_IMAGES = 16


def _clone(model):
    from exporter.keras import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def correctable(model) -> list:
    return [u for u in units(model).values() if u.can_set_bias()]


def float_means(model, targets, images) -> dict[str, np.ndarray]:
    """Each target's float pre-activation output mean per channel (kernel folded, bias included)."""
    inputs = layer_inputs(model, [u.name for u in targets], images)
    return {u.name: channel_mean(apply_kernel(u, x, u.kernel())) + u.bias() for u, x in zip(targets, inputs)}


def correct_biases(model, calibration_images: np.ndarray, activations: bool = False,
                   max_images: int = MAX_IMAGES) -> dict:
    """Correct `model`'s biases in place; returns the recipe entry (layers, mean |shift| removed)."""
    images = np.asarray(calibration_images[:max_images], np.float32)
    targets = correctable(model)
    reference = float_means(model, targets, images)
    work = _clone(model)
    work_units = units(work)
    shifts = {}
    for unit in targets:
        wu = work_units[unit.name]
        (x,) = layer_inputs(work, [unit.name], images)
        if activations:
            x = fake_quant_activation(x, x.min(), x.max()).astype(np.float32)
        rounded = fake_quant(unit.kernel())
        shift = reference[unit.name] - (channel_mean(apply_kernel(unit, x, rounded)) + unit.bias())
        bias = unit.bias() + shift
        wu.set_folded(rounded, bias)
        unit.set_folded(unit.kernel(), bias)
        shifts[unit.name] = float(np.abs(shift).mean())
    return {
        "layers": list(shifts),
        "activations": activations,
        "mean_abs_shift": {k: round(v, 6) for k, v in shifts.items()},
    }
