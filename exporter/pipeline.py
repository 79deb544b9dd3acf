"""The convert flow: data -> model -> quantise/convert -> validate -> benchmark -> report.

Each stage adds to one report dict; no stage reaches back. Artifacts are written into a staging
folder and moved into `<out>/<model>/` only when the whole run succeeded, so a failed run leaves
no partial artifact behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np

from architectures import ModelConfig, build, get_spec, resolve_config
from calibration.checks import check_labels
from calibration.sampling import class_coverage, representative_indices
from calibration.sources import load_splits
from exporter import environment
from exporter.artifacts import PRECISIONS, artifact_name, write_bytes
from exporter.errors import WeightsError
from exporter.progress import say
from exporter.train import Schedule, WEIGHTS_FILE, cached_state, train, training_dir

# Accuracy targets (fractions, not points) every int8 artifact is checked against in the report.
MIN_INT8_AGREEMENT = 0.998
MAX_INT8_MIOU_DROP = 0.001
MAX_INT8_BYTES_PER_WEIGHT = 1.2
# Speed targets, reported (never gated: a shared machine's timings are noisy).
MIN_INT8_SPEEDUP = 2.5


@dataclasses.dataclass
class ConvertOptions:
    model: str
    precisions: tuple[str, ...] = ("float32", "int8")  # TFLite precisions; float32 is always written
    onnx: bool = True  # float32 ONNX, plus int8 QDQ ONNX when int8 is among the precisions
    weights: Path | None = None
    data: str = "synthetic"
    out: Path = Path("runs")
    io: str = "uint8"
    calibration_samples: int = 200
    input_size: int | None = None
    classes: int | None = None
    threads: tuple[int, ...] = (1, 2)
    schedule: Schedule = dataclasses.field(default_factory=Schedule)
    train_samples: int = 400
    val_samples: int = 100
    bench: bool = True
    gpu: bool = False  # fail unless every float TFLite file is fully GPU-delegate compatible
    command: str = ""


def prepare_model(opts: ConvertOptions, splits_loader=load_splits):
    """Resolve the config, load the data and get a float Keras model (loaded or trained)."""
    spec = get_spec(opts.model)
    overrides = {}
    if opts.weights is not None:
        if not Path(opts.weights).exists() and spec.config_from_weights is None:
            raise WeightsError(f"{opts.weights}: weights file not found")
        if spec.config_from_weights is not None:
            overrides = spec.config_from_weights(Path(opts.weights))
    if opts.classes is not None:
        overrides.setdefault("num_classes", opts.classes)
    config = resolve_config(opts.model, input_size=opts.input_size, **overrides)
    splits = splits_loader(opts.data, config.input_size, config.num_classes,
                           train_samples=opts.train_samples, val_samples=opts.val_samples)
    if "labels" not in overrides and len(splits.labels) == config.num_classes:
        # Weights without class names (a Keras .h5) take the data's, as does a model trained here.
        config = dataclasses.replace(config, labels=splits.labels)
    for part in (splits.train, splits.val):
        check_labels(part.masks, config.num_classes, f"data {opts.data} vs model {opts.model}")

    model = build(config)
    if opts.weights is not None:
        load_weights(model, Path(opts.weights), config)
        training = {"summary": f"weights loaded from {opts.weights}"}
    else:
        state = cached_state(opts.out, config, opts.data, opts.schedule)
        weights = training_dir(opts.out, config.name) / WEIGHTS_FILE
        if state is not None:
            say(f"reusing the model trained earlier in {weights.parent}")
            model.load_weights(str(weights))
        else:
            say(f"no --weights given: training {config.name} on {opts.data} data first "
                f"(short schedule: {opts.schedule.epochs} epochs; pass --weights to skip)")
            state = train(model, config, spec, splits, opts.out, opts.schedule, data_spec=opts.data)
        last = state["history"][-1] if state["history"] else {}
        training = {
            "summary": f"trained here for {state['epochs_done']} epochs on {len(splits.train)} samples "
                       f"of {splits.train.source}; held-out mIoU after training {last.get('val_miou', float('nan')):.4f}",
            "history": state["history"],
            "schedule": state["schedule"],
            "weights": str(weights),
        }
    return spec, config, splits, model, training


def load_weights(model, path: Path, config: ModelConfig) -> None:
    spec = get_spec(config.name)
    if spec.load_weights is not None:
        spec.load_weights(model, path, config)
        return
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load into {config.name} "
                           f"({config.num_classes} classes, {config.input_size}): {exc}") from exc


def weight_count(model) -> int:
    """Weights that survive into the file: BatchNorm parameters fold into the convolutions."""
    from exporter.keras import keras

    return int(sum(np.prod(w.shape) for layer in model.layers
                   if not isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights))


def convert(opts: ConvertOptions) -> dict:
    from exporter.convert.onnx import quantise_onnx, to_onnx
    from exporter.convert.signature import INPUT_NAME, export_model
    from exporter.convert.tflite import CALIBRATED, float_ops, op_histogram, to_tflite
    from exporter.delegates import gpu_compatibility, gpu_runtime_check, onnx_mobile_usability
    from exporter.metadata import add_segmenter_metadata, mediapipe_problems, segmenter_metadata_for
    from exporter.parity import evaluate
    from exporter.runtimes import KerasRunner, open_runner

    started = time.time()
    spec, config, splits, model, training = prepare_model(opts)
    fixed = export_model(model, config)
    final_dir = Path(opts.out) / config.name
    staging = Path(opts.out) / f".{config.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        calib_idx, missing_idx = representative_indices(splits.train, opts.calibration_samples)
        missing = [config.labels[c] for c in missing_idx]
        if missing:
            say(f"warning: classes absent from calibration samples: {', '.join(missing)}")
        calib = splits.train.subset(calib_idx)

        artifacts: list[dict] = []

        def add(fmt, precision, method, blob, extra=None):
            name = artifact_name(config.name, precision, fmt)
            write_bytes(staging / name, blob)
            artifacts.append({"file": name, "format": fmt, "precision": precision, "method": method,
                              "bytes": len(blob), **(extra or {})})
            say(f"wrote {name} ({len(blob) / 1e6:.2f} MB)")

        precisions = ["float32"] + [p for p in PRECISIONS if p in opts.precisions and p != "float32"]
        for precision in precisions:
            say(f"converting to TFLite {precision}" + (
                f" (post-training, {len(calib)} calibration samples)" if precision in CALIBRATED else ""))
            blob = to_tflite(fixed, config, precision, calib.images, io=opts.io)
            # Metadata MediaPipe Tasks' ImageSegmenter reads: labels, normalisation, activation.
            problems = mediapipe_problems(blob)
            blob = add_segmenter_metadata(blob, **segmenter_metadata_for(config), check=False)
            if problems:
                say(f"warning: {precision}: MediaPipe's ImageSegmenter cannot use this file: {'; '.join(problems)}")
            extra = {"ops": op_histogram(blob), "float_ops": float_ops(blob), "mediapipe_problems": problems,
                     "gpu": gpu_compatibility(blob)}
            if precision == "int8":
                extra["io"] = opts.io
            add("tflite", precision, "none" if precision == "float32" else "ptq", blob, extra)
        if opts.onnx:
            say("converting to ONNX float32 (tf2onnx)")
            onnx_blob = to_onnx(fixed, config)
            add("onnx", "float32", "none", onnx_blob)
            if "int8" in precisions:
                say("quantising the ONNX model to int8 QDQ (ONNX Runtime, same calibration samples)")
                add("onnx", "int8", "ptq", quantise_onnx(onnx_blob, calib.images, INPUT_NAME))
            for art in artifacts:
                if art["format"] == "onnx":
                    art["mobile"] = onnx_mobile_usability(staging / art["file"])
        if opts.gpu:
            _require_gpu_compatible(artifacts)

        say(f"validating on {len(splits.val)} held-out samples")
        val = splits.val
        ref = evaluate(KerasRunner(fixed), val.images, val.masks, config.num_classes)
        for art in artifacts:
            result = evaluate(open_runner(staging / art["file"]), val.images, val.masks, config.num_classes,
                              reference_preds=ref["preds"],
                              reference_scores=ref["scores"] if art["precision"] == "float32" else None)
            art.update(
                agreement=round(result["agreement"], 6),
                miou=round(result["miou"], 6),
                miou_delta=round(result["miou"] - ref["miou"], 6),
                per_class_iou=_per_class(config.labels, result["per_class_iou"]),
            )
            if "max_abs_diff" in result:
                art["max_abs_diff"] = result["max_abs_diff"]

        bench = {"threads": list(opts.threads), "baseline": artifacts[0]["file"], "runs_per_variant": 0}
        if opts.bench:
            from exporter.bench import benchmark

            say(f"benchmarking {len(artifacts)} artifacts at {', '.join(map(str, opts.threads))} thread(s)")
            latencies = benchmark({a["file"]: staging / a["file"] for a in artifacts}, val.images[:1],
                                  threads=opts.threads)
            for art in artifacts:
                art["latency_ms"] = {str(t): {**v, "threads": t} for t, v in latencies[art["file"]].items()}
            bench["runs_per_variant"] = next(iter(next(iter(latencies.values())).values()))["runs"]

        weights_n = weight_count(fixed)
        report = {
            "model": config.name,
            "command": opts.command,
            "input_shape": [1, *config.input_size, 3],
            "input_dtype": {a["file"]: a.get("io", "float32") for a in artifacts},
            "normalisation": spec.normalisation,
            "output": spec.output,
            "labels": list(config.labels),
            "config": config.to_json(),
            "reference": {
                "description": f"float32 Keras model (tf_keras), batch 1, {_weights_desc(opts)}",
                "miou": round(ref["miou"], 6),
                "per_class_iou": _per_class(config.labels, ref["per_class_iou"]),
                "parameters": int(fixed.count_params()),
                "weights_after_bn_folding": weights_n,
            },
            "data": {**splits.describe(), "spec": opts.data},
            "calibration": {
                "samples": len(calib),
                "method": "stratified from the training split: every class present first, then random",
                "missing_classes": missing,
                "coverage": class_coverage(calib, config.labels),
                "train_coverage": class_coverage(splits.train, config.labels),
            },
            "training": training,
            "environment": environment.describe(),
            "benchmark": bench,
            "gpu_runtime": gpu_runtime_check(staging / artifacts[0]["file"]),
            "artifacts": artifacts,
            "seconds": round(time.time() - started, 1),
        }
        report["checks"] = checks(report, weights_n)
        from exporter.report import write_report

        write_report(report, staging)
        _publish(staging, final_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return report


def _require_gpu_compatible(artifacts: list[dict]) -> None:
    from exporter.errors import ConversionError

    for art in artifacts:
        gpu = art.get("gpu")
        if gpu and art["precision"] in ("float32", "float16") and not gpu["compatible"]:
            blockers = gpu["unsupported_ops"] + gpu["tensors_over_4d"] + gpu["analyzer_warnings"]
            raise ConversionError(f"{art['file']} is not fully GPU-delegate compatible: {', '.join(blockers)}")


def checks(report: dict, weights_n: int) -> list[dict]:
    """The int8 TFLite targets, evaluated on this run's measurements (ONNX int8 is reported only)."""
    out = []

    def check(name, kind, passed, detail):
        out.append({"name": name, "kind": kind, "passed": bool(passed), "detail": detail})

    for art in report["artifacts"]:
        if art["precision"] != "int8" or art["format"] != "tflite":
            continue
        f = art["file"]
        check(f"{f}: agreement >= {100 * MIN_INT8_AGREEMENT:.1f}%", "accuracy",
              art["agreement"] >= MIN_INT8_AGREEMENT, f"{100 * art['agreement']:.3f}%")
        check(f"{f}: mIoU at most {100 * MAX_INT8_MIOU_DROP:.1f} point below float", "accuracy",
              art["miou_delta"] >= -MAX_INT8_MIOU_DROP, f"{100 * art['miou_delta']:+.3f} points")
        check(f"{f}: no float op inside", "accuracy", not art["float_ops"],
              ", ".join(sorted(set(art["float_ops"]))) or "none")
        ratio = art["bytes"] / weights_n
        check(f"{f}: at most {MAX_INT8_BYTES_PER_WEIGHT}× one byte per weight", "size",
              ratio <= MAX_INT8_BYTES_PER_WEIGHT, f"{ratio:.3f} bytes per weight ({weights_n} weights)")
        by_file = {a["file"]: a for a in report["artifacts"]}
        t = str(max(report["benchmark"]["threads"])) if report["benchmark"]["threads"] else None
        mine = art.get("latency_ms", {}).get(t, {}).get("median")
        for other, target in ((f"{report['model']}_float32.tflite", MIN_INT8_SPEEDUP),
                              (f"{report['model']}_float32.onnx", 1.0)):
            theirs = by_file.get(other, {}).get("latency_ms", {}).get(t, {}).get("median")
            if mine and theirs:
                goal = f"at least {target}× as fast as" if target > 1 else "faster than"
                check(f"{f}: {goal} {other} ({t} threads)", "speed",
                      theirs / mine >= target if target > 1 else theirs > mine, f"{theirs / mine:.2f}× ({mine:.2f} vs {theirs:.2f} ms, same run)")
    return out


def _per_class(labels, iou) -> dict:
    return {label: (None if np.isnan(v) else round(float(v), 6)) for label, v in zip(labels, iou)}


def _weights_desc(opts: ConvertOptions) -> str:
    return f"weights {opts.weights}" if opts.weights else "trained here on the default data"


def _publish(staging: Path, final_dir: Path) -> None:
    """Move every staged file into place (after the whole run succeeded)."""
    final_dir.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        os.replace(path, final_dir / path.name)
