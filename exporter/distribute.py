"""`exporter train --distribute mirrored`: one process, the global batch split across local devices.

MirroredStrategy replicates the model on every local GPU, or on `--cpu-devices N` logical CPU devices
(for testing the distributed path without GPUs). Each training batch is the same global batch as
without it, split across replicas, so the data order, the augmentation and the resume points are
unchanged. (Multi-worker training is not implemented.)
"""

from __future__ import annotations

import contextlib

from exporter.errors import ExporterError

DISTRIBUTE = ("none", "mirrored")
DEFAULT_DISTRIBUTE = "none"


def make_strategy(name: str, cpu_devices: int = 0):
    """The tf.distribute strategy for `name` (None for "none"); call before TensorFlow uses any device."""
    if name not in DISTRIBUTE:
        raise ExporterError(f"--distribute {name!r}: unknown; use one of {', '.join(DISTRIBUTE)}")
    if cpu_devices < 0 or (cpu_devices and name != "mirrored"):
        raise ExporterError("--cpu-devices N (N >= 1) splits the CPU into N devices for --distribute mirrored only")
    if name == "none":
        return None
    from exporter.keras import tf

    devices = None
    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError:  # TensorFlow already initialised its devices in this process
            raise ExporterError("--cpu-devices: TensorFlow's devices are already set up in this process") from None
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    elif not tf.config.list_physical_devices("GPU"):
        raise ExporterError("--distribute mirrored: no GPU found; use --cpu-devices N to mirror over N CPU devices")
    return tf.distribute.MirroredStrategy(devices)


def scope(strategy):
    """strategy.scope(), or nothing without a strategy: where models and optimisers are created."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
