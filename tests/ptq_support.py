"""Small models for the post-training method tests (exporter/ptq)."""

from __future__ import annotations

import numpy as np


def small_cnn(seed: int = 0):
    """Conv(ReLU) -> depthwise -> BN -> ReLU -> 1x1 conv -> BN -> ReLU -> Dense, at 16x16, with
    per-channel weight scales spread over two decades (what equalisation exists for)."""
    from exporter.keras import keras

    L = keras.layers
    inputs = keras.Input((16, 16, 3), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(name="dw_relu")(x)
    x = L.Conv2D(12, 1, use_bias=False, name="pw")(x)
    x = L.BatchNormalization(name="pw_bn")(x)
    x = L.ReLU(name="pw_relu")(x)
    x = L.Dense(4, name="head")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.__class__.__name__ == "BatchNormalization":
            c = weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)])
        else:
            k = rng.normal(0, 0.3, weights[0].shape)
            spread = 10 ** rng.uniform(-1, 1, k.shape[-2 if layer.__class__.__name__ == "DepthwiseConv2D" else -1])
            k = k * (spread[:, None] if layer.__class__.__name__ == "DepthwiseConv2D" else spread)
            layer.set_weights([k] + [rng.normal(0, 0.1, w.shape) for w in weights[1:]])
    return model


def relative_close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-5) -> float:
    """max |a - b| relative to max |a| (float outputs of rescaled models differ by rounding only)."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def weights_on_grid(model):
    """A copy of `model` whose weight layers compute with their int8-grid kernels (float biases),
    as the int8 file's weights do."""
    from exporter.keras import keras
    from exporter.ptq.grid import fake_quant
    from exporter.ptq.graph import units

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for unit in units(copy).values():
        if unit.can_set_bias():
            unit.set_folded(fake_quant(unit.kernel()), unit.bias())
    return copy
