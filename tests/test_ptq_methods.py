"""Post-training methods (exporter/ptq): the property each one relies on."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ptq_support import relative_close, small_cnn
from tests.support import pixels, small_config


def _copy(model):
    from exporter.keras import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def test_equalisation_keeps_float_outputs_and_evens_ranges():
    from exporter.ptq.equalize import equalize, pair_precision, pairs
    from exporter.ptq.graph import units

    model = small_cnn()
    x = np.random.default_rng(1).normal(0, 1, (4, 16, 16, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    edges = pairs(model)
    assert {e.name for e in edges} == {"c1->dw", "dw->pw", "pw->head"}
    precision = [pair_precision(e, units(model)) for e in edges]
    recipe = equalize(model)
    assert relative_close(before, model.predict(x, verbose=0)) < 1e-5
    after = [pair_precision(e, units(model)) for e in edges]
    # A chain trades one pair's precision for its neighbours': the sum is what CLE maximises.
    assert sum(after) > 1.05 * sum(precision), (precision, after)
    assert recipe["precision_after"] == pytest.approx(sum(after), abs=1e-2)
    # The last pair of the chain ends equalised: W1's output ranges equal W2's input ranges.
    from exporter.ptq.equalize import pair_ranges

    r1, r2 = pair_ranges(edges[-1], units(model))
    np.testing.assert_allclose(r1, r2, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["selfie", "deeplab"])
def test_equalisation_exact_on_registry_model(name):
    from exporter.convert.signature import export_model
    from exporter.ptq.equalize import equalize
    from architectures import build

    config = small_config(name)
    fixed = export_model(build(config), config)
    x = pixels(config, 2)
    before = fixed.predict(x, verbose=0)
    recipe = equalize(fixed)
    assert recipe["pairs"], f"{name} has no equalisable pair"
    assert recipe["precision_after"] > recipe["precision_before"]
    assert relative_close(before, fixed.predict(x, verbose=0)) < 1e-5


def test_bias_correction_removes_mean_output_shift():
    from exporter.ptq.bias_correction import correct_biases
    from tests.ptq_support import weights_on_grid

    model = small_cnn(seed=2)
    calib = np.random.default_rng(3).normal(0, 1, (8, 16, 16, 3)).astype(np.float32)
    reference = model.predict(calib, verbose=0)
    shift_before = np.abs((weights_on_grid(model).predict(calib, verbose=0) - reference).mean(axis=(0, 1, 2)))
    recipe = correct_biases(model, calib)
    assert recipe["layers"] == ["c1", "dw", "pw", "head"]
    shift_after = np.abs((weights_on_grid(model).predict(calib, verbose=0) - reference).mean(axis=(0, 1, 2)))
    scale = np.abs(reference).mean()
    assert shift_before.max() > 1e-3 * scale  # rounding did shift the mean
    assert shift_after.max() < 1e-5 * scale + 0.02 * shift_before.max(), (shift_before, shift_after)


def _int8_weights(blob: bytes) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    found = []
    for t in interp.get_tensor_details():
        if t["dtype"] == np.int8 and len(t["shape"]) in (2, 4):
            try:
                found.append(interp.get_tensor(t["index"]))
            except ValueError:  # an activation tensor
                pass
    return found


def test_adaround_weights_read_back_from_the_int8_file():
    from types import SimpleNamespace

    from exporter.convert.tflite import to_tflite
    from exporter.ptq.adaround import adaround
    from exporter.ptq.grid import channel_scales, nearest_codes
    from exporter.ptq.graph import units

    model = small_cnn(seed=4)
    calib = np.random.default_rng(5).normal(0, 1, (8, 16, 16, 3)).astype(np.float32)
    nearest = {u.name: nearest_codes(u.kernel()) for u in units(model).values()}
    recipe = adaround(model, calib, iterations=200)
    assert set(recipe["layers"]) == {"c1", "dw", "pw"}
    layers = units(model)
    blob = to_tflite(model, SimpleNamespace(name="small_cnn", input_size=(16, 16)), "int8", calib, io="int8")
    in_file = _int8_weights(blob)
    flipped = 0
    for name, stats in recipe["layers"].items():
        kernel = layers[name].kernel()
        codes = nearest_codes(kernel)
        # On the grid: every weight is code * scale of its channel.
        np.testing.assert_allclose(kernel, codes * channel_scales(kernel), rtol=1e-6, atol=0)
        flipped += int((codes != nearest[name]).sum())
        assert stats["mse_adaround"] <= stats["mse_nearest"]
        tflite = codes.transpose(3, 0, 1, 2) if codes.ndim == 4 else codes[None]
        assert any(w.shape == tflite.shape and np.array_equal(w, tflite) for w in in_file), name
    assert flipped > 0  # AdaRound chose other codes than nearest rounding somewhere


# SegFormer took 41 s with the machine shared (10 s of CPU): slow.
@pytest.mark.parametrize("name", [pytest.param("segformer", marks=pytest.mark.slow), "selfie"])
def test_smoothquant_exact_in_float(name):
    from architectures import build
    from exporter.convert.signature import export_model
    from exporter.ptq.smoothquant import smooth

    config = small_config(name)
    fixed = export_model(build(config), config)
    rng = np.random.default_rng(6)
    for layer in fixed.layers:  # outlier channels, as trained transformers have them
        if layer.__class__.__name__ == "LayerNormalization":
            gamma, beta = layer.get_weights()
            layer.set_weights([gamma * 10 ** rng.uniform(-1, 1, gamma.shape), beta])
    x = pixels(config, 2)
    before = fixed.predict(x, verbose=0)
    recipe = smooth(fixed, pixels(config, 2, seed=1))
    smoothed = [e for e, v in recipe["edges"].items() if v["alpha"] is not None]
    assert smoothed, recipe
    assert all(v["error_after"] <= v["error_before"] for v in recipe["edges"].values())
    assert relative_close(before, fixed.predict(x, verbose=0)) < 1e-5


def test_relu_swap_opens_relu6_pairs_to_equalisation_and_changes_only_clipped_values():
    """ReLU6 stops CLE (relu6(x / s) != relu6(x) / s); after the swap the pair is equalisable, and
    the float function differs from the original only where a pre-activation exceeded 6."""
    from exporter.keras import keras
    from exporter.ptq import apply_methods
    from exporter.ptq.equalize import pairs
    from exporter.ptq.relu_swap import relu6_layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU(6.0, name="c1_relu6")(x)
    x = keras.layers.Conv2D(8, 1, activation="relu6", name="c2")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, name="head")(x))
    assert pairs(model) == [] and [layer.name for layer in relu6_layers(model)] == ["c1_relu6", "c2"]

    class Config:
        name = "tiny"

    small = np.random.default_rng(0).normal(0, 0.05, (2, 8, 8, 3)).astype(np.float32)  # never reaches 6
    big = small * 400  # clips
    swapped, recipe = apply_methods(model, Config, small, ["relu_swap", "cle"])
    assert recipe["methods"] == ["relu_swap", "cle"] and recipe["relu_swap"]["swapped"] == ["c1_relu6", "c2"]
    assert {e.name for e in pairs(swapped)} == {"c1->c2", "c2->head"} and recipe["cle"]["pairs"]
    assert relu6_layers(model) and not relu6_layers(swapped)  # the caller's model keeps its ReLU6
    assert relative_close(model.predict(small, verbose=0), swapped.predict(small, verbose=0)) < 1e-5
    assert relative_close(model.predict(big, verbose=0), swapped.predict(big, verbose=0)) > 1e-2


def test_bias_absorption_moves_the_always_on_part_of_a_relu_into_the_next_bias():
    """After equalisation, a ReLU channel that never falls below c > 0 on the calibration samples
    hands c to the pointwise consumer's bias: the outputs on those samples are unchanged and the
    activation's range starts at 0."""
    from exporter.keras import keras
    from exporter.ptq.equalize import absorb_biases, equalize

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="pw")(x))
    kernel, bias = model.get_layer("c1").get_weights()
    model.get_layer("c1").set_weights([0.1 * kernel, bias + 5.0])  # every channel always on
    images = np.random.default_rng(0).uniform(-1, 1, (6, 8, 8, 3)).astype(np.float32)
    before = model.predict(images, verbose=0)
    recipe = equalize(model, images=images)
    assert recipe["biases_absorbed"] == {"c1->pw": 6}
    assert relative_close(before, model.predict(images, verbose=0)) < 1e-5
    relu_out = keras.Model(model.inputs, model.get_layer("c1").output).predict(images, verbose=0)
    np.testing.assert_allclose(relu_out.reshape(-1, 6).min(axis=0), 0.0, atol=1e-4)
    assert absorb_biases(model, images) == {}  # nothing left above zero
