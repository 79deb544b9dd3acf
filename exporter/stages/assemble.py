"""The last stage: the report dict from the records and sections the other stages returned, its
checks (exporter.policy) and the files to ship (exporter.recommend)."""

from __future__ import annotations

import time
from pathlib import Path

from calibration.sampling import class_coverage
from exporter import environment
from exporter.artifacts import Artifact
from exporter.formats import SELECTIVE
from exporter.stages.measure import per_class
from exporter.stages.prepare import weight_count
from exporter.stages.run import Run


def report(run: Run, artifacts: list[Artifact], ref: dict, sections: dict, started: float) -> dict:
    """`sections`: the stages' own parts (quantisation, shipped_int8, benchmark, arm_run/arm_status)."""
    from architectures.input_norm import of_config
    from exporter import output_contract
    from exporter.gpu.runner import gpu_runtime_check
    from exporter.recommend import judged

    opts, config = run.opts, run.config
    arts = [a.to_json() for a in artifacts]
    quantisation = dict(sections.get("quantisation") or {})
    qat_file = next((a["file"] for a in arts if a["method"] == "qat"), None)
    if "qat" in quantisation and qat_file:  # its final name (the ship stage may have renamed it)
        quantisation["qat"] = {**quantisation["qat"], "file": qat_file}
    if quantisation:
        quantisation["unquantised"] = _unquantised(arts, quantisation)
    weights_n = weight_count(run.fixed)
    out = {
        "model": config.name,
        "command": opts.command,
        "input_shape": [1, *config.input_size, 3],
        "input_dtype": {a["file"]: a.get("io", "float32") for a in arts},
        "normalisation": of_config(config).describe(),
        "input_norm": of_config(config).to_json(),
        "output": output_contract.file_output(config),  # what the files' score tensor holds
        "output_contract": output_contract.describe(config, run.fixed.output.shape),
        "labels": list(config.labels),
        "config": config.to_json(),
        "reference": {
            "description": "float32 Keras model (tf_keras), batch 1, "
                           + (f"weights {opts.weights}" if opts.weights else "trained here on the default data"),
            "miou": round(ref["miou"], 6),
            "per_class_iou": per_class(config.labels, ref["per_class_iou"]),
            "parameters": int(run.fixed.count_params()),
            "weights_after_bn_folding": weights_n,
        },
        "weights": str(Path(opts.weights).resolve()) if opts.weights is not None else None,
        "data": {**run.splits.describe(), "spec": opts.data.source,
                 "requested": {"train_samples": opts.data.train_samples, "val_samples": opts.data.val_samples}},
        "calibration": _calibration(run),
        "training": run.training,
        "environment": environment.describe(),
        "benchmark": sections["benchmark"],
        **sections["arm"],
        **sections.get("gpu", {}),
        "gpu_runtime": _gpu_runtime(arts, sections.get("gpu", {})) or gpu_runtime_check(run.staging / arts[0]["file"]),
        "artifacts": arts,
        "seconds": round(time.time() - started, 1),
    }
    if quantisation:
        out["quantisation"] = quantisation
    if sections.get("shipped_int8"):
        out["shipped_int8"] = sections["shipped_int8"]
    out.update(judged(out))
    from exporter.stages.peers import section

    if (peer_section := section(out)) is not None:
        out["peers"] = peer_section
    return out


def _gpu_runtime(arts: list[dict], gpu: dict) -> dict | None:
    """The older `gpu_runtime` summary from the GPU stage's float32 run, when it ran (no second compile)."""
    run = arts[0].get("gpu") if "gpu_run" in gpu and arts and arts[0]["format"] == "tflite" else None
    if not run or "fully_accelerated" not in run:
        return None
    return {"available": True, "fully_accelerated": run["fully_accelerated"], "device": run["device"]}


def _calibration(run: Run) -> dict:
    q = run.opts.quant
    return {
        "samples": len(run.calib),
        "requested": q.calibration_samples,
        "method": "stratified from the training split: every class present first, then random",
        "range_percentile": q.range_percentile,
        "missing_classes": run.missing_classes,
        "coverage": class_coverage(run.calib, run.config.labels),
        "train_coverage": class_coverage(run.splits.train, run.config.labels),
    }


def _unquantised(artifacts: list[dict], quantisation: dict) -> dict:
    """{int8 TFLite file: [{"layer", "cls", "reason"}]}: what has no int8 of its own, and why."""
    out = {}
    for art in artifacts:
        if art["format"] != "tflite" or art["precision"] != "int8":
            continue
        if art["method"] == "qat":
            out[art["file"]] = [{"layer": r["layer"], "cls": r["cls"], "reason": r["reason"]}
                                for r in quantisation["qat"]["layers"] if not r["quantised"]]
        elif art.get("role") == SELECTIVE:
            out[art["file"]] = [{"layer": x["layer"], "cls": "", "reason": x["reason"]}
                                for x in quantisation["keep_float"]["layers"]]
        else:
            out[art["file"]] = [{"layer": op, "cls": op, "reason": "computes in float (converter left it)"}
                                for op in sorted(set(art["float_ops"]))]
    return out
