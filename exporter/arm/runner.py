"""The cost of a .tflite file on an ARM core: LiteRT's aarch64 interpreter run under QEMU user-mode
emulation, with a plugin counting the guest instructions each invoke() executes.

    cost = arm_cost("model_int8.tflite", [sample0, sample1], "cortex-a76")
    cost.instructions, cost.dot_instructions, cost.outputs[0]

The guest is the real aarch64 LiteRT wheel of the host's version with its default delegate
(XNNPACK), one thread, so it runs the kernels a phone with that core runs: the named core picks
XNNPACK's kernels through a fixed /proc/cpuinfo (exporter/arm/setup_env.sh). Instruction counts
are a relative cost (float32 vs int8 on the same core), not cycles: throughput per instruction,
in-order issue (Cortex-A55) and memory traffic are not modelled.

Determinism: the guest runs with PYTHONHASHSEED=0, a bare environment and no address-space
randomisation, from a work folder whose layout does not depend on the caller, so the same file,
inputs and options give the same counts to the instruction, run after run. Within one run,
repeated invokes of one input differ by a few hundred instructions of framework overhead (heap
state of the pybind11/Python glue); the kernels' dot-product and FMA counts do not vary. The
count of a sample is therefore the fewest over its steady invokes (after the warm-up invoke,
which costs ~1 k more), and the file's count the most over the samples.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from exporter.arm import env as arm_env
from exporter.errors import ExporterError

GUEST = Path(__file__).with_name("guest.py")
COUNTERS = ("instructions", "dot", "mmla", "fma", "smlal")  # the plugin's columns, in order
MAX_SPREAD = 0.01  # steady invokes of one input further apart than this: something is not steady


@dataclass
class ArmCost:
    """Steady-state cost of one inference of a .tflite file on one emulated core."""

    core: str
    instructions: int  # guest instructions per invoke()
    dot_instructions: int  # SDOT/UDOT (int8 dot product: 16 multiply-adds each in the .4s form)
    fma_instructions: int  # FMLA vector/by-element (float: 4 multiply-adds each in the .4s form)
    outputs: list  # per sample: the first output tensor of its last invoke, raw (the file's dtype)
    matmul_instructions: int = 0  # SMMLA/UMMLA/USMMLA (i8mm; not on the A76/A55)
    widening_mla_instructions: int = 0  # SMLAL/UMLAL{2} (the int8 path of cores without dot product)
    per_sample: list = field(default_factory=list)  # instructions per sample (fewest over its steady invokes)
    warmup_instructions: int | None = None  # the first invoke's count
    spread: int = 0  # largest max-min of instructions over one sample's steady invokes
    all_outputs: list = field(default_factory=list)  # per sample: every output tensor, raw
    litert_version: str = ""
    wall_s: float = 0.0  # emulation wall time; says nothing about a phone


def _as_arrays(sample) -> list[np.ndarray]:
    if isinstance(sample, np.ndarray):
        return [sample]
    return [np.asarray(a) for a in sample]


def arm_cost(path: str | os.PathLike, inputs: Sequence, core: str = "cortex-a76", *, invokes: int = 2,
             warmup: int = 1, timeout: float = 900) -> ArmCost:
    """Run `path` in the emulated aarch64 LiteRT on `core` and count instructions per inference.

    `inputs`: one entry per sample, each an array for the model's single input (or a sequence of
    arrays, one per input), raw: the file's input dtype and shape (quantise int8 inputs yourself).
    Each sample is invoked `invokes` times after `warmup` invokes of the first sample. Raises
    ExporterError (one line) when the environment is missing or the guest fails.
    """
    if core not in arm_env.CORES:
        raise ExporterError(f"unknown ARM core {core!r}: choose from {', '.join(arm_env.CORES)}")
    if invokes < 1 or warmup < 0:
        raise ExporterError("arm_cost needs invokes >= 1 and warmup >= 0")
    samples = [_as_arrays(s) for s in inputs]
    if not samples:
        raise ExporterError("arm_cost needs at least one input sample")
    path = Path(path)
    if not path.is_file():
        raise ExporterError(f"no such model file: {path}")
    emulated = _emulate(path, samples, core, invokes, warmup, timeout)
    brackets, snapshots, all_outputs, wall = (emulated["brackets"], emulated["snapshots"], emulated["outputs"],
                                              emulated["wall_s"])
    env = emulated["env"]

    deltas = [[b - a for a, b in zip(snapshots[2 * j], snapshots[2 * j + 1])] for j in range(len(brackets))]
    invoked = [(kind_sample[1], d) for kind_sample, d in zip(brackets, deltas) if kind_sample[0] == "invoke"]
    warmup_count = invoked[0][1][0] if warmup else None
    steady = invoked[warmup:]
    best, spread = [], 0
    for i in range(len(samples)):
        rows = [d for s, d in steady if s == i]
        counts = [d[0] for d in rows]
        spread = max(spread, max(counts) - min(counts))
        if max(counts) - min(counts) > MAX_SPREAD * min(counts):
            raise ExporterError(f"ARM counts of {path.name} on {core} are not steady: sample {i} took "
                                f"{min(counts)}..{max(counts)} instructions over {len(counts)} invokes")
        best.append(min(rows, key=lambda d: d[0]))
    worst = max(best, key=lambda d: d[0])
    return ArmCost(core=core, instructions=worst[0], dot_instructions=worst[1], fma_instructions=worst[3],
                   outputs=[outs[0] for outs in all_outputs], matmul_instructions=worst[2],
                   widening_mla_instructions=worst[4], per_sample=[d[0] for d in best],
                   warmup_instructions=warmup_count, spread=spread, all_outputs=all_outputs,
                   litert_version=env.litert_version, wall_s=wall)


def _emulate(path: Path, samples: list, core: str, invokes: int, warmup: int, timeout: float,
             plugin_args: Sequence[str] = (), job_extra: dict | None = None, keep: Sequence[str] = ()) -> dict:
    """Run the guest on `path` once: brackets, counter snapshots, raw outputs, wall time, and the
    text of the work-folder files named in `keep` (written by the plugin or the guest)."""
    env = arm_env.load()

    with tempfile.TemporaryDirectory(prefix="segexport-arm-") as tmp:
        work = Path(tmp)
        # Fixed names inside the work folder: the guest sees the same job whatever the caller's paths.
        shutil.copyfile(path, work / "model.tflite")
        (work / "in").mkdir()
        names = []
        for i, sample in enumerate(samples):
            names.append([])
            for k, array in enumerate(sample):
                name = f"in/{i}_{k}.npy"
                np.save(work / name, np.ascontiguousarray(array))
                names[-1].append(name)
        job = {"model": "model.tflite", "inputs": names, "invokes": invokes, "warmup": warmup, **(job_extra or {})}
        (work / "job.json").write_text(json.dumps(job, sort_keys=True))
        counts_file = work / "counts.txt"
        plugin = ",".join([f"{env.plugin}", f"out={counts_file}",
                           *(arg.replace("{work}", str(work)) for arg in plugin_args)])
        command = ["setarch", "x86_64", "-R", str(env.qemu), "-L", str(env.sysroot(core)), "-cpu", env.cpus[core],
                   "-plugin", plugin, str(env.python), "-s", "-B", str(GUEST), "."]
        guest_env = {"PYTHONHASHSEED": "0", "PYTHONPATH": str(env.site), "PYTHONDONTWRITEBYTECODE": "1",
                     "PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(work)}
        start = time.monotonic()
        try:
            run = subprocess.run(command, cwd=work, env=guest_env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExporterError(f"ARM emulation of {path.name} on {core} ran past {timeout:.0f} s") from None
        except OSError as error:
            raise ExporterError(f"ARM emulation could not start: {error}") from None
        wall = time.monotonic() - start
        if run.returncode != 0:
            lines = [line for line in run.stderr.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"exit status {run.returncode}, no output"
            raise ExporterError(f"ARM emulation of {path.name} on {core} failed: {last}")
        try:
            result = json.loads((work / "result.json").read_text())
            snapshots = _snapshots(counts_file)
            kept = {name: (work / name).read_text() for name in keep}
        except (OSError, ValueError) as error:
            raise ExporterError(f"ARM emulation of {path.name} on {core} gave no counts: {error}") from None
        brackets = result["brackets"]
        if len(snapshots) != 2 * len(brackets):
            raise ExporterError(f"ARM emulation of {path.name}: {len(snapshots)} markers for {len(brackets)} "
                                "invokes (does something else in the guest call getppid?)")
        all_outputs = [[np.load(work / "outputs" / f"{i}_{k}.npy") for k in range(len(result["outputs"]))]
                       for i in range(len(samples))]
    return {"env": env, "brackets": brackets, "snapshots": snapshots, "outputs": all_outputs, "wall_s": wall,
            "result": result, "files": kept}


def _snapshots(counts_file: Path) -> list[list[int]]:
    rows = []
    for line in counts_file.read_text().splitlines():
        if line.strip() == "overflow":
            raise ValueError("more markers than the plugin keeps")
        values = [int(v) for v in line.split()]
        if len(values) != len(COUNTERS):
            raise ValueError(f"bad counter line {line!r}")
        rows.append(values)
    return rows
