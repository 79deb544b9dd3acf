"""Cross-layer equalisation (Nagel et al. 2019, "Data-Free Quantization", section 4.1).

For a layer pair W1 -> (ReLU) -> W2, output channel i of W1 is divided by s_i and input channel
i of W2 multiplied by s_i; relu(x / s) = relu(x) / s for s > 0, so the float function is
unchanged. s_i = sqrt(r1_i * r2_i) / r2_i (r1: W1's per-output-channel range, r2: W2's
per-input-channel range, both BN-folded as the converter folds them) makes both ranges
sqrt(r1_i * r2_i), which maximises the pair's summed per-channel precision. Chains
(conv -> depthwise -> conv) converge by sweeping all pairs a few times.

Then high-bias absorption (section 4.1.2): where a ReLU output never falls below c_i > 0 on the
calibration samples (equalisation can leave such channels), c_i moves out of the producer's bias
into a 1x1-conv or Dense consumer's bias (b2 += W2^T c): relu(x) - c = relu(x - c) wherever
x >= c, so the outputs on those samples are unchanged and the int8 range of that activation no
longer spends codes on [0, c). Consumers with a k x k window are left alone: at the zero-padded
border the absorbed c would go missing.

Only pairs with one consumer and ReLU or nothing between (`graph.scalable_edges`): ReLU6 is not
positively homogeneous (relu6(x / s) clips at 6 s), so those pairs (UNet's MobileNetV2, DeepLab's
hard-swish stages) are left as they are and listed in the recipe as skipped; the `relu_swap`
method (exporter.ptq.relu_swap) opens them by changing what the model computes.
"""

from __future__ import annotations

import numpy as np

from exporter.ptq.graph import Unit, graph_edges, input_range, scalable_edges, units

SWEEPS = 8
# Keep each scale inside this factor: a dead channel (range ~0) must not blow up its partner.
MAX_SCALE = 1e4
# A channel's minimum below this fraction of its maximum is left where it is.
ABSORB_FLOOR = 1e-4


def pairs(model) -> list:
    """The equalisable pairs: a weight unit feeding one weight layer through ReLU or nothing."""
    return [e for e in scalable_edges(model) if isinstance(e.producer, Unit) and len(e.consumers) == 1]


def pair_ranges(edge, unit_of) -> tuple[np.ndarray, np.ndarray]:
    r1 = np.abs(edge.producer.kernel()).reshape(-1, edge.producer.channels).max(axis=0)
    return r1, input_range(edge.consumers[0], unit_of)


def pair_precision(edge, unit_of) -> float:
    """Nagel's objective for one pair: sum_i (r1_i / R1) (r2_i / R2); CLE maximises it."""
    r1, r2 = pair_ranges(edge, unit_of)
    if r1.max() == 0 or r2.max() == 0:
        return 0.0
    return float(np.sum((r1 / r1.max()) * (r2 / r2.max())))


def relu6_pairs(model) -> list[str]:
    """Weight layers followed by ReLU6 (not equalised; reported so the recipe says what was skipped)."""
    _, consumers = graph_edges(model)
    from exporter.ptq.graph import activation_of

    skipped = []
    for unit in units(model).values():
        after = consumers.get(unit.output_layer.name, [])
        acts = [activation_of(unit.layer)] + [activation_of(model.get_layer(n)) for n in after if model.get_layer(n).__class__.__name__ == "ReLU"]
        if "relu6" in acts:
            skipped.append(unit.name)
    return skipped


def absorb_biases(model, images) -> dict:
    """High-bias absorption on every ReLU pair with a pointwise consumer (module docstring), in
    place; {pair: channels absorbed} for the recipe."""
    from exporter.keras import keras

    unit_of = units(model)
    edges = [e for e in pairs(model) if e.activation == "relu" and e.producer.can_set_bias()
             and e.consumers[0].name in unit_of and unit_of[e.consumers[0].name].can_set_bias()
             and _pointwise(unit_of[e.consumers[0].name])]
    if not edges or images is None or not len(images):
        return {}
    probe = keras.Model(model.inputs, [e.consumers[0].input for e in edges])
    outputs = probe.predict(np.asarray(images, np.float32), verbose=0, batch_size=8)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    absorbed = {}
    for edge, seen in zip(edges, outputs):
        flat = seen.reshape(-1, seen.shape[-1]).astype(np.float64)
        c = np.maximum(flat.min(axis=0), 0.0)
        c[c <= ABSORB_FLOOR * flat.max(axis=0)] = 0.0  # float round-off, not an always-on channel
        if not np.any(c > 0):
            continue
        producer, consumer = edge.producer, unit_of[edge.consumers[0].name]
        producer.set_folded(producer.kernel(), producer.bias() - c)
        kernel = consumer.kernel()
        w = kernel.reshape(-1, kernel.shape[-1]) if consumer.kind == "Conv2D" else kernel  # [in, out]
        consumer.set_folded(kernel, consumer.bias() + c @ w)
        absorbed[edge.name] = int(np.count_nonzero(c))
    return absorbed


def _pointwise(unit) -> bool:
    return unit.kind == "Dense" or (unit.kind == "Conv2D" and tuple(unit.layer.kernel_size) == (1, 1))


def equalize(model, sweeps: int = SWEEPS, images=None) -> dict:
    """Equalise every pair of `model` in place, then absorb high biases on the calibration
    `images` (when given); returns the recipe entry."""
    edges = pairs(model)
    unit_of = units(model)
    before = {e.name: pair_precision(e, unit_of) for e in edges}
    for _ in range(sweeps):
        for edge in edges:
            r1, r2 = pair_ranges(edge, unit_of)
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
            edge.scale(np.clip(s, 1.0 / MAX_SCALE, MAX_SCALE))
    after = {e.name: pair_precision(e, unit_of) for e in edges}
    return {
        "pairs": [e.name for e in edges],
        "precision_before": round(sum(before.values()), 3),
        "precision_after": round(sum(after.values()), 3),
        "skipped_relu6": relu6_pairs(model),
        "biases_absorbed": absorb_biases(model, images),
    }
