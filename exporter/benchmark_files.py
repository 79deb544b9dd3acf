"""`exporter benchmark FILE [FILE ...]`: what each model file is and how fast it runs, side by side.

Any .tflite or .onnx, ours or anyone's. Per file: format, precision (from its tensor types,
exporter.modelfile), size, inputs and outputs, the op histogram, the delegation picture (the ops
and partitions XNNPACK takes, the ops left to LiteRT's reference kernels, GPU-delegate
compatibility), MediaPipe metadata, and latency at each thread count: median, p90 and min of
`runs` timed runs after `warmup` untimed ones, every file in one run, alternating in blocks
(exporter.bench, the project's method). A file that cannot be read or run gets status "failed"
with the reason; the others still run.

Optional: instructions per inference on emulated ARM cores (exporter.arm), and the ratio of the
first float32 .tflite file's count to each file's on the same core.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError

BLOCK_RUNS = 10  # timed runs per block; blocks = runs / BLOCK_RUNS, alternating over the files
PAUSE_S = 0.05


class BenchmarkError(ExporterError):
    """Some file failed (its row says why); the report was still written."""

    exit_code = 1


def parse_threads(spec: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(t) for t in spec.split(",") if t.strip())
    except ValueError:
        raise ExporterError(f"--threads {spec!r}: expected comma-separated integers such as 1,2") from None
    if not threads or min(threads) < 1:
        raise ExporterError(f"--threads {spec!r}: thread counts must be at least 1")
    return tuple(dict.fromkeys(threads))


def parse_cores(spec: str | None) -> tuple[str, ...]:
    """--arm as ARM cores: "cortex-a76,cortex-a55"; None, "" or "none": none."""
    from exporter.arm.env import CORES

    names = tuple(x.strip() for x in (spec or "").split(",") if x.strip())
    if names in ((), ("none",)):
        return ()
    for name in names:
        if name not in CORES:
            raise ExporterError(f"--arm {name!r}: choose from {', '.join(CORES)} (comma-separated), or none")
    return tuple(dict.fromkeys(names))


def benchmark_files(paths, threads=(1, 2), runs: int = 50, warmup: int = 5, arm_cores=(), onnx_mobile: bool = False,
                    say=None, gpu: bool = False) -> dict:
    """The benchmark report: {"files": [...], "environment", "settings", "arm"} (see the module doc)."""
    from exporter import environment
    from exporter.op_bench import cpu_features

    if runs < 1 or warmup < 0:
        raise ExporterError("--runs must be at least 1 and --warmup at least 0")
    say = say or (lambda message: None)
    started = time.monotonic()
    rows, prepared = [], {}
    for i, path in enumerate(paths):
        row = {"file": str(path), "status": "ran"}
        try:
            prepared[i] = _describe(Path(path), row, max(threads), onnx_mobile)
        except ExporterError as exc:
            _fail(row, str(exc).removeprefix(f"{path}: "))
        except Exception as exc:  # a file nobody vetted: whatever the runtime says, in one line
            _fail(row, f"{exc.__class__.__name__}: {_first_line(exc)}")
        rows.append(row)
        say(f"{row['file']}: " + (f"{row['format']} {row['precision']}, {row['bytes'] / 1e6:.2f} MB"
                                  if row["status"] == "ran" else row["status"]))

    blocks = max(1, math.ceil(runs / BLOCK_RUNS))
    per_block = math.ceil(runs / blocks)
    if prepared:
        say(f"timing {len(prepared)} file(s) at {', '.join(map(str, threads))} thread(s): {blocks} block(s) of "
            f"{per_block} runs each, alternating, after {warmup} warm-up runs")
        _time(rows, prepared, threads, blocks, per_block, warmup)
    arm = _arm(rows, prepared, arm_cores, say) if arm_cores else {"status": "not requested (--arm cortex-a76,...)"}
    gpu_info = _gpu(rows, prepared, say) if gpu else {"status": "not requested (--gpu)"}
    env = environment.describe()
    env["simd"] = cpu_features()
    return {
        "files": rows,
        "environment": env,
        "settings": {"threads": list(threads), "runs": blocks * per_block, "warmup": warmup, "blocks": blocks,
                     "runs_per_block": per_block, "method": "every file in one run, alternating in blocks of "
                     f"{per_block} timed runs (each block's first run dropped), {PAUSE_S} s pause between blocks; "
                     "random 0..255 pixels fed through each file's input contract"},
        "arm": arm,
        "gpu": gpu_info,
        "wall_s": round(time.monotonic() - started, 1),
    }


def _fail(row: dict, reason: str) -> None:
    row["status"] = f"failed: {reason}"
    row["reason"] = reason


def _describe(path: Path, row: dict, threads: int, onnx_mobile: bool) -> dict:
    """Fill the row with what the file is; returns what timing it needs. Raises on a bad file."""
    from exporter.modelfile import input_contract, input_size, open_model, runner_options, segmentation_head
    from exporter.runtimes import open_runner

    mf = open_model(path)
    row.update(mf.to_json(), file=str(path))
    if mf.precision not in ("int8", "int16x8"):
        row["float_ops"] = []
    h, w, c = input_size(mf)
    contract = input_contract(mf)
    row["input_contract"] = contract.to_json()
    try:
        row["head"] = segmentation_head(mf).to_json()
    except ExporterError as exc:
        row["head"] = {"note": str(exc)}
    if mf.format == "tflite":
        row["metadata"] = mf.metadata
        if isinstance(mf.metadata, dict) and "error" not in mf.metadata:
            from exporter.metadata import mediapipe_problems

            row["mediapipe_problems"] = mediapipe_problems(mf.blob)
    elif mf.metadata:
        row["metadata"] = mf.metadata
    pixels = np.random.default_rng(0).integers(0, 256, size=(1, h, w, c)).astype(np.float32)
    options = runner_options(contract)
    runner = open_runner(path, threads, **options)  # a file that cannot run fails here, not mid-timing
    runner.set_input(pixels)
    runner.invoke()
    raw = out_detail = None
    if mf.format == "tflite":
        from exporter.delegates import gpu_compatibility

        raw = runner.interpreter.get_tensor(runner.input["index"]).copy()
        out_detail = runner.output
        row["delegation"] = _xnnpack(runner.interpreter, mf.ops)
        row["delegation"]["gpu"] = gpu_compatibility(mf.blob, analyzer="litert")
    else:
        row["delegation"] = {"runtime": "onnxruntime", "execution_provider": "CPUExecutionProvider",
                             "nodes": sum(mf.ops.values())}
        if onnx_mobile:
            from exporter.delegates import onnx_mobile_usability

            row["delegation"]["mobile"] = onnx_mobile_usability(path)
    del runner
    return {"path": path, "pixels": pixels, "options": options, "raw_input": raw, "output_detail": out_detail}


def _xnnpack(interpreter, ops: dict) -> dict:
    """runtimes.delegation's split, with the counts: ops taken by XNNPACK and left to LiteRT's kernels."""
    from exporter.runtimes import delegation

    split = delegation(interpreter)
    total = sum(ops.values())
    left = sum(split["undelegated"].values())
    return {"delegate": "XNNPACK (LiteRT's default CPU delegate)", "partitions": split["partitions"],
            "delegated_ops": total - left, "total_ops": total, "undelegated": split["undelegated"]}


def _time(rows, prepared, threads, blocks, per_block, warmup) -> None:
    from exporter.bench import benchmark
    from exporter.runtimes import open_runner

    keys = {i: f"{i}:{rows[i]['file']}" for i in prepared}
    by_path = {keys[i]: prepared[i] for i in prepared}

    def opener(key, t):
        return open_runner(by_path[key]["path"], t, **by_path[key]["options"])

    try:
        latencies = benchmark({k: k for k in by_path}, {k: v["pixels"] for k, v in by_path.items()},
                              threads=threads, blocks=blocks, runs=per_block, pause_s=PAUSE_S, warmup=warmup,
                              opener=opener)
    except Exception as exc:  # one file's runtime failing mid-run: the run is void for all
        for i in prepared:
            _fail(rows[i], f"timing failed: {exc.__class__.__name__}: {_first_line(exc)}")
        prepared.clear()
        return
    for i in prepared:
        rows[i]["latency_ms"] = {str(t): v for t, v in latencies[keys[i]].items()}


def _gpu(rows, prepared, say) -> dict:
    """Each .tflite file that ran on LiteRT's GPU accelerator in a child (exporter.gpu.stage), on the
    same random input the timing used: row["gpu"] as in convert's report (no accuracy: no labels here)."""
    from exporter.gpu import env as gpu_env
    from exporter.gpu.stage import describe, run_raw

    reason = gpu_env.check()
    if reason is not None:
        say(f"GPU: not measured: {reason}")
        return {"status": reason}
    started = time.monotonic()
    for i in prepared:
        if rows[i]["format"] != "tflite" or rows[i]["status"] != "ran":
            continue
        p = prepared[i]
        rows[i]["gpu"] = run_raw(p["path"], np.asarray(p["raw_input"]), p["output_detail"])
        say(f"GPU: {Path(rows[i]['file']).name}: {describe(rows[i]['gpu'])}")
    return {"device": gpu_env.device_default(), "seconds": round(time.monotonic() - started, 1)}


def _arm(rows, prepared, cores, say) -> dict:
    """Instructions per inference on each emulated core, for every .tflite file that ran."""
    from concurrent.futures import ThreadPoolExecutor

    from exporter.arm import env as arm_env

    reason = arm_env.check()
    if reason is not None:
        say(f"ARM: not measured: {reason}")
        for i in prepared:
            if rows[i]["format"] == "tflite":
                rows[i]["arm"] = {"status": reason}
        return {"status": reason, "cores": list(cores)}
    from exporter.arm.runner import arm_cost

    jobs = [(i, core) for i in prepared if rows[i]["format"] == "tflite" and rows[i]["status"] == "ran"
            for core in cores]
    for i in prepared:
        if rows[i]["format"] != "tflite":
            rows[i]["arm"] = {"status": "not measured: the ARM emulation runs .tflite files"}
    say(f"ARM: {len(jobs)} emulated run(s) on {', '.join(cores)} (QEMU; float files take longest)")

    def run(job):
        i, core = job
        try:
            cost = arm_cost(prepared[i]["path"], [prepared[i]["raw_input"]], core, invokes=1, warmup=1)
        except Exception as exc:
            return i, core, {"error": " ".join(str(exc).split()) or exc.__class__.__name__}
        return i, core, {"instructions": int(cost.instructions), "dot_instructions": int(cost.dot_instructions),
                         "fma_instructions": int(cost.fma_instructions), "seconds": round(cost.wall_s, 1)}

    workers = max(1, min(len(jobs), _cpus()))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, core, entry in pool.map(run, jobs):
            rows[i].setdefault("arm", {})[core] = entry
    base_i = next((i for i in prepared if rows[i]["format"] == "tflite" and rows[i]["precision"] == "float32"), None)
    for i in prepared:
        for core, entry in rows[i].get("arm", {}).items():
            if not isinstance(entry, dict) or "instructions" not in entry:
                continue
            base = rows[base_i]["arm"].get(core, {}).get("instructions") if base_i is not None else None
            entry["ratio_to_float32"] = round(base / entry["instructions"], 3) if base else None
    env = arm_env.load()
    return {"cores": {core: {"qemu_cpu": env.cpus[core]} for core in cores}, "litert_version": env.litert_version,
            "threads": 1, "baseline": rows[base_i]["file"] if base_i is not None else None,
            "baseline_note": None if base_i is not None else "none: no float32 .tflite file among the files given",
            "note": "guest instructions per inference of LiteRT's aarch64 kernels (XNNPACK, 1 thread) under QEMU "
                    "user-mode emulation, after one warm-up invoke: a relative cost, not cycles"}


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --- what a person reads -----------------------------------------------------------------------

def summary_table(report: dict) -> list[str]:
    """The closing table, one row a file, for the console."""
    threads = report["settings"]["threads"]
    cores = [c for c in (report["arm"].get("cores") or {})] if isinstance(report["arm"].get("cores"), dict) else []
    head = ["file", "format", "precision", "MB"] + [f"{t} thr ms (p90)" for t in threads]
    head += [f"{c} Minstr (x f32)" for c in cores] + ["status"]
    table = [head]
    for row in report["files"]:
        cells = [Path(row["file"]).name, row.get("format", "-"), row.get("precision", "-"),
                 f"{row['bytes'] / 1e6:.2f}" if "bytes" in row else "-"]
        for t in threads:
            lat = (row.get("latency_ms") or {}).get(str(t))
            cells.append(f"{lat['median']:.2f} ({lat['p90']:.2f})" if lat else "-")
        for c in cores:
            cells.append(_arm_cell((row.get("arm") or {}).get(c)))
        cells.append(row["status"])
        table.append(cells)
    widths = [max(len(r[k]) for r in table) for k in range(len(head) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in table]


def _arm_cell(entry) -> str:
    if not isinstance(entry, dict) or "instructions" not in entry:
        return "-"
    ratio = entry.get("ratio_to_float32")
    return f"{entry['instructions'] / 1e6:.2f}" + (f" (x{ratio:.2f})" if ratio else "")


def details(row: dict) -> list[str]:
    """A few lines on one file that ran: I/O, ops, delegation, metadata."""
    if row["status"] != "ran":
        return []
    lines = [f"{Path(row['file']).name}: {row['format']} {row['precision']}, {row['bytes'] / 1e6:.2f} MB; "
             f"input {row['input_contract']['description']}"]
    for kind in ("inputs", "outputs"):
        for t in row[kind]:
            q = t.get("quantization")
            quant = f", scale {_num(q['scale'])} zero point {q['zero_point']}" if q else ""
            lines.append(f"  {kind[:-1]}: {t['name']} {t['shape']} {t['dtype']}{quant}")
    ops = sorted(row["ops"].items(), key=lambda kv: -kv[1])
    lines.append("  ops: " + ", ".join(f"{k}x{v}" for k, v in ops))
    if row.get("float_ops"):
        lines.append(f"  float ops in a quantised file: {', '.join(row['float_ops'])}")
    d = row["delegation"]
    if row["format"] == "tflite":
        left = ", ".join(f"{k}x{v}" for k, v in d["undelegated"].items()) or "none"
        gpu = d["gpu"]
        why = gpu["analyzer_warnings"][:2] + [f"unsupported {op}" for op in gpu["unsupported_ops"]]
        why += [f">4-D tensors: {len(gpu['tensors_over_4d'])}"] if gpu["tensors_over_4d"] else []
        lines.append(f"  XNNPACK: {d['delegated_ops']}/{d['total_ops']} ops in {d['partitions']} partition(s); "
                     f"left to LiteRT's kernels: {left}")
        lines.append("  GPU delegate: " + ("compatible" if gpu["compatible"] else "not compatible: " + "; ".join(why))
                     + " (static check)")
        if row.get("gpu"):
            from exporter.gpu.stage import describe

            lines.append(f"  GPU accelerator run: {describe(row['gpu'])}")
    else:
        lines.append(f"  ONNX Runtime CPU execution provider: {d['nodes']} nodes")
        for ep, v in (d.get("mobile") or {}).items():
            if isinstance(v, dict):
                lines.append(f"  {ep}: {v.get('partitions', '?')} partition(s), {v.get('nodes', '?')} nodes, "
                             f"recommended {v.get('recommended')}")
    meta = row.get("metadata")
    if row["format"] == "tflite":
        if not meta:
            lines.append("  MediaPipe metadata: none")
        elif "error" in meta:
            lines.append(f"  MediaPipe metadata: unreadable ({meta['error']})")
        else:
            norm = meta.get("normalisation")
            lines.append(f"  MediaPipe metadata: {meta.get('name')}, labels {', '.join(meta['labels']) or '-'}, "
                         f"normalisation " + (f"mean {norm['mean']} std {norm['std']}" if norm else "none")
                         + f", activation {meta.get('activation')}")
    return lines


def markdown(report: dict) -> str:
    env = report["environment"]
    s = report["settings"]
    lines = ["# Benchmark", "",
             f"{env['cpu']} ({env['cpu_count']} CPUs; SIMD: {env['simd']}), Python {env['python']}, "
             + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v) + ".", "",
             f"Latency in ms: median (p90, min) of {s['runs']} runs per file and thread count after {s['warmup']} "
             f"warm-up runs; {s['method']}.", ""]
    threads = s["threads"]
    cores = list(report["arm"].get("cores") or {}) if isinstance(report["arm"].get("cores"), dict) else []
    head = ["file", "format", "precision", "MB"] + [f"{t} thread(s)" for t in threads]
    head += [f"{c} M instructions" for c in cores] + ["status"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["files"]:
        cells = [f"`{Path(row['file']).name}`", row.get("format", "-"), row.get("precision", "-"),
                 f"{row['bytes'] / 1e6:.2f}" if "bytes" in row else "-"]
        for t in threads:
            lat = (row.get("latency_ms") or {}).get(str(t))
            cells.append(f"{lat['median']:.2f} ({lat['p90']:.2f}, {lat['min']:.2f})" if lat else "-")
        cells += [_arm_cell((row.get("arm") or {}).get(c)) for c in cores]
        cells.append(row["status"].replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    arm = report["arm"]
    if cores:
        lines += ["", f"ARM: {arm['note']}; ratio: {arm.get('baseline') or arm.get('baseline_note')}'s count over "
                  "each file's on the same core."]
    elif arm.get("status"):
        lines += ["", f"ARM: {arm['status']}"]
    for row in report["files"]:
        block = details(row)
        if block:
            lines += ["", f"## {Path(row['file']).name}", ""] + [f"- {line.strip()}" for line in block[1:]]
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else f"{len(v)} per-channel scales"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__
