"""The measuring stages: held-out accuracy against the float Keras model, host latency, ARM cost.

Accuracy parity is measured on held-out samples only (never the calibration samples). Host
latency times every file in one run, alternating (exporter.bench); the ARM cost runs after it,
since the emulators load every CPU.
"""

from __future__ import annotations

import numpy as np

from exporter.artifacts import Artifact
from exporter.progress import say
from exporter.stages.run import Run


def reference(run: Run) -> dict:
    """The float Keras model on the held-out samples: what every file is compared with."""
    from exporter.parity import evaluate
    from exporter.runtimes import KerasRunner

    return evaluate(KerasRunner(run.fixed), run.val.images, run.val.masks, run.config.num_classes)


def accuracy(run: Run, artifacts: list[Artifact], ref: dict) -> list[Artifact]:
    from exporter.parity import evaluate
    from exporter.runtimes import open_runner

    say(f"validating on {len(run.val)} held-out samples")
    out = []
    for art in artifacts:
        result = evaluate(open_runner(run.staging / art.file), run.val.images, run.val.masks, run.config.num_classes,
                          reference_preds=ref["preds"],
                          reference_scores=ref["scores"] if art.precision == "float32" else None)
        extra = {"max_abs_diff": result["max_abs_diff"]} if "max_abs_diff" in result else {}
        out.append(art.measured(agreement=round(result["agreement"], 6), miou=round(result["miou"], 6),
                                miou_delta=round(result["miou"] - ref["miou"], 6),
                                per_class_iou=per_class(run.config.labels, result["per_class_iou"]), **extra))
    return out


def latency(run: Run, artifacts: list[Artifact]) -> tuple[list[Artifact], dict]:
    """Every file timed in the same run at each thread count; (records, the report's "benchmark")."""
    bench = run.opts.bench
    info = {"threads": list(bench.threads), "baseline": artifacts[0].file, "runs_per_variant": 0}
    if not bench.enabled:
        return artifacts, info
    from exporter.bench import benchmark

    say(f"benchmarking {len(artifacts)} artifacts at {', '.join(map(str, bench.threads))} thread(s)")
    times = benchmark({a.file: run.staging / a.file for a in artifacts}, run.val.images[:1], threads=bench.threads)
    info["runs_per_variant"] = next(iter(next(iter(times.values())).values()))["runs"]
    return [a.measured(latency_ms={str(t): {**v, "threads": t} for t, v in times[a.file].items()})
            for a in artifacts], info


def arm_cost(run: Run, artifacts: list[Artifact]) -> tuple[list[Artifact], dict]:
    """Each TFLite file's instructions per inference on the emulated ARM cores (exporter.arm);
    (records, the report's top-level "arm_run" or "arm_status")."""
    from exporter.arm.cost_stage import measure_arm

    per_file, top = measure_arm([a.to_json() for a in artifacts], run.staging, run.val, run.opts.bench.arm)
    return [a.measured(arm=per_file[a.file]) if a.file in per_file else a for a in artifacts], top


def per_class(labels, iou) -> dict:
    return {label: (None if np.isnan(v) else round(float(v), 6)) for label, v in zip(labels, iou)}
