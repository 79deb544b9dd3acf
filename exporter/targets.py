"""The int8 targets a report checks, per architecture: the issues' figures, in one place.

Fractions, not points (0.001 = 0.1 mIoU point). Accuracy is measured on held-out samples; speed
is int8 TFLite against float32 TFLite in the same alternating run at the most threads timed, and
is reported, never gated (a shared machine's timings are noisy).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Int8Targets:
    min_agreement: float = 0.998  # pixel argmax agreement with the float Keras model
    max_miou_drop: float = 0.001
    max_bytes_per_weight: float = 1.2  # file bytes over the exported graph's weight count
    min_speedup: float = 2.5  # over float32 TFLite
    max_class_iou_drop: float = 0.015  # no class loses more, in any int8 file
    # A quantisation-aware-trained file (method "qat").
    qat_min_agreement: float = 0.995
    qat_max_miou_drop: float = 0.003


# UNet: the foundation issue's figures. DeepLab and the selfie model: their issue's (2.0x, 1.5x,
# 99%, 0.5 point, 1.25 bytes per weight). SegFormer: its issue's (1.3x, 99%, 1 point).
TARGETS = {
    "unet": Int8Targets(),
    "deeplab": Int8Targets(min_agreement=0.99, max_miou_drop=0.005, max_bytes_per_weight=1.25, min_speedup=2.0),
    "selfie": Int8Targets(min_agreement=0.99, max_miou_drop=0.005, max_bytes_per_weight=1.25, min_speedup=1.5),
    "segformer": Int8Targets(min_agreement=0.99, max_miou_drop=0.01, max_bytes_per_weight=1.25, min_speedup=1.3),
}


def targets_for(model: str) -> Int8Targets:
    """The model's targets; an architecture without its own gets the foundation issue's."""
    return TARGETS.get(model, Int8Targets())
