"""`exporter train --distribute mirrored`: one process, the global batch split across local devices.

MirroredStrategy replicates the model on every local GPU, or on `--cpu-devices N` logical CPU devices
(for testing the distributed path without GPUs). Each training batch is the same global batch as
without it, split across replicas, so the data order, the augmentation and the resume points are
unchanged.

`--distribute multiworker`: one process per worker, each started with its TF_CONFIG (cluster and
task), MultiWorkerMirroredStrategy over all of them; each worker reads the same seeded global batch
and Keras splits it across the replicas. Every worker runs the same steps; only the chief (worker 0)
writes the run folder (OUT/MODEL/training, assumed to be storage every worker can read, which
`--resume` restores from); the others write their checkpoints and weights to a throwaway temporary
folder, as TensorFlow's multi-worker guide asks.
"""

from __future__ import annotations

import contextlib
import json
import os

from exporter.errors import ExporterError

DISTRIBUTE = ("none", "mirrored", "multiworker")
DEFAULT_DISTRIBUTE = "none"


def make_strategy(name: str, cpu_devices: int = 0):
    """The tf.distribute strategy for `name` (None for "none"); call before TensorFlow uses any device."""
    if name not in DISTRIBUTE:
        raise ExporterError(f"--distribute {name!r}: unknown; use one of {', '.join(DISTRIBUTE)}")
    if cpu_devices < 0 or (cpu_devices and name != "mirrored"):
        raise ExporterError("--cpu-devices N (N >= 1) splits the CPU into N devices for --distribute mirrored only")
    if name == "none":
        return None
    if name == "multiworker":
        tf_config()  # one line for a missing or malformed TF_CONFIG, before TensorFlow starts
        from exporter.keras import tf

        return tf.distribute.MultiWorkerMirroredStrategy()
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


def tf_config() -> tuple[dict, str, int]:
    """(cluster, task type, task index) from TF_CONFIG, checked: one line for what is wrong with it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ExporterError("--distribute multiworker: TF_CONFIG is not set; set it to "
                            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}')
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ExporterError(f"--distribute multiworker: TF_CONFIG is not valid JSON ({exc.msg})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(workers, list) or not workers:
        raise ExporterError('--distribute multiworker: TF_CONFIG has no "cluster": {"worker": [...]} list')
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ExporterError('--distribute multiworker: TF_CONFIG needs a "task" naming one of its cluster\'s '
                            'members, e.g. {"type": "worker", "index": 0}')
    return cluster, task["type"], task["index"]


def is_chief(name: str) -> bool:
    """Whether this process writes the run folder: always, except for a multiworker run's non-chief workers
    (the "chief" task if the cluster has one, otherwise worker 0)."""
    if name != "multiworker":
        return True
    cluster, kind, index = tf_config()
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
