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
    """The float Keras model on the held-out samples: what every file is compared with. Under another
    output contract (exporter.output_contract) still the float export graph as the model computes
    it: scores at the input size, after the model's own activation."""
    from exporter import output_contract
    from exporter.parity import evaluate
    from exporter.runtimes import KerasRunner

    graph = run.fixed
    if not output_contract.is_default(run.config):
        from exporter.convert.signature import export_model

        graph = export_model(run.model, output_contract.default_of(run.config))
    return evaluate(KerasRunner(graph), run.val.images, run.val.masks, run.config.num_classes)


def accuracy(run: Run, artifacts: list[Artifact], ref: dict) -> list[Artifact]:
    from exporter.formats import CONTRACT_BASELINE
    from exporter.output_contract import client_runner, default_of
    from exporter.parity import evaluate
    from exporter.runtimes import open_runner

    say(f"validating on {len(run.val)} held-out samples")
    out = []
    for art in artifacts:
        # Under another output contract, what the client makes of the file's output (upsampled as
        # MediaPipe's category mask is, the model's activation applied) is what is compared; the
        # default contract's float32 baseline (exporter.stages.export.contract_baseline_files) as is.
        config = default_of(run.config) if art.role == CONTRACT_BASELINE else run.config
        result = evaluate(client_runner(open_runner(run.staging / art.file), config), run.val.images, run.val.masks, run.config.num_classes,
                          reference_preds=ref["preds"],
                          reference_scores=ref["scores"] if art.precision == "float32" else None)
        extra = {"max_abs_diff": result["max_abs_diff"]} if "max_abs_diff" in result else {}
        out.append(art.measured(agreement=round(result["agreement"], 6), miou=round(result["miou"], 6),
                                miou_delta=round(result["miou"] - ref["miou"], 6),
                                per_class_iou=per_class(run.config.labels, result["per_class_iou"]), **extra))
    return out


def latency(run: Run, artifacts: list[Artifact]) -> tuple[list[Artifact], dict]:
    """Every file timed in the same run at each thread count; (records, the report's "benchmark")."""
    return time_files(run.opts.bench, artifacts, run.staging, run.val.images[:1])


def time_files(bench, artifacts: list[Artifact], staging, feeds) -> tuple[list[Artifact], dict]:
    """latency() for any flow: `feeds` one input batch for every file, or {file: its batch}."""
    info = {"threads": list(bench.threads), "baseline": artifacts[0].file, "runs_per_variant": 0}
    if not bench.enabled:
        return artifacts, info
    from exporter.bench import benchmark

    say(f"benchmarking {len(artifacts)} artifacts at {', '.join(map(str, bench.threads))} thread(s)")
    times = benchmark({a.file: staging / a.file for a in artifacts}, feeds, threads=bench.threads)
    info["runs_per_variant"] = next(iter(next(iter(times.values())).values()))["runs"]
    return [a.measured(latency_ms={str(t): {**v, "threads": t} for t, v in times[a.file].items()})
            for a in artifacts], info


def arm_cost(run: Run, artifacts: list[Artifact]) -> tuple[list[Artifact], dict]:
    """Each TFLite file's instructions per inference on the emulated ARM cores (exporter.arm);
    (records, the report's top-level "arm_run" or "arm_status")."""
    return arm_files(run.opts.bench.arm, artifacts, run.staging, run.val)


def arm_files(cores, artifacts: list[Artifact], staging, samples) -> tuple[list[Artifact], dict]:
    """arm_cost() for any flow: `samples` has the model's input batch as `.images`."""
    from exporter.arm.cost_stage import measure_arm

    per_file, top = measure_arm([a.to_json() for a in artifacts], staging, samples, cores)
    return [a.measured(arm=per_file[a.file]) if a.file in per_file else a for a in artifacts], top


def gpu(run: Run, artifacts: list[Artifact]) -> tuple[list[Artifact], dict]:
    """Each TFLite file on LiteRT's GPU accelerator in a child process (exporter.gpu.stage), and the
    float graph's fp16 simulation beside it; (records, the report's "gpu_run" or "gpu_status")."""
    from exporter.gpu.stage import SAMPLES

    artifacts, top = gpu_files(run.opts.bench.enabled and run.opts.bench.gpu, artifacts, run.staging, run.val.images)
    if "gpu_run" in top:
        from exporter.gpu.fp16_sim import simulate

        top["gpu_run"]["fp16_simulation"] = sim = simulate(run.fixed, run.val.images[:SAMPLES].astype(np.float32))
        if "agreement_with_float32" in sim and sim["agreement_with_float32"] is not None:
            say(f"GPU: fp16 simulation of the float graph: agreement with float32 "
                f"{100 * sim['agreement_with_float32']:.3f}%, max |Δ| {sim['max_abs_diff']:.3g}")
    return artifacts, top


def gpu_files(enabled: bool, artifacts: list[Artifact], staging, inputs) -> tuple[list[Artifact], dict]:
    """The GPU run for any flow, on the model's input batch `inputs`."""
    from exporter.gpu.stage import measure_gpu

    per_file, top = measure_gpu([a.to_json() for a in artifacts], staging, inputs, enabled=enabled)
    return [a.measured(gpu=per_file[a.file]) if a.file in per_file else a for a in artifacts], top


def per_class(labels, iou) -> dict:
    return {label: (None if np.isnan(v) else round(float(v), 6)) for label, v in zip(labels, iou)}
