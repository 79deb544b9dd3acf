"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

Per layer, each weight's rounding (down or up on the int8 grid) is learned so that the layer's
output on calibration inputs stays closest to float: W~ = s * (floor(W / s) + h(V)), h a
rectified sigmoid, with a regulariser that drives every h to 0 or 1 as its exponent anneals.
Layers are done one at a time on inputs captured from the float model (im2col rows sampled
from the calibration images, so each step is one small matmul).

What ships: the rounded weights themselves, written so that the converter's own per-channel
round-to-nearest reproduces them exactly (`grid`): each output channel keeps its max |w| (its
largest weight stays at code +-127, so the converter derives the same scale) and every weight
is code * scale. A layer whose learned rounding is not better than nearest on the calibration
rows keeps nearest rounding.

Conv2D and DepthwiseConv2D only: those are the per-channel int8 kernels the converter writes
(a Dense on 4-D tensors may become FULLY_CONNECTED or BATCH_MATMUL, whose weight quantisation
differs).
"""

from __future__ import annotations

import numpy as np

from exporter.ptq.grid import QMAX, channel_scales, nearest_codes
from exporter.ptq.graph import units
from exporter.ptq.layer_ops import layer_inputs

ITERATIONS = 300
MAX_LAYERS = 40
ROWS = 4096  # im2col rows sampled per layer
MAX_IMAGES = 8
ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch
REG_WEIGHT = 0.01
WARMUP = 0.2  # fraction of iterations without the rounding regulariser
BETA = (20.0, 2.0)  # the regulariser's exponent, annealed


def targets(model, max_layers: int = MAX_LAYERS) -> list:
    found = [u for u in units(model).values() if u.kind in ("Conv2D", "DepthwiseConv2D") and u.can_set_bias()]
    return found[:max_layers]


def im2col(unit, x: np.ndarray, rows: int, rng) -> np.ndarray:
    """Sampled input patches: [rows, kh*kw*in] for a conv, [rows, kh*kw, C] for a depthwise conv."""
    from exporter.keras import tf

    layer = unit.layer
    kh, kw = layer.kernel_size
    patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
                                       rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper())
    patches = np.asarray(patches).reshape(-1, patches.shape[-1])
    patches = patches[rng.choice(len(patches), size=min(rows, len(patches)), replace=False)]
    if unit.kind == "DepthwiseConv2D":
        return patches.reshape(len(patches), kh * kw, x.shape[-1])
    return patches


def _matmul(unit, patches, w):
    """Layer output rows for weights w ([K, out] conv, [K, C] depthwise)."""
    from exporter.keras import tf

    if unit.kind == "DepthwiseConv2D":
        return tf.reduce_sum(patches * w[None], axis=1)
    return tf.linalg.matmul(patches, w)


def learn_codes(unit, patches: np.ndarray, iterations: int = ITERATIONS) -> tuple[np.ndarray, dict]:
    """The learned int8 codes for unit's folded kernel (same shape), and the errors before/after."""
    from exporter.keras import keras, tf

    kernel = unit.kernel()
    scale = channel_scales(kernel)
    flat = (kernel / scale).reshape(-1, kernel.shape[-1])
    base = np.floor(flat)
    frac = np.clip(flat - base, 0.01, 0.99)
    v = tf.Variable(-np.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0), dtype=tf.float32)
    x = tf.constant(patches, tf.float32)
    s = tf.constant(scale, tf.float32)
    base_t = tf.constant(base, tf.float32)
    target = _matmul(unit, x, tf.constant(flat, tf.float32) * s)
    opt = keras.optimizers.Adam(1e-2)

    def h():
        return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    @tf.function
    def step(beta, reg_weight):
        with tf.GradientTape() as tape:
            soft = tf.clip_by_value(base_t + h(), -QMAX, QMAX) * s
            rec = tf.reduce_mean(tf.square(target - _matmul(unit, x, soft)))
            reg = tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * h() - 1.0), beta))
            loss = rec / norm + reg_weight * reg
        opt.apply_gradients([(tape.gradient(loss, v), v)])

    def error(codes):
        return float(tf.reduce_mean(tf.square(target - _matmul(unit, x, tf.constant(codes, tf.float32) * s))))

    nearest = nearest_codes(kernel).reshape(flat.shape)
    norm = tf.constant(max(error(nearest), 1e-20), tf.float32)
    warm = int(WARMUP * iterations)
    for i in range(iterations):
        if i < warm:
            step(tf.constant(BETA[0]), tf.constant(0.0))
        else:
            t = (i - warm) / max(iterations - warm, 1)
            step(tf.constant(BETA[0] + t * (BETA[1] - BETA[0])), tf.constant(REG_WEIGHT))
    codes = np.clip(base + (h().numpy() >= 0.5), -QMAX, QMAX)
    # Each channel's largest weight stays at +-127, so the converter derives the same scale.
    peak = np.abs(flat).argmax(axis=0)
    cols = np.arange(flat.shape[1])
    codes[peak, cols] = np.sign(flat[peak, cols]) * QMAX
    before, after = error(nearest), error(codes)
    if after >= before:
        codes = nearest
    stats = {"mse_nearest": before, "mse_adaround": min(after, before),
             "flipped": float((codes != nearest).mean())}
    return codes.reshape(kernel.shape), stats


def adaround(model, calibration_images: np.ndarray, iterations: int = ITERATIONS, max_layers: int = MAX_LAYERS,
             rows: int = ROWS, seed: int = 0) -> dict:
    """Put `model`'s conv weights (up to `max_layers`, graph order) on AdaRound's grid, in place."""
    rng = np.random.default_rng(seed)
    images = np.asarray(calibration_images[:MAX_IMAGES], np.float32)
    done = {}
    for unit in targets(model, max_layers):
        (x,) = layer_inputs(model, [unit.name], images)
        codes, stats = learn_codes(unit, im2col(unit, x, rows, rng), iterations)
        kernel = unit.kernel()
        unit.set_folded(codes * channel_scales(kernel), unit.bias())
        done[unit.name] = {k: round(v, 8) for k, v in stats.items()}
    return {"layers": done, "iterations": iterations}
