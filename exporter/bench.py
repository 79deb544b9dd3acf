"""Latency of every artifact, measured in one run and alternated.

Runtimes disturb whoever runs next (ONNX Runtime's worker threads keep spinning after a run),
so variants alternate in blocks: each block runs one variant `runs + 1` times and drops the
first, blocks rotate over the variants with a short pause between them, and the statistics
come from all kept runs. Timings are reported, never asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from exporter.runtimes import open_runner


def benchmark(paths: dict[str, Path], pixels, threads=(1, 2), blocks: int = 6,
              runs: int = 5, pause_s: float = 0.1, progress=None, warmup: int = 3,
              opener=open_runner) -> dict[str, dict[int, dict]]:
    """{name: {threads: {"median", "p90", "min", "runs"}}} in milliseconds.

    `pixels`: one input for every file, or {name: input} (files of different input sizes);
    `opener(path, threads)` makes the runners (default `open_runner`); `warmup` untimed runs each.
    """
    results: dict[str, dict[int, dict]] = {name: {} for name in paths}
    for t in threads:
        runners = {name: opener(path, t) for name, path in paths.items()}
        for name, runner in runners.items():
            runner.set_input(pixels[name] if isinstance(pixels, dict) else pixels)
            for _ in range(warmup):  # warm-up: allocation, delegate preparation, caches
                runner.invoke()
        samples: dict[str, list[float]] = {name: [] for name in paths}
        names = list(runners)
        for block in range(blocks):
            order = names[block % len(names):] + names[: block % len(names)]
            for name in order:
                runner = runners[name]
                for i in range(runs + 1):
                    start = time.perf_counter()
                    runner.invoke()
                    elapsed = (time.perf_counter() - start) * 1000.0
                    if i:
                        samples[name].append(elapsed)
                time.sleep(pause_s)
                if progress:
                    progress()
        for name, times in samples.items():
            results[name][t] = {
                "median": round(float(np.median(times)), 3),
                "p90": round(float(np.percentile(times, 90)), 3),
                "min": round(float(np.min(times)), 3),
                "runs": len(times),
            }
        del runners
    return results
