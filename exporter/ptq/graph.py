"""Where a post-training method may act in a Keras functional graph, and how to change it there.

Every method here rescales channels or rewrites weights of the float model that is converted
(`export_model`'s batch-1 rebuild), so the converter's own int8 rounding of the result ships.
This module holds the one place for: which layers carry weights (`Unit`: a Conv2D,
DepthwiseConv2D or Dense, with the BatchNormalization the converter folds into it), how a
unit's output channels are scaled, how a consumer's input channels are scaled, and which
producer -> consumers edges allow a positive per-channel scale to pass (`scalable_edges`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Layers that pass each channel through unchanged at inference (zero padding stays zero when scaled).
PASS_THROUGH = ("Dropout", "ZeroPadding2D")


def layer_kind(layer) -> str:
    return layer.__class__.__name__


def graph_edges(model) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(producers, consumers) by layer name, from the functional model's config."""
    producers: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for entry in model.get_config()["layers"]:
        names = []
        for node in entry.get("inbound_nodes", []):
            items = node if isinstance(node, list) else node.get("args", [])
            for item in items:
                if isinstance(item, list) and item and isinstance(item[0], str):
                    names.append(item[0])
        producers[entry["name"]] = names
        for name in names:
            consumers[name].append(entry["name"])
    return producers, consumers


def activation_of(layer) -> str:
    """'linear', 'relu', 'relu6' or 'other' for a layer's own (fused) activation or an activation layer."""
    kind = layer_kind(layer)
    if kind == "ReLU":
        cfg = layer.get_config()
        if cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
            return "other"
        max_value = cfg.get("max_value")
        if max_value is None:
            return "relu"
        return "relu6" if float(max_value) == 6.0 else "other"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None) if activation is not None else "linear"
    if kind == "Activation":
        name = layer.get_config()["activation"]
    if name in ("linear", None):
        return "linear"
    return {"relu": "relu", "relu6": "relu6"}.get(name, "other")


def is_weight_layer(layer) -> bool:
    kind = layer_kind(layer)
    if kind == "Conv2D":
        return layer.groups == 1
    if kind == "DepthwiseConv2D":
        return layer.depth_multiplier == 1
    return kind == "Dense"


@dataclasses.dataclass
class Unit:
    """A weight layer and the BatchNormalization the converter folds into it (its sole consumer).

    `kernel()`/`bias()` are the folded values the converter quantises (float64), with output
    channels on the last axis of `kernel()` for every kind: Conv2D [kh, kw, in, out],
    DepthwiseConv2D [kh, kw, C] (C both in and out), Dense [in, out].
    """

    layer: object
    bn: object | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> str:
        return layer_kind(self.layer)

    @property
    def output_layer(self):
        return self.bn if self.bn is not None else self.layer

    def _bn_scale_shift(self):
        if self.bn is None:
            return None
        gamma, beta, mean, var = _bn_weights(self.bn)
        scale = gamma / np.sqrt(var + self.bn.epsilon)
        return scale, beta - mean * scale

    def raw_kernel(self) -> np.ndarray:
        k = self.layer.get_weights()[0].astype(np.float64)
        return k[..., 0] if self.kind == "DepthwiseConv2D" else k

    def kernel(self) -> np.ndarray:
        k = self.raw_kernel()
        folded = self._bn_scale_shift()
        return k if folded is None else k * folded[0]

    def bias(self) -> np.ndarray:
        weights = self.layer.get_weights()
        b = weights[1].astype(np.float64) if self.layer.use_bias else np.zeros(self.channels)
        folded = self._bn_scale_shift()
        return b if folded is None else b * folded[0] + folded[1]

    @property
    def channels(self) -> int:
        return self.layer.get_weights()[0].shape[-2 if self.kind == "DepthwiseConv2D" else -1]

    def can_set_bias(self) -> bool:
        return self.bn is not None or self.layer.use_bias

    def set_folded(self, kernel: np.ndarray, bias: np.ndarray) -> None:
        """Write a folded kernel and bias; a BN becomes the identity plus the bias (same graph, so
        the converter folds it again: gamma/sqrt(var+eps) is 1 to a float32 ulp)."""
        k = kernel[..., None] if self.kind == "DepthwiseConv2D" else kernel
        if self.bn is None:
            if not self.layer.use_bias and np.any(bias != 0):
                raise ValueError(f"{self.name} has no bias to write")
            self.layer.set_weights([k.astype(np.float32)] + ([bias.astype(np.float32)] if self.layer.use_bias else []))
            return
        eps = self.bn.epsilon
        conv = [k.astype(np.float32)] + ([np.zeros(self.channels, np.float32)] if self.layer.use_bias else [])
        self.layer.set_weights(conv)
        ones = np.ones(self.channels, np.float32)
        _set_bn_weights(self.bn, ones, bias.astype(np.float32), np.zeros_like(ones), ones - np.float32(eps))

    def scale_outputs(self, factor: np.ndarray) -> None:
        """Multiply this unit's output channels by `factor` (exact: in the BN if any, else kernel and bias)."""
        if self.bn is not None:
            gamma, beta, mean, var = _bn_weights(self.bn)
            _set_bn_weights(self.bn, gamma * factor, beta * factor, mean, var)
            return
        weights = self.layer.get_weights()
        k = weights[0].astype(np.float64)
        k = k * (factor[:, None] if self.kind == "DepthwiseConv2D" else factor)
        rest = [weights[1].astype(np.float64) * factor] if self.layer.use_bias else []
        self.layer.set_weights([k.astype(np.float32)] + [r.astype(np.float32) for r in rest])


def _bn_weights(bn):
    w = [v.astype(np.float64) for v in bn.get_weights()]
    if len(w) == 4:
        return w
    # center/scale off: fill the missing gamma (ones) / beta (zeros).
    raise ValueError(f"{bn.name}: BatchNormalization without gamma and beta is not supported")


def _set_bn_weights(bn, gamma, beta, mean, var) -> None:
    bn.set_weights([np.asarray(v, np.float32) for v in (gamma, beta, mean, var)])


def input_range(consumer, unit_of: dict) -> np.ndarray:
    """Per input channel max |w| of a consumer, folded with its own BN (what the converter quantises)."""
    unit = unit_of.get(consumer.name) or Unit(consumer)
    k = np.abs(unit.kernel())
    if unit.kind == "DepthwiseConv2D":
        return k.max(axis=(0, 1))
    if unit.kind == "Dense":
        return k.max(axis=1)
    return k.max(axis=(0, 1, 3))


def scale_inputs(consumer, factor: np.ndarray) -> None:
    """Multiply a consumer's input channels' weights by `factor` (it then sees inputs / factor exactly)."""
    weights = consumer.get_weights()
    k = weights[0].astype(np.float64)
    # Input channels sit on axis -2 of every kind: Conv2D [kh, kw, in, out], depthwise
    # [kh, kw, C, 1], Dense [in, out].
    k = k * factor[:, None]
    consumer.set_weights([k.astype(np.float32)] + weights[1:])


def units(model) -> dict[str, Unit]:
    """Every weight layer as a Unit (with its folded BN), by layer name."""
    _, consumers = graph_edges(model)
    found = {}
    for layer in model.layers:
        if not is_weight_layer(layer):
            continue
        after = consumers.get(layer.name, [])
        bn = None
        if len(after) == 1 and activation_of(layer) == "linear":
            nxt = model.get_layer(after[0])
            if layer_kind(nxt) == "BatchNormalization" and _bn_on_last_axis(nxt):
                bn = nxt
        found[layer.name] = Unit(layer, bn)
    return found


def _bn_on_last_axis(bn) -> bool:
    axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    return list(axis) in ([-1], [len(bn.input_shape) - 1]) and len(bn.get_weights()) == 4


@dataclasses.dataclass
class Edge:
    """A producer whose output channels may be scaled by a positive factor s, compensated exactly by
    scaling the `consumers`' input channels by s (everything between is per-channel homogeneous)."""

    producer: object  # Unit, or a LayerNormalization layer
    consumers: list
    activation: str  # what lies between: 'linear' or 'relu'

    @property
    def name(self) -> str:
        return f"{self.producer.name}->{','.join(c.name for c in self.consumers)}"

    def scale(self, s: np.ndarray) -> None:
        """Producer outputs / s, consumer inputs * s: the float function is unchanged."""
        inverse = 1.0 / s
        if isinstance(self.producer, Unit):
            self.producer.scale_outputs(inverse)
        else:  # LayerNormalization: gamma and beta
            gamma, beta = (w.astype(np.float64) for w in self.producer.get_weights())
            self.producer.set_weights([(gamma * inverse).astype(np.float32), (beta * inverse).astype(np.float32)])
        for consumer in self.consumers:
            scale_inputs(consumer, s)


def scalable_edges(model) -> list[Edge]:
    """Every producer -> consumers edge through which a positive per-channel scale passes exactly.

    Producer: a weight unit (after its folded BN) or a LayerNormalization on the last axis with
    gamma and beta. Between: an optional ReLU (fused or a layer; ReLU6 and other activations stop
    it: relu6(x / s) != relu6(x) / s) and pass-through layers. Consumers: every layer reading the
    result is a Conv2D, DepthwiseConv2D (multiplier 1) or Dense (a residual Add, a Multiply or a
    reshape into attention heads stops it).
    """
    unit_of = units(model)
    _, consumers = graph_edges(model)
    edges = []
    producers = list(unit_of.values()) + [
        layer for layer in model.layers
        if layer_kind(layer) == "LayerNormalization" and _ln_scalable(layer)
    ]
    for producer in producers:
        if isinstance(producer, Unit):
            last = producer.output_layer
            activation = activation_of(producer.layer)
        else:
            last, activation = producer, "linear"
        if activation not in ("linear", "relu"):
            continue
        frontier = consumers.get(last.name, [])
        if activation == "linear" and len(frontier) == 1:
            nxt = model.get_layer(frontier[0])
            if activation_of(nxt) == "relu" and layer_kind(nxt) in ("ReLU", "Activation"):
                activation, frontier = "relu", consumers.get(nxt.name, [])
        targets, ok = [], bool(frontier)
        stack = list(frontier)
        while stack and ok:
            layer = model.get_layer(stack.pop())
            if layer_kind(layer) in PASS_THROUGH:
                stack.extend(consumers.get(layer.name, []))
            elif is_weight_layer(layer):
                targets.append(layer)
            else:
                ok = False
        if ok and targets:
            edges.append(Edge(producer, targets, activation))
    return edges


def _ln_scalable(layer) -> bool:
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return layer.center and layer.scale and list(axis) in ([-1], [len(layer.input_shape) - 1])
