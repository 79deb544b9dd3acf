"""ReLU6 -> ReLU, so cross-layer equalisation can act on MobileNet-style pairs (AIMET's CLE swaps
them the same way before equalising).

relu6(x / s) != relu6(x) / s (the clip stays at 6), so `equalize` skips every pair joined by a
ReLU6: in UNet's MobileNetV2 encoder that is all of them. Swapping the ReLU6 for ReLU makes those
pairs positively homogeneous, at the price of the clip: the float function changes wherever a
pre-activation exceeded 6. That change is not hidden: the method's file is measured against the
original float model like every other, and the recipe counts the swapped layers.
"""

from __future__ import annotations

from exporter.ptq.graph import activation_of, layer_kind


def relu6_layers(model) -> list:
    """Layers applying ReLU6: ReLU(max_value=6) layers and layers with a fused relu6 activation."""
    return [layer for layer in model.layers if activation_of(layer) == "relu6"]


def swap(model) -> dict:
    """Replace every ReLU6 of `model` (in place) by ReLU; the recipe entry."""
    from exporter.keras import keras

    swapped = []
    for layer in relu6_layers(model):
        if layer_kind(layer) == "ReLU":
            layer.max_value = None  # ReLU.call reads it on every call
        else:
            layer.activation = keras.activations.relu
        swapped.append(layer.name)
    return {"swapped": swapped}
