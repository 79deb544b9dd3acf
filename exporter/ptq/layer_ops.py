"""A weight layer's linear part as a plain TF op on given inputs and a given (folded) kernel.

Bias correction and AdaRound evaluate a layer with other weights than it holds (its int8 grid
values), on inputs captured from the model; this is the one place that knows each kind's op.
"""

from __future__ import annotations

import numpy as np


def apply_kernel(unit, x, kernel):
    """unit's convolution / matmul of x with `kernel` (Unit.kernel() layout), no bias, no activation."""
    from exporter.keras import tf

    layer = unit.layer
    k = tf.constant(np.asarray(kernel, np.float32))
    if unit.kind == "Dense":
        return tf.tensordot(x, k, [[len(x.shape) - 1], [0]])
    padding = layer.padding.upper()
    if unit.kind == "DepthwiseConv2D":
        return tf.nn.depthwise_conv2d(x, k[..., None], strides=(1, *layer.strides, 1), padding=padding,
                                      dilations=layer.dilation_rate)
    return tf.nn.conv2d(x, k, strides=layer.strides, padding=padding, dilations=layer.dilation_rate)


def channel_mean(y) -> np.ndarray:
    """Mean over every axis but the last (channels), float64."""
    y = np.asarray(y, np.float64)
    return y.reshape(-1, y.shape[-1]).mean(axis=0)


def layer_inputs(model, names: list[str], images: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    """The inputs of the named layers on `images`, concatenated over batches of `batch` images."""
    from exporter.keras import keras

    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in names])
    parts = [[] for _ in names]
    for start in range(0, len(images), batch):
        out = probe(images[start:start + batch], training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        for part, value in zip(parts, out):
            part.append(np.asarray(value))
    return [np.concatenate(p) for p in parts]
