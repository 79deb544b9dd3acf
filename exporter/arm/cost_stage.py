"""The ARM stage of `convert`: every TFLite file's cost on emulated ARM cores, beside the host figures.

    per_file, summary = measure_arm(artifacts, folder, val, ("cortex-a76", "cortex-a55"))

For each TFLite artifact and core it measures `per_file[file][core]`: the steady-state guest
instructions per inference (exporter.arm.runner), its dot-product (SDOT/UDOT) and FMA (FMLA)
instructions, the ratio of the float32 file's instructions to this file's on the same core, and
`agreement_with_host`: the fraction of pixels whose class (argmax; a one-channel head's 0.5 threshold) on the ARM kernels equals the host
LiteRT's on the same file and held-out samples (int8 kernels round differently per CPU). `summary` is
the report's top-level entry: {"arm_run": how it was measured} or, when nothing was
measured, {"arm_status": the one-line reason}. Nothing here fails the convert: a file the
emulator cannot run gets {"error": reason} for that core.

Wall time: QEMU's software floating point makes float kernels slow to emulate (a 256x256 selfie
float32 inference takes over a minute, its int8 file seconds), so float files run one held-out
sample (after one warm-up invoke), quantised files QUANTISED_SAMPLES, and the (file, core) runs
go in parallel, one emulator process per host CPU, the slowest first.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from exporter.arm import env as arm_env
from exporter.errors import ExporterError
from exporter.progress import say

DEFAULT_CORES = ("cortex-a76", "cortex-a55")
FLOAT_PRECISIONS = ("float32", "float16")  # float kernels: slow under emulation, one sample
FLOAT_SAMPLES = 1
QUANTISED_SAMPLES = 3  # held-out samples for the ARM-vs-host agreement of int8 (and other quantised) files
NOTE = ("guest instructions per inference of LiteRT's aarch64 kernels (XNNPACK, 1 thread) under QEMU user-mode "
        "emulation: a relative cost (float32 vs int8 on the same core), not cycles; the Cortex-A55 kernels are "
        "in-order, so instructions there are not time. QEMU 7.2 has no Cortex-A55 model: that column runs "
        "-cpu cortex-a76 with the A55's /proc/cpuinfo, which is what picks XNNPACK's kernels")


def parse_cores(spec: str | None) -> tuple[str, ...]:
    """`--arm` as cores: "cortex-a76,cortex-a55"; "none" or "" for none. Unknown names fail."""
    names = tuple(x.strip() for x in (spec or "").split(",") if x.strip())
    if names in ((), ("none",)):
        return ()
    return check_cores(names)


def check_cores(cores) -> tuple[str, ...]:
    cores = tuple(cores)
    for core in cores:
        if core not in arm_env.CORES:
            raise ExporterError(f"--arm {core!r}: choose from {', '.join(arm_env.CORES)}, or none")
    return tuple(dict.fromkeys(cores))


def samples_for(art: dict) -> int:
    return FLOAT_SAMPLES if art["precision"] in FLOAT_PRECISIONS else QUANTISED_SAMPLES


def _cores_for(art: dict, cores: tuple) -> tuple:
    """A peer file (exporter.stages.peers) on the speed check's core only, where it is measured: the
    peers table compares A76 instructions, and each peer core is a minute of emulation in `make test`."""
    from exporter.formats import PEER
    from exporter.policy import ARM_CORE

    return (ARM_CORE,) if art.get("role") == PEER and ARM_CORE in cores else cores


def measure_arm(artifacts: list[dict], folder: Path, val, cores) -> tuple[dict, dict]:
    """({TFLite file: {core: entry}}, {"arm_run": ...} or {"arm_status": reason}); the artifacts
    (report entries: file, format, precision, bytes, float_ops) are only read."""
    cores = check_cores(cores)
    if not cores:
        return {}, {"arm_status": "not requested (--arm none, --no-arm or --no-bench)"}
    reason = arm_env.check()
    if reason is not None:
        say(f"ARM: not measured ({reason})")
        return {}, {"arm_status": reason}
    files = [a for a in artifacts if a["format"] == "tflite"]
    per_file = {a["file"]: {} for a in files}
    started, cpu_before = time.monotonic(), _children_cpu()
    jobs = []
    for art in files:
        n = min(samples_for(art), len(val))
        raw, host, detail = _host_reference(Path(folder) / art["file"], val.images[:n])
        for core in _cores_for(art, cores):
            jobs.append((art, core, raw, host, detail))
    # Slowest first (float kernels, then larger files), so the last job to finish is a short one.
    jobs.sort(key=lambda j: (j[0]["precision"] not in FLOAT_PRECISIONS, not j[0].get("float_ops"), -j[0]["bytes"]))
    workers = max(1, min(len(jobs), _cpus()))
    say(f"ARM cost: {len(files)} TFLite file(s) on {', '.join(cores)} under QEMU emulation, {workers} at a time "
        f"(instruction counts; float files take minutes at 256x256)")

    def run(job):
        art, core, raw, host, detail = job
        try:
            entry = _measure(Path(folder) / art["file"], core, raw, host, detail)
        except Exception as error:  # one file the emulator cannot run must not fail the convert
            message = " ".join(str(error).split()) or type(error).__name__
            say(f"warning: ARM {core}: {art['file']}: {message}")
            return art, core, {"error": message}
        say(f"ARM {core}: {art['file']}: {entry['instructions'] / 1e6:.2f} M instructions "
            f"({entry['dot_instructions']} dot, {entry['fma_instructions']} FMA), agreement with host "
            f"{100 * entry['agreement_with_host']:.3f}% on {entry['samples']} sample(s), {entry['seconds']:.0f} s")
        return art, core, entry

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, jobs))
    for art, core, entry in results:
        per_file[art["file"]][core] = entry
    baseline = next((a["file"] for a in files if a["precision"] == "float32"), None)
    for entries in per_file.values():
        for core, entry in entries.items():
            base = per_file.get(baseline, {}).get(core, {}).get("instructions")
            if "instructions" in entry:
                entry["ratio_to_float32"] = round(base / entry["instructions"], 4) if base else None
    env = arm_env.load()
    seconds = round(time.monotonic() - started, 1)
    cpu_seconds = round(_children_cpu() - cpu_before, 1)
    say(f"ARM cost: done in {seconds:.0f} s ({cpu_seconds:.0f} CPU seconds of emulation)")
    return per_file, {"arm_run": {
        "cores": {core: {"qemu_cpu": env.cpus[core], "cpuinfo": core} for core in cores},
        "litert_version": env.litert_version,
        "threads": 1,
        "samples": {"float": FLOAT_SAMPLES, "quantised": QUANTISED_SAMPLES, "warmup_invokes": 1},
        "heldout_ids": list(val.ids[:QUANTISED_SAMPLES]),
        "parallel": workers,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # the emulators' CPU time: about `parallel` times the wall time on an idle machine
        "note": NOTE,
    }}


def _host_reference(path: Path, pixels: np.ndarray):
    """The samples as the file's raw input tensors, the host LiteRT's raw outputs, the output detail."""
    from exporter.runtimes import LiteRTRunner, input_tensor

    runner = LiteRTRunner(path, threads=1)
    raw, host = [], []
    for i in range(len(pixels)):
        raw.append(input_tensor(pixels[i : i + 1], runner.input))
        runner.interpreter.set_tensor(runner.input["index"], raw[-1])
        runner.invoke()
        host.append(runner.interpreter.get_tensor(runner.output["index"]).copy())
    return raw, host, runner.output


def _measure(path: Path, core: str, raw: list, host: list, detail: dict) -> dict:
    from exporter.arm.runner import arm_cost
    from exporter.parity import class_map
    from exporter.runtimes import output_scores

    cost = arm_cost(path, raw, core, invokes=1, warmup=1)
    agree = total = 0
    max_diff = 0.0
    for on_arm, on_host in zip(cost.outputs, host):
        if on_arm.shape != on_host.shape:
            raise ExporterError(f"ARM output shape {list(on_arm.shape)} differs from the host's {list(on_host.shape)}")
        a, h = output_scores(on_arm, detail), output_scores(on_host, detail)
        agree += int((class_map(a) == class_map(h)).sum())  # a one-channel head: its 0.5 threshold
        total += a[..., 0].size
        max_diff = max(max_diff, float(np.abs(a - h).max()))
    return {
        "instructions": int(cost.instructions),
        "dot_instructions": int(cost.dot_instructions),
        "fma_instructions": int(cost.fma_instructions),
        "agreement_with_host": round(agree / total, 6),
        "max_abs_diff_with_host": float(f"{max_diff:.6g}"),
        "samples": len(raw),
        "warmup_instructions": cost.warmup_instructions,
        "seconds": round(cost.wall_s, 1),
    }


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
