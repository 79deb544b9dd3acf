"""exporter.ptq's entry point: the method table, apply_methods' recipe, choose_method."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.errors import ExporterError
from tests.ptq_support import relative_close, small_cnn


def test_unknown_method_names_the_valid_ones():
    from exporter.ptq import METHODS, apply_methods

    with pytest.raises(ExporterError) as info:
        apply_methods(small_cnn(), None, np.zeros((1, 16, 16, 3)), ["cle", "magic"])
    message = str(info.value)
    assert "magic" in message and "\n" not in message
    assert all(name in message for name in METHODS)


def test_apply_methods_changes_a_copy_and_records_each_method():
    from exporter.ptq import apply_methods

    model = small_cnn(seed=7)
    calib = np.random.default_rng(8).normal(0, 1, (4, 16, 16, 3)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    # Named out of order: they run in METHODS order; smoothquant has no edge here (no matmul-only reader).
    out, recipe = apply_methods(model, None, calib, ["bias_correction", "cle", "smoothquant"])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # caller's model untouched
    assert recipe["methods"] == ["smoothquant", "cle", "bias_correction"]
    assert recipe["cle"]["pairs"] and recipe["bias_correction"]["layers"]
    assert set(recipe["seconds"]) == set(recipe["methods"])
    # Equalisation alone would keep the outputs; bias correction moves them by the rounding shift only.
    assert 0 < relative_close(model.predict(calib, verbose=0), out.predict(calib, verbose=0)) < 0.05


def test_choose_method_keeps_the_best_and_prefers_plain_on_ties():
    from exporter.ptq import choose_method

    scores = {(): 0.9, ("cle",): 0.95, ("cle", "bias_correction"): 0.95}
    choice = choose_method(["none", "cle", ("cle", "bias_correction")], lambda names: scores[names])
    assert choice["chosen"] == ("cle",)
    assert choice["scores"] == {"none": 0.9, "cle": 0.95, "cle+bias_correction": 0.95}
    assert choose_method(["none", "cle"], lambda names: 1.0)["chosen"] == ()
