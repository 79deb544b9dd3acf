"""What a model expects of 0..255 RGB pixels: `--input-norm`, one place that parses and applies it.

Every form is a per-channel (x - mean) / std on the 0..255 pixel, the convention of MediaPipe's
metadata (NormalizationOptions): `0,1` is x / 255, `-1,1` x / 127.5 - 1, `0,255` the pixel as is,
`imagenet` (x / 255 - ImageNet mean) / ImageNet std, and `mean=M;std=S` (one value or three,
comma-separated) any other. It lives inside the exported graph (files keep the 0..255 contract),
so the user's training scaling goes with the weights: the TF segmentation tutorial's UNet trains
on x / 255 while our MobileNetV2 default is x / 127.5 - 1, and with the wrong one its file
disagreed with the user's model on 43 % of pixels (issue 25).
"""

from __future__ import annotations

import dataclasses

from exporter.errors import ExporterError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # on 0..1 pixels, as torchvision and SegformerImageProcessor
IMAGENET_STD = (0.229, 0.224, 0.225)

NAMED = {
    "0,1": ((0.0,), (255.0,)),
    "-1,1": ((127.5,), (127.5,)),
    "0,255": ((0.0,), (1.0,)),
    "imagenet": (tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)),
}
CHOICES = "0,1, -1,1, 0,255, imagenet, or mean=M;std=S (one value or three each)"


@dataclasses.dataclass(frozen=True)
class InputNorm:
    spec: str  # canonical text: a NAMED key or "mean=..;std=.."
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> str:
        if self.spec in ("0,1", "-1,1", "0,255"):
            return {"0,1": "x / 255 (pixels to [0, 1])", "-1,1": "x / 127.5 - 1 (pixels to [-1, 1])",
                    "0,255": "none (pixels 0..255 as they are)"}[self.spec]
        if self.spec == "imagenet":
            return "(x / 255 - ImageNet mean) / ImageNet std, per channel"
        return f"(x - mean) / std with mean {_fmt(self.mean)}, std {_fmt(self.std)}"

    def rescaling(self) -> tuple[list[float] | float, list[float] | float]:
        """Keras Rescaling's (scale, offset): x * scale + offset = (x - mean) / std."""
        scale = [1.0 / s for s in self.std]
        offset = [-m / s for m, s in zip(self.mean, self.std)]
        return (scale[0], offset[0]) if len(scale) == 1 else (scale, offset)

    def to_json(self) -> dict:
        return {"spec": self.spec, "mean": list(self.mean), "std": list(self.std), "description": self.describe()}


def parse(text: str) -> InputNorm:
    """`--input-norm` text -> InputNorm; one line naming the problem otherwise."""
    spec = text.strip().replace(" ", "").lower()
    if spec in NAMED:
        return InputNorm(spec, *NAMED[spec])
    parts = dict(p.split("=", 1) for p in spec.split(";") if "=" in p)
    if set(parts) != {"mean", "std"} or len([p for p in spec.split(";") if p]) != 2:
        raise ExporterError(f"--input-norm {text!r}: expected {CHOICES}")
    try:
        mean = tuple(float(v) for v in parts["mean"].split(","))
        std = tuple(float(v) for v in parts["std"].split(","))
    except ValueError:
        raise ExporterError(f"--input-norm {text!r}: mean and std must be numbers ({CHOICES})") from None
    if len(mean) not in (1, 3) or len(std) not in (1, 3) or any(s == 0 for s in std):
        raise ExporterError(f"--input-norm {text!r}: one or three values each, std not 0")
    if len(mean) != len(std):
        mean, std = (mean * 3 if len(mean) == 1 else mean), (std * 3 if len(std) == 1 else std)
    return InputNorm(f"mean={_fmt(mean)};std={_fmt(std)}", mean, std)


def of_config(config) -> InputNorm:
    """The model's normalisation: the user's (`input_norm` option), else its architecture's."""
    from architectures import get_spec

    return parse(config.options.get("input_norm") or get_spec(config.name).input_norm)


def _fmt(values) -> str:
    return ",".join(f"{v:g}" for v in values)
