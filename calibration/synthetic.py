"""The built-in dataset: deterministic synthetic scenes with any number of classes.

Class 0 is a textured background; every other class is a kind of object with its own shape and
hue, drawn with random size, rotation, stripes, outlines, occlusion and sensor noise. Colour and
shape both carry the class, so a small network learns it in a minute or two and parity is
measured on a trained model rather than on random weights. Sample i depends only on (seed, i).
"""

from __future__ import annotations

import colorsys

import numpy as np

from calibration.dataset import SegData, Splits

SHAPES = ("disc", "box", "triangle", "ring", "diamond", "cross", "ellipse", "star")
VAL_SEED_OFFSET = 1_000_003  # held-out scenes come from a disjoint seed stream


def synthetic_labels(num_classes: int) -> tuple[str, ...]:
    names = ["background"]
    for c in range(1, num_classes):
        shape = SHAPES[(c - 1) % len(SHAPES)]
        names.append(shape if c <= len(SHAPES) else f"{shape}_{c}")
    return tuple(names)


def _class_colour(c: int, num_classes: int, rng) -> np.ndarray:
    hue = ((c - 1) / max(1, num_classes - 1) + rng.uniform(-0.03, 0.03)) % 1.0
    sat = rng.uniform(0.55, 1.0)
    val = rng.uniform(0.55, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """u, v: pixel coordinates in the object's rotated frame, centred; a, b: half sizes."""
    if shape == "disc":
        return u**2 + v**2 <= a**2
    if shape == "ellipse":
        return (u / a) ** 2 + (v / (0.55 * a)) ** 2 <= 1.0
    if shape == "box":
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if shape == "ring":
        r2 = u**2 + v**2
        return (r2 <= a**2) & (r2 >= (0.55 * a) ** 2)
    if shape == "diamond":
        return np.abs(u) / a + np.abs(v) / b <= 1.0
    if shape == "cross":
        return ((np.abs(u) <= a) & (np.abs(v) <= a / 3)) | ((np.abs(u) <= a / 3) & (np.abs(v) <= a))
    if shape == "triangle":  # pointing "up" in the rotated frame
        return (v <= a / 2) & (v >= -a + 1.8 * np.abs(u))
    if shape == "star":
        theta = np.arctan2(v, u)
        radius = a * (0.6 + 0.4 * np.cos(5 * theta))
        return u**2 + v**2 <= radius**2
    raise ValueError(shape)


def render_scene(index: int, size: tuple[int, int], num_classes: int, seed: int = 0):
    """One (image uint8 [H,W,3], mask uint8 [H,W]) pair."""
    rng = np.random.default_rng([seed, index])
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Background: a dull gradient between two low-saturation colours plus a random texture.
    c0, c1 = (np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.25), rng.uniform(0.2, 0.8))) * 255
              for _ in range(2))
    angle = rng.uniform(0, np.pi)
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w) + 1) / 2
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    freq = rng.uniform(0.05, 0.4)
    texture = np.sin(freq * (xx * np.cos(2 * angle) + yy * np.sin(2 * angle)))
    image += rng.uniform(0, 25) * texture[..., None]
    mask = np.zeros((h, w), np.uint8)

    for _ in range(rng.integers(1, 5)):
        c = int(rng.integers(1, num_classes))
        shape = SHAPES[(c - 1) % len(SHAPES)]
        a = rng.uniform(0.12, 0.3) * min(h, w)
        b = a * rng.uniform(0.5, 1.0)
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        rot = rng.uniform(0, 2 * np.pi)
        u = (xx - cx) * np.cos(rot) + (yy - cy) * np.sin(rot)
        v = -(xx - cx) * np.sin(rot) + (yy - cy) * np.cos(rot)
        inside = _shape_mask(shape, u, v, a, b)
        if not inside.any():
            continue
        colour = _class_colour(c, num_classes, rng)
        stripes = 1.0 + 0.15 * np.sin(rng.uniform(0.2, 0.6) * u + rng.uniform(0, 6))
        fill = colour[None, None, :] * stripes[..., None]
        if rng.random() < 0.5:  # a darker outline: part of the object, a classic edge case
            shrunk = _shape_mask(shape, u * 1.12, v * 1.12, a, b)
            fill = np.where((inside & ~shrunk)[..., None], fill * 0.45, fill)
        image = np.where(inside[..., None], fill, image)
        mask[inside] = c

    image += rng.normal(0, rng.uniform(0, 8), size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_synthetic(count: int, size: tuple[int, int], num_classes: int, seed: int = 0) -> SegData:
    pairs = [render_scene(i, size, num_classes, seed) for i in range(count)]
    return SegData(
        images=np.stack([p[0] for p in pairs]),
        masks=np.stack([p[1] for p in pairs]),
        labels=synthetic_labels(num_classes),
        ids=[f"synthetic:{seed}:{i}" for i in range(count)],
        source=f"synthetic scenes ({num_classes} classes, seed {seed})",
    )


def synthetic_splits(train: int, val: int, size: tuple[int, int], num_classes: int, seed: int = 0) -> Splits:
    return Splits(
        train=make_synthetic(train, size, num_classes, seed),
        val=make_synthetic(val, size, num_classes, seed + VAL_SEED_OFFSET),
    )
