"""Colours for class masks in previews and reports."""

import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """A fixed, distinguishable colour per class; index 255 (ignore) is white."""
    import colorsys

    colours = np.zeros((256, 3), np.uint8)
    colours[255] = 255
    for c in range(1, min(num_classes, 255)):
        r, g, b = colorsys.hsv_to_rgb((c * 0.618034) % 1.0, 0.75, 0.95)
        colours[c] = (int(r * 255), int(g * 255), int(b * 255))
    return colours


def colourise(mask: np.ndarray, num_classes: int) -> np.ndarray:
    return palette(num_classes)[mask]
