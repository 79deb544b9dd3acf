"""Training augmentation for `--augment`: flips, small rotations, scale-and-crop, colour jitter and
grayscale at a capped rate, drawn per epoch from (seed, epoch) so a resumed run replays them.

A spec is a preset optionally followed by per-transform overrides: `standard`,
`light,rotate=5,grayscale=0`. One geometric transform (flip, rotation, scale, crop offset) moves
image and mask together; masks are sampled by nearest neighbour (bilinear would invent labels
along edges) and pixels that come from outside the image are IGNORE_LABEL in the mask, so the loss
never learns from padding. Hue is never jittered: on the seed's data colour carries the class.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from calibration.dataset import IGNORE_LABEL
from exporter.errors import ExporterError

# The seed's models learnt to ignore colour from too many greyscale samples: no epoch holds more than this.
MAX_GRAYSCALE = 0.2
PAD_VALUE = 0  # image pixels from outside the frame (their mask pixels are IGNORE_LABEL)
_STREAM = 1  # augmentation draws: rng [seed, epoch, _STREAM], apart from the order and flips of [seed, epoch]


@dataclasses.dataclass(frozen=True)
class Augment:
    hflip: float = 0.5  # probability of a left-right flip (the only transform without --augment)
    rotate: float = 0.0  # maximum rotation, degrees either way
    scale: float = 0.0  # zoom drawn in [1 - scale, 1 + scale]; zooming in crops at a random offset
    brightness: float = 0.0  # multiplicative, [1 - b, 1 + b]
    contrast: float = 0.0  # around each image's mean, [1 - c, 1 + c]
    saturation: float = 0.0  # towards or away from the image's grey, [1 - s, 1 + s]
    grayscale: float = 0.0  # fraction of each epoch's samples turned grey (at most MAX_GRAYSCALE)

    @property
    def geometric(self) -> bool:
        return bool(self.rotate or self.scale)

    @property
    def colour(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.grayscale)


PRESETS = {
    "off": Augment(),
    "light": Augment(rotate=5, scale=0.1, brightness=0.1, contrast=0.1, saturation=0.1, grayscale=0.05),
    "standard": Augment(rotate=15, scale=0.25, brightness=0.2, contrast=0.2, saturation=0.2, grayscale=0.1),
}
DEFAULT_AUGMENT = "off"
_LIMITS = {"hflip": 1.0, "rotate": 45.0, "scale": 0.5, "brightness": 0.9, "contrast": 0.9, "saturation": 1.0,
           "grayscale": MAX_GRAYSCALE}


def parse_augment(spec: str | None) -> Augment:
    """`PRESET[,name=value...]` -> Augment; ExporterError names the bad part."""
    spec = (spec or DEFAULT_AUGMENT).strip()
    preset, *overrides = [p.strip() for p in spec.split(",")]
    if preset not in PRESETS:
        raise ExporterError(f"--augment {spec!r}: unknown preset {preset!r}; use {', '.join(PRESETS)}, optionally "
                            "followed by overrides such as ,rotate=10,grayscale=0.05")
    values = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in _LIMITS:
            raise ExporterError(f"--augment {spec!r}: {item!r} is not name=value with a name among {', '.join(_LIMITS)}")
        try:
            number = float(value)
        except ValueError:
            raise ExporterError(f"--augment {spec!r}: {name}={value!r} is not a number") from None
        if not 0 <= number <= _LIMITS[name]:
            why = " (more greyscale samples teach the model to ignore colour)" if name == "grayscale" else ""
            raise ExporterError(f"--augment {spec!r}: {name} must be between 0 and {_LIMITS[name]:g}{why}")
        values[name] = number
    return dataclasses.replace(PRESETS[preset], **values)


@dataclasses.dataclass(frozen=True)
class EpochDraws:
    """One epoch's augmentation parameters, one entry per position in the epoch's sample order."""

    flips: np.ndarray
    angles: np.ndarray  # radians
    scales: np.ndarray
    shifts: np.ndarray  # [N, 2] crop offset in [-1, 1] of the room the zoom leaves
    jitter: np.ndarray  # [N, 3] brightness, contrast, saturation factors
    gray: np.ndarray


def draw_epoch(augment: Augment, n: int, seed: int, epoch: int, flip_draws: np.ndarray) -> EpochDraws:
    """`flip_draws`: the uniform draws the run has always used for flips, so `off` changes nothing."""
    rng = np.random.default_rng([seed, epoch, _STREAM])
    gray = np.zeros(n, bool)
    # An exact count, not a coin per sample: the cap holds in every epoch, not only on average.
    gray[rng.choice(n, size=int(np.floor(augment.grayscale * n)), replace=False)] = True
    jitter = 1.0 + rng.uniform(-1, 1, size=(n, 3)) * [augment.brightness, augment.contrast, augment.saturation]
    return EpochDraws(
        flips=flip_draws < augment.hflip,
        angles=np.deg2rad(rng.uniform(-augment.rotate, augment.rotate, size=n)),
        scales=rng.uniform(1 - augment.scale, 1 + augment.scale, size=n),
        shifts=rng.uniform(-1, 1, size=(n, 2)),
        jitter=jitter,
        gray=gray,
    )


def apply(augment: Augment, draws: EpochDraws, positions, images: np.ndarray, masks: np.ndarray):
    """Augment a batch: float32 images [B,H,W,3] and int masks [B,H,W], the samples at `positions`
    of the epoch's order. Returns new arrays."""
    images, masks = images.copy(), masks.copy()
    for b, p in enumerate(positions):
        if draws.flips[p]:
            images[b], masks[b] = images[b][:, ::-1], masks[b][:, ::-1]
        if augment.geometric:
            images[b], masks[b] = warp(images[b], masks[b], draws.angles[p], draws.scales[p], draws.shifts[p])
        if augment.colour:
            images[b] = jitter_colour(images[b], *draws.jitter[p], gray=bool(draws.gray[p]))
    return images, masks


def warp(image: np.ndarray, mask: np.ndarray, angle: float, scale: float, shift=(0.0, 0.0)):
    """Rotate by `angle` (radians) and zoom by `scale` about the centre, moved by `shift` times the room
    a zoom-in leaves: image bilinear (PAD_VALUE outside), mask nearest (IGNORE_LABEL outside)."""
    h, w = mask.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    room = max(1 - 1 / scale, 0.0) / 2  # fraction of the frame a crop may move either way
    sx = cx + ((xx - cx) * cos + (yy - cy) * sin) / scale + shift[1] * room * w
    sy = cy + (-(xx - cx) * sin + (yy - cy) * cos) / scale + shift[0] * room * h

    ny, nx = np.rint(sy).astype(int), np.rint(sx).astype(int)
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    new_mask = np.full_like(mask, IGNORE_LABEL)
    new_mask[inside] = mask[ny[inside], nx[inside]]

    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    padded = np.pad(image.astype(np.float32), ((1, 2), (1, 2), (0, 0)), constant_values=PAD_VALUE)
    y0c, x0c = np.clip(y0 + 1, 0, h + 1), np.clip(x0 + 1, 0, w + 1)  # +1: the pad row/column before 0
    top = padded[y0c, x0c] * (1 - fx) + padded[y0c, x0c + 1] * fx
    bottom = padded[y0c + 1, x0c] * (1 - fx) + padded[y0c + 1, x0c + 1] * fx
    new_image = top * (1 - fy) + bottom * fy
    far = (sy < -1) | (sy > h) | (sx < -1) | (sx > w)  # clipping would smear the edge: pad instead
    new_image[far] = PAD_VALUE
    return new_image.astype(image.dtype), new_mask


def jitter_colour(image: np.ndarray, brightness: float, contrast: float, saturation: float, gray: bool = False):
    """Brightness, contrast and saturation factors (1: unchanged), then grey when `gray`; 0..255 floats."""
    image = image.astype(np.float32) * brightness
    mean = image.mean()
    image = (image - mean) * contrast + mean
    luma = image @ np.array([0.299, 0.587, 0.114], np.float32)
    image = luma[..., None] + (image - luma[..., None]) * (0.0 if gray else saturation)
    return np.clip(image, 0, 255)
