"""The int8 targets a report checks, per architecture: the issues' figures, in one place.

Fractions, not points (0.001 = 0.1 mIoU point). Accuracy is measured on held-out samples. Speed
is the device class's: instructions per inference on an emulated ARM Cortex-A76 (exporter.arm),
the float32 TFLite file's over the recommended CPU file's (exporter.recommend); host latency (this
machine's x86 CPU, where XNNPACK's int8 kernels are no faster than its float ones) is information
only. Speed is reported, never gated by --strict.
"""

from __future__ import annotations

import dataclasses

ARM_CORE = "cortex-a76"  # the core the speed target is measured on


@dataclasses.dataclass(frozen=True)
class Int8Targets:
    min_agreement: float = 0.998  # pixel argmax agreement with the float Keras model
    max_miou_drop: float = 0.001
    max_bytes_per_weight: float = 1.2  # file bytes over the exported graph's weight count
    min_arm_ratio: float = 3.0  # ARM_CORE instructions: float32 TFLite over the recommended CPU file
    min_arm_agreement: float = 0.999  # int8 files: pixel argmax agreement of the ARM kernels with the host's
    max_class_iou_drop: float = 0.015  # no class loses more, in any int8 file
    # A quantisation-aware-trained file (method "qat").
    qat_min_agreement: float = 0.995
    qat_max_miou_drop: float = 0.003


# UNet: the foundation issue's accuracy figures. DeepLab and the selfie model: their issue's (99%,
# 0.5 point, 1.25 bytes per weight). SegFormer: its issue's (99%, 1 point). ARM ratios: issue 15's
# table (UNet 3.0x, DeepLab 2.0x, selfie 3.0x, SegFormer 1.5x on the Cortex-A76).
TARGETS = {
    "unet": Int8Targets(),
    "deeplab": Int8Targets(min_agreement=0.99, max_miou_drop=0.005, max_bytes_per_weight=1.25, min_arm_ratio=2.0),
    "selfie": Int8Targets(min_agreement=0.99, max_miou_drop=0.005, max_bytes_per_weight=1.25, min_arm_ratio=3.0),
    "segformer": Int8Targets(min_agreement=0.99, max_miou_drop=0.01, max_bytes_per_weight=1.25, min_arm_ratio=1.5),
}


def targets_for(model: str) -> Int8Targets:
    """The model's targets; an architecture without its own gets the foundation issue's."""
    return TARGETS.get(model, Int8Targets())
