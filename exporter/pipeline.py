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
from exporter.arm.cost_stage import DEFAULT_CORES, check_cores, measure_arm
from exporter.artifacts import PRECISIONS, artifact_name, write_bytes, write_json
from exporter.convert.ranges import DEFAULT_PERCENTILE, check_percentile
from exporter.errors import ExporterError, WeightsError
from exporter.progress import say
from exporter.targets import ARM_CORE, targets_for
from exporter.train import Schedule, find_run, run_from_weights, seed_everything, train, training_dir


@dataclasses.dataclass
class ConvertOptions:
    model: str
    precisions: tuple[str, ...] = ("float32", "int8")  # TFLite precisions; float32 is always written
    onnx: bool = True  # float32 ONNX, plus int8 QDQ ONNX when int8 is among the precisions
    weights: Path | None = None
    data: str = "synthetic"
    out: Path = Path("runs")
    io: str = "uint8"
    per_tensor: bool = False  # post-training int8 weights: one scale per tensor, not per channel
    calibration_samples: int = 200
    range_percentile: float = DEFAULT_PERCENTILE  # int8 activation ranges (exporter.convert.ranges); 100: min/max
    input_size: int | None = None
    classes: int | None = None
    threads: tuple[int, ...] = (1, 2)
    schedule: Schedule = dataclasses.field(default_factory=Schedule)
    train_samples: int = 400
    val_samples: int = 100
    bench: bool = True
    arm: tuple[str, ...] = DEFAULT_CORES  # ARM cores each TFLite file's cost is emulated on (exporter.arm); (): none
    gpu: bool = False  # fail unless every float TFLite file is fully GPU-delegate compatible
    # Quantisation-aware training: the shipped <model>_int8.tflite comes from QAT (method "qat"),
    # the post-training one is still measured, as <model>_int8_ptq.tflite. Implies int8.
    qat: bool = False
    qat_epochs: int = 2
    qat_lr: float | None = None  # None: a hundredth of the architecture's training learning rate (QAT_LR_FRACTION)
    qat_targets: str = "float"  # what QAT fits: "float" (the float model's probabilities) or "labels"
    # Layers kept float in an extra <model>_int8_mixed.tflite: "auto" or "LAYER,LAYER". Implies int8.
    keep_float: str | None = None
    max_miou_drop: float | None = None  # the auto target (fraction below float); None: the model's
    keep_float_tries: int = 4  # at most this many layers kept float by "auto"
    layer_errors: int = 10  # worst layers (QuantizationDebugger, held-out) in the report; 0: none
    debug_samples: int = 32  # held-out samples the debugger measures on
    command: str = ""

    def wants_int8(self) -> bool:
        return "int8" in self.precisions or self.qat or bool(self.keep_float)

    def keep_float_layers(self) -> list[str] | None:
        """None: no --keep-float; ["auto"] or the named layers."""
        if self.keep_float is None:
            return None
        spec = self.keep_float.strip()
        if spec == "auto":
            return ["auto"]
        layers = [x.strip() for x in spec.split(",") if x.strip()]
        if not layers:
            raise ExporterError(f"--keep-float {self.keep_float!r}: expected 'auto' or layer names "
                                "separated by commas (see `exporter inspect --quant`)")
        return layers


def prepare_model(opts: ConvertOptions, splits_loader=load_splits):
    """Resolve the config, load the data and get a float Keras model: loaded from --weights, from the
    finished training run in OUT/MODEL/training, or trained there (only when there is none)."""
    spec = get_spec(opts.model)
    run = _trained_run(opts)
    overrides = {}
    if run is not None:
        overrides = _config_of_run(run, opts)
    elif opts.weights is not None:
        if not Path(opts.weights).exists() and spec.config_from_weights is None:
            raise WeightsError(f"{opts.weights}: weights file not found")
        if spec.config_from_weights is not None:
            overrides = spec.config_from_weights(Path(opts.weights))
    if opts.classes is not None:
        overrides.setdefault("num_classes", opts.classes)
    if opts.input_size is not None:
        overrides.setdefault("input_size", opts.input_size)
    config = resolve_config(opts.model, **overrides)
    splits = splits_loader(opts.data, config.input_size, config.num_classes,
                           train_samples=opts.train_samples, val_samples=opts.val_samples)
    if "labels" not in overrides and len(splits.labels) == config.num_classes:
        # Weights without class names (a Keras .h5) take the data's, as does a model trained here.
        config = dataclasses.replace(config, labels=splits.labels)
    for part in (splits.train, splits.val):
        check_labels(part.masks, config.num_classes, f"data {opts.data} vs model {opts.model}")

    seed_everything(opts.schedule.seed)  # before the model is built: seeded initial weights
    model = build(config)
    if run is not None:
        say(f"using the model trained in {run.folder}: {run.describe()}"
            + ("" if opts.weights is not None else
               " (training options apply only when there is no run; another --out trains anew)"))
        if run.data_spec != opts.data:
            say(f"warning: that model was trained on {run.data_spec} data; calibrating and validating on {opts.data}")
        load_weights(model, run.weights, config)
        state = run.state
    elif opts.weights is not None:
        load_weights(model, Path(opts.weights), config)
        return spec, config, splits, model, {"summary": f"weights loaded from {opts.weights}"}
    else:
        say(f"no --weights given and no training run in {training_dir(opts.out, config.name)}: training "
            f"{config.name} on {opts.data} data first (short schedule: {opts.schedule.epochs} epochs; "
            "pass --weights to skip)")
        state = train(model, config, spec, splits, opts.out, opts.schedule, data_spec=opts.data)
        run = find_run(training_dir(opts.out, config.name))
    last = state["history"][-1] if state["history"] else {}
    training = {
        "summary": f"trained for {state['epochs_done']} epochs on {run.data_spec} data ({run.folder}); "
                   f"held-out mIoU after training {last.get('val_miou', float('nan')):.4f}",
        "history": state["history"],
        "schedule": state.get("schedule"),
        "weights": str(run.weights),
        "folder": str(run.folder),
    }
    return spec, config, splits, model, training


def _trained_run(opts: ConvertOptions):
    """The training run convert uses: --weights naming one, else the one in OUT/MODEL/training."""
    if opts.weights is not None:
        run = run_from_weights(Path(opts.weights))
    else:
        run = find_run(training_dir(opts.out, opts.model))
        if run is not None and not run.finished:
            raise ExporterError(f"{run.folder} holds an unfinished training run ({run.describe()}); finish it with "
                                f"`exporter train --model {opts.model} --out {opts.out} --resume`, or pass --weights")
    if run is not None and run.model_config.get("name", opts.model) != opts.model:
        raise WeightsError(f"{run.folder}: a training run of {run.model_config.get('name')!r}, not {opts.model!r}")
    return run


def _config_of_run(run, opts: ConvertOptions) -> dict:
    """resolve_config overrides that rebuild the run's model; explicit options that contradict it fail."""
    cfg = run.model_config
    size = tuple(cfg["input_size"])
    if opts.input_size is not None and (opts.input_size, opts.input_size) != size:
        raise ExporterError(f"--input-size {opts.input_size}: the model trained in {run.folder} takes "
                            f"{size[0]}x{size[1]}; drop --input-size, or use another --out to train anew")
    if opts.classes is not None and opts.classes != len(cfg["labels"]):
        raise ExporterError(f"--classes {opts.classes}: the model trained in {run.folder} has "
                            f"{len(cfg['labels'])} classes; drop --classes, or use another --out to train anew")
    # The trained weights replace any pretrained encoder's, whose file need not exist any more.
    options = {k: v for k, v in cfg["options"].items() if k != "encoder_weights"}
    return {"labels": tuple(cfg["labels"]), "input_size": size, **options}


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
    from exporter.convert.onnx import WEIGHT_BITS, quantise_onnx, to_onnx
    from exporter.convert.signature import INPUT_NAME, export_model
    from exporter.convert.tflite import CALIBRATED, float_ops, op_histogram, to_tflite, weight_scales
    from exporter.delegates import gpu_compatibility, gpu_runtime_check, onnx_mobile_usability
    from exporter.metadata import add_segmenter_metadata, mediapipe_problems, segmenter_metadata_for
    from exporter.parity import evaluate
    from exporter.runtimes import KerasRunner, open_runner

    started = time.time()
    keep_float = opts.keep_float_layers()  # bad --keep-float fails before any work
    check_percentile(opts.range_percentile)
    if opts.qat and opts.qat_epochs < 1:
        raise ExporterError(f"--qat-epochs {opts.qat_epochs}: QAT needs at least one epoch "
                            "(weight ranges are only set by a training step)")
    if opts.qat and opts.qat_targets not in QAT_TARGETS:
        raise ExporterError(f"--qat-targets {opts.qat_targets!r}: choose one of {', '.join(QAT_TARGETS)}")
    if opts.qat and opts.per_tensor:
        raise ExporterError("--per-tensor applies to post-training int8; tfmot's QAT trains per-channel "
                            "weight ranges (drop one of --qat, --per-tensor)")
    if keep_float == ["auto"] and opts.keep_float_tries < 1:
        raise ExporterError(f"--keep-float-tries {opts.keep_float_tries}: must be at least 1")
    check_cores(opts.arm)
    wanted = set(opts.precisions) | ({"int8"} if opts.wants_int8() else set())
    spec, config, splits, model, training = prepare_model(opts)
    fixed = export_model(model, config)
    if keep_float and keep_float != ["auto"]:
        _check_layer_names(keep_float, fixed)
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
        val = splits.val

        artifacts: list[dict] = []

        def add(fmt, precision, method, blob, extra=None, name=None):
            name = name or artifact_name(config.name, precision, fmt)
            write_bytes(staging / name, blob)
            artifacts.append({"file": name, "format": fmt, "precision": precision, "method": method,
                              "bytes": len(blob), **(extra or {})})
            say(f"wrote {name} ({len(blob) / 1e6:.2f} MB)")

        def with_metadata(blob, what):
            """The blob with MediaPipe segmenter metadata, and the artifact entry's TFLite facts."""
            problems = mediapipe_problems(blob)
            blob = add_segmenter_metadata(blob, **segmenter_metadata_for(config), check=False)
            if problems:
                say(f"warning: {what}: MediaPipe's ImageSegmenter cannot use this file: {'; '.join(problems)}")
            return blob, {"ops": op_histogram(blob), "float_ops": float_ops(blob), "mediapipe_problems": problems,
                          "gpu": gpu_compatibility(blob)}

        quantisation: dict = {}
        precisions = ["float32"] + [p for p in PRECISIONS if p in wanted and p != "float32"]
        for precision in precisions:
            say(f"converting to TFLite {precision}" + (
                f" (post-training, {len(calib)} calibration samples)" if precision in CALIBRATED else ""))
            blob = to_tflite(fixed, config, precision, calib.images, io=opts.io, per_tensor=opts.per_tensor,
                             range_percentile=opts.range_percentile)
            # Metadata MediaPipe Tasks' ImageSegmenter reads: labels, normalisation, activation.
            blob, extra = with_metadata(blob, precision)
            name = None
            if precision in CALIBRATED:
                extra["weight_scales"] = weight_scales(opts.per_tensor)
            if precision == "int8":
                extra["io"] = opts.io
                if opts.qat:  # the QAT file ships as <model>_int8.tflite; PTQ is measured beside it
                    name = f"{config.name}_int8_ptq.tflite"
                    extra["role"] = PTQ_BASELINE
            add("tflite", precision, "none" if precision == "float32" else "ptq", blob, extra, name=name)
            if precision == "int8" and opts.qat:
                blob, quantisation["qat"] = _qat_int8(opts, spec, config, splits, model, calib)
                blob, extra = with_metadata(blob, "int8 (QAT)")
                add("tflite", "int8", "qat", blob, {**extra, "io": opts.io, "weight_scales": weight_scales(False)})
        if opts.onnx:
            say("converting to ONNX float32 (tf2onnx)")
            onnx_blob = to_onnx(fixed, config)
            add("onnx", "float32", "none", onnx_blob)
            if "int8" in precisions:
                say("quantising the ONNX model to int8 QDQ (ONNX Runtime, same calibration samples)")
                add("onnx", "int8", "ptq", quantise_onnx(onnx_blob, calib.images, INPUT_NAME, opts.per_tensor,
                                                        opts.range_percentile),
                    {"weight_scales": weight_scales(opts.per_tensor), "weight_bits": WEIGHT_BITS})
            for art in artifacts:
                if art["format"] == "onnx":
                    art["mobile"] = onnx_mobile_usability(staging / art["file"])
        if opts.gpu:
            _require_gpu_compatible(artifacts)

        # The float reference on the held-out samples (the auto keep-float search measures against it).
        ref = evaluate(KerasRunner(fixed), val.images, val.masks, config.num_classes)
        if "int8" in precisions and (opts.layer_errors or keep_float):
            from exporter.quant_debug import ROUNDING_RMSE_OVER_SCALE, QuantDebugSession

            debug_n = min(opts.debug_samples, len(val))
            say(f"per-layer int8 error (TFLite QuantizationDebugger) on {debug_n} held-out samples")
            session = QuantDebugSession(fixed, config, calib.images, val.images[:debug_n], per_tensor=opts.per_tensor,
                                        range_percentile=opts.range_percentile)
            ranking = session.layer_stats()
            quantisation["layer_errors"] = {
                "method": "TFLite QuantizationDebugger: each int8 op against the float op on the same "
                          "(dequantised) input, post-training int8 calibrated on the run's calibration samples",
                "metric": "RMSE / scale: the op's output error in int8 steps",
                "rounding_only": round(ROUNDING_RMSE_OVER_SCALE, 4),
                "split": "held-out",
                "samples": debug_n,
                "heldout_ids": list(val.ids[:debug_n]),
                "tensors": len(ranking),
                "worst": [_round_row(r) for r in ranking[:opts.layer_errors or len(ranking)]],
            }
            if keep_float:
                recipe, selective = _keep_float(opts, keep_float, session, fixed, config, val, ref, ranking, calib)
                quantisation["keep_float"] = recipe
                recipe_name = f"{config.name}_int8_mixed.recipe.json"
                if selective is not None:
                    blob, extra = with_metadata(selective.blob, "int8 with float layers")
                    add("tflite", "int8", "ptq", blob, {
                        **extra, "io": opts.io, "weight_scales": weight_scales(opts.per_tensor), "role": "selective",
                        "keep_float": recipe["keep_float"],
                        "full_integer": not extra["float_ops"], "recipe": recipe_name},
                        name=recipe["file"])
                write_json(staging / recipe_name, recipe)
                say(f"wrote {recipe_name} (kept float: {', '.join(recipe['keep_float']) or 'nothing'})")

        say(f"validating on {len(val)} held-out samples")
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
        if quantisation:
            quantisation["unquantised"] = _unquantised(artifacts, quantisation)

        bench = {"threads": list(opts.threads), "baseline": artifacts[0]["file"], "runs_per_variant": 0}
        if opts.bench:
            from exporter.bench import benchmark

            say(f"benchmarking {len(artifacts)} artifacts at {', '.join(map(str, opts.threads))} thread(s)")
            latencies = benchmark({a["file"]: staging / a["file"] for a in artifacts}, val.images[:1],
                                  threads=opts.threads)
            for art in artifacts:
                art["latency_ms"] = {str(t): {**v, "threads": t} for t, v in latencies[art["file"]].items()}
            bench["runs_per_variant"] = next(iter(next(iter(latencies.values())).values()))["runs"]
        arm = measure_arm(artifacts, staging, val, opts.arm)  # after the host benchmark: it loads every CPU

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
            "weights": str(Path(opts.weights).resolve()) if opts.weights is not None else None,
            "data": {**splits.describe(), "spec": opts.data,
                     "requested": {"train_samples": opts.train_samples, "val_samples": opts.val_samples}},
            "calibration": {
                "samples": len(calib),
                "requested": opts.calibration_samples,
                "method": "stratified from the training split: every class present first, then random",
                "range_percentile": opts.range_percentile,
                "missing_classes": missing,
                "coverage": class_coverage(calib, config.labels),
                "train_coverage": class_coverage(splits.train, config.labels),
            },
            "training": training,
            "environment": environment.describe(),
            "benchmark": bench,
            **arm,
            "gpu_runtime": gpu_runtime_check(staging / artifacts[0]["file"]),
            "artifacts": artifacts,
            "seconds": round(time.time() - started, 1),
        }
        if quantisation:
            report["quantisation"] = quantisation
        report["checks"] = checks(report, weights_n)
        from exporter.recommend import recommend
        from exporter.report import write_report

        report["recommended"] = recommend(report, report["checks"])

        write_report(report, staging)
        _publish(staging, final_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return report


# The post-training int8 file measured beside a QAT one (its checks are reported, not gated).
PTQ_BASELINE = "ptq-baseline"

# What QAT fine-tunes toward. "float": the trained float model's class probabilities on each
# training batch (distillation, `exporter.qat.distiller`). QAT's job is to make the int8 model
# compute what the float one does; toward the ground truth an under-trained model keeps learning
# instead. Measured on the 40-epoch DeepLab (128x128, held-out, 2 epochs, BNs frozen, lr 1e-5):
# agreement of the QAT Keras model with float 99.00 % fitting the float argmax, 99.24 % fitting its
# probabilities; with BNs training and lr 1e-4, labels gave 97.22 %. "labels": the ground-truth
# masks, as the seed's QAT did.
#
# The default QAT learning rate, as a fraction of the architecture's training rate. Measured with
# distillation and frozen BNs, 2 epochs, held-out agreement of the int8 file with float: DeepLab
# (128 px, 40 epochs) 98.44 % at 1e-4 (a tenth), 99.10 % at 1e-5 (a hundredth); UNet (128 px)
# 99.964 % at 1e-4, 99.971 % at 1e-5. QAT only has to absorb the rounding, not learn.
QAT_LR_FRACTION = 0.01

QAT_TARGETS = {
    "float": "the float model's class probabilities on the training images (distillation)",
    "labels": "the ground-truth masks of the training images",
}


def _qat_int8(opts: ConvertOptions, spec, config, splits, model, calib) -> tuple[bytes, dict]:
    """QAT from the trained float model: fine-tune at a low learning rate, convert to int8."""
    from exporter.qat import fine_tune, qat_model, to_int8_tflite

    lr = opts.qat_lr if opts.qat_lr is not None else spec.learning_rate * QAT_LR_FRACTION
    say(f"quantisation-aware training (tfmot): {opts.qat_epochs} epoch(s) at learning rate {lr:g} "
        f"on {len(splits.train)} training samples toward {QAT_TARGETS[opts.qat_targets]}, from the trained float model")
    t0 = time.time()
    qat = qat_model(model, config)
    losses = fine_tune(qat, splits, spec, epochs=opts.qat_epochs, learning_rate=lr,
                       batch_size=opts.schedule.batch_size, seed=opts.schedule.seed, calibration_samples=len(calib),
                       teacher=model if opts.qat_targets == "float" else None,
                       range_percentile=opts.range_percentile)
    say("converting the QAT model to full-integer TFLite int8")
    blob = to_int8_tflite(qat, config, calib.images, io=opts.io, range_percentile=opts.range_percentile)
    info = qat.qat_info.to_json()
    return blob, {
        "file": f"{config.name}_int8.tflite",
        "epochs": opts.qat_epochs,
        "learning_rate": lr,
        "batch_size": opts.schedule.batch_size,
        "training_samples": len(splits.train),
        "targets": QAT_TARGETS[opts.qat_targets],
        "losses": [round(x, 6) for x in losses],
        "seconds": round(time.time() - t0, 1),
        "ranges_calibrated_on": info["ranges_calibrated_on"],
        "range_percentile": info["range_percentile"],
        "frozen_batchnorms": info["frozen_batchnorms"],
        "folded_batchnorms": info["folded"],
        "layers": info["layers"],
        "onnx": QAT_ONNX_NOTE,
    }


# Why there is no QAT ONNX file (see README, "Quantisation-aware training").
QAT_ONNX_NOTE = ("not written: tf2onnx turns the QAT graph's activation fake-quant ops into "
                 "QuantizeLinear/DequantizeLinear but folds tfmot's per-channel weight fake-quant into float "
                 "constants, so the file would hold float weights (as large as the float32 ONNX) and would "
                 "not be an int8 model; the int8 ONNX file of a --qat run is the post-training one (method ptq)")


def _round_row(row: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else v) for k, v in row.items()}


def _keep_float(opts, keep_float, session, fixed, config, val, ref, ranking, calib):
    """The recipe (what stays float, why, what it cost) and the selective file (None: not needed)."""
    from exporter.quant_debug import keep_float_auto

    rank_of = {}
    for row in ranking:
        rank_of.setdefault(row["layer"], (len(rank_of) + 1, row["rmse_over_scale"]))
    recipe = {"model": config.name, "file": f"{config.name}_int8_mixed.tflite",
              "base": f"post-training int8 (TFLite converter), calibrated on the run's {len(calib)} "
                      "stratified training samples", "io": opts.io}
    if keep_float == ["auto"]:
        max_drop = opts.max_miou_drop if opts.max_miou_drop is not None else targets_for(config.name).max_miou_drop
        class_drop = targets_for(config.name).max_class_iou_drop
        say(f"--keep-float auto: keeping the worst layers float until held-out mIoU is within "
            f"{100 * max_drop:g} point(s) of float and no class loses more than {100 * class_drop:g} "
            f"(at most {opts.keep_float_tries} layers)")
        found = keep_float_auto(fixed, config, None, val, max_miou_drop=max_drop, max_class_drop=class_drop,
                                max_tries=opts.keep_float_tries, io=opts.io, session=session, reference=ref)
        chosen, selective = found["keep_float"], found["selective"]
        recipe.update(mode="auto", max_miou_drop=max_drop, max_class_drop=class_drop, max_tries=opts.keep_float_tries,
                      reference_miou=round(found["reference_miou"], 6), target_miou=round(found["target_miou"], 6),
                      met=found["met"], skipped=found["skipped"],
                      trials=[_round_row(t) for t in found["trials"]],
                      measured_on=f"{len(val)} held-out samples")
        if not found["met"]:
            say(f"warning: --keep-float auto: the target was not met with {len(chosen)} layer(s) kept float")
        if not chosen:
            recipe["file"] = None
            recipe["note"] = "The full-integer file already meets the target: no layer kept float, no extra file"
            selective = None
    else:
        chosen = list(keep_float)
        say(f"--keep-float: keeping {', '.join(chosen)} float")
        selective = session.quantize(chosen, io=opts.io)
        recipe["mode"] = "manual"
    recipe["keep_float"] = list(chosen)
    recipe["layers"] = [{"layer": layer, "reason": (
        ("auto: " if recipe["mode"] == "auto" else "asked for (--keep-float); ")
        + (f"ranked #{rank_of[layer][0]} by RMSE/scale ({rank_of[layer][1]:.3f}) on held-out samples"
           if layer in rank_of else "no quantised op of its own"))} for layer in chosen]
    if selective is not None:
        recipe.update(denylisted_nodes=selective.denylisted_nodes, not_honoured=selective.not_honoured,
                      float_ops=sorted(set(selective.float_ops)), full_integer=selective.full_integer)
        if selective.not_honoured:
            say(f"warning: --keep-float: the quantiser kept {len(selective.not_honoured)} denylisted tensor(s) "
                f"int8 anyway: {', '.join(selective.not_honoured[:3])}")
    return recipe, selective


def _check_layer_names(names: list[str], model) -> None:
    """Fail early (before any conversion) on a --keep-float name that is no layer of the model."""
    import difflib

    layers = [layer.name for layer in model.layers]
    for name in names:
        if name not in layers and ";" not in name and "/" not in name:  # TFLite tensor names pass through
            close = difflib.get_close_matches(name, layers, n=3)
            raise ExporterError(f"--keep-float: {model.name} has no layer {name!r}"
                                + (f" (did you mean {', '.join(close)}?)" if close else "")
                                + "; `exporter inspect --quant FILE` lists the layers by int8 error")


def _unquantised(artifacts: list[dict], quantisation: dict) -> dict:
    """{int8 TFLite file: [{"layer", "cls", "reason"}]}: what has no int8 of its own, and why."""
    out = {}
    for art in artifacts:
        if art["format"] != "tflite" or art["precision"] != "int8":
            continue
        if art["method"] == "qat":
            out[art["file"]] = [{"layer": r["layer"], "cls": r["cls"], "reason": r["reason"]}
                                for r in quantisation["qat"]["layers"] if not r["quantised"]]
        elif art.get("role") == "selective":
            out[art["file"]] = [{"layer": x["layer"], "cls": "", "reason": x["reason"]}
                                for x in quantisation["keep_float"]["layers"]]
        else:
            out[art["file"]] = [{"layer": op, "cls": op, "reason": "computes in float (converter left it)"}
                                for op in sorted(set(art["float_ops"]))]
    return out


def _require_gpu_compatible(artifacts: list[dict]) -> None:
    from exporter.errors import ConversionError

    for art in artifacts:
        gpu = art.get("gpu")
        if gpu and art["precision"] in ("float32", "float16") and not gpu["compatible"]:
            blockers = gpu["unsupported_ops"] + gpu["tensors_over_4d"] + gpu["analyzer_warnings"]
            raise ConversionError(f"{art['file']} is not fully GPU-delegate compatible: {', '.join(blockers)}")


def checks(report: dict, weights_n: int) -> list[dict]:
    """The int8 TFLite targets, evaluated on this run's measurements (ONNX int8 is reported only).

    Each check: name, kind, passed (True/False; None: not evaluated, or kind "info"), detail; the
    per-file ones name their file, and those of the accuracy gate (exporter.recommend) say so."""
    from exporter.recommend import recommend

    out = []

    def check(name, kind, passed, detail, file=None, gate=False):
        row = {"name": name, "kind": kind, "passed": None if passed is None else bool(passed), "detail": detail}
        if file:
            row["file"] = file
        if gate:
            row["accuracy_gate"] = True
        out.append(row)

    goal = targets_for(report["model"])
    float_iou = report["reference"]["per_class_iou"]
    by_file = {a["file"]: a for a in report["artifacts"]}
    t = str(max(report["benchmark"]["threads"])) if report["benchmark"]["threads"] else None
    arm_missing = report.get("arm_status")
    int8_files = [a for a in report["artifacts"] if a["precision"] == "int8" and a["format"] == "tflite"]
    for art in int8_files:
        f = art["file"]
        # The PTQ file measured beside a QAT one is reported, not gated (the QAT file ships).
        kind = "reported" if art.get("role") == PTQ_BASELINE else "accuracy"
        qat = art.get("method") == "qat"
        min_agreement = goal.qat_min_agreement if qat else goal.min_agreement
        max_drop = goal.qat_max_miou_drop if qat else goal.max_miou_drop
        check(f"{f}: agreement >= {100 * min_agreement:.1f}%", kind,
              art["agreement"] >= min_agreement, f"{100 * art['agreement']:.3f}%", f, gate=True)
        check(f"{f}: mIoU at most {100 * max_drop:.1f} point below float", kind,
              art["miou_delta"] >= -max_drop, f"{100 * art['miou_delta']:+.3f} points", f, gate=True)
        drops = {c: float_iou[c] - v for c, v in art.get("per_class_iou", {}).items()
                 if v is not None and float_iou.get(c) is not None}
        if drops:
            worst = max(drops, key=drops.get)
            check(f"{f}: no class loses more than {100 * goal.max_class_iou_drop:.1f} IoU points", kind,
                  drops[worst] <= goal.max_class_iou_drop, f"worst {worst}: {-100 * drops[worst]:+.3f} points",
                  f, gate=True)
        # The held-out accuracy above is the host kernels'; the ARM kernels round int8 their own way.
        arm = {core: e for core, e in art.get("arm", {}).items() if "agreement_with_host" in e}
        name = f"{f}: ARM outputs agree with the host's on >= {100 * goal.min_arm_agreement:.1f}% of pixels"
        if arm:
            check(name, "reported", min(e["agreement_with_host"] for e in arm.values()) >= goal.min_arm_agreement,
                  ", ".join(f"{core} {100 * e['agreement_with_host']:.3f}% ({e['samples']} samples)"
                            for core, e in arm.items()), f, gate=True)
        else:
            check(name, "reported", None, f"not evaluated: ARM not measured ({_arm_why(art, arm_missing)})", f,
                  gate=True)
        if art.get("role") != "selective":  # float ops and float weights are what --keep-float asked for
            check(f"{f}: no float op inside", kind, not art["float_ops"],
                  ", ".join(sorted(set(art["float_ops"]))) or "none", f)
            ratio = art["bytes"] / weights_n
            check(f"{f}: at most {goal.max_bytes_per_weight}× one byte per weight", "size",
                  ratio <= goal.max_bytes_per_weight, f"{ratio:.3f} bytes per weight ({weights_n} weights)", f)
        # Host latency: this machine's x86 CPU, not the device class; information, not a check.
        mine = art.get("latency_ms", {}).get(t, {}).get("median")
        for other in (f"{report['model']}_float32.tflite", f"{report['model']}_float32.onnx"):
            theirs = by_file.get(other, {}).get("latency_ms", {}).get(t, {}).get("median")
            if mine and theirs:
                check(f"{f}: host latency vs {other} ({t} threads)", "info", None,
                      f"{theirs / mine:.2f}× as fast ({mine:.2f} vs {theirs:.2f} ms, same run, this machine's CPU)", f)
    if int8_files:
        rec = recommend(report, out)
        base = by_file.get(f"{report['model']}_float32.tflite", {}).get("arm", {}).get(ARM_CORE, {}).get("instructions")
        mine = by_file.get(rec["cpu"], {}).get("arm", {}).get(ARM_CORE, {}).get("instructions")
        name = (f"ARM {ARM_CORE}: float32 over the recommended CPU file ({rec['cpu']}) >= "
                f"{goal.min_arm_ratio}× instructions per inference")
        if base and mine:
            check(name, "speed", base / mine >= goal.min_arm_ratio,
                  f"{base / mine:.2f}× ({base / 1e6:.2f} M vs {mine / 1e6:.2f} M instructions)", rec["cpu"])
        else:
            why = arm_missing or f"no {ARM_CORE} count for " + (rec["cpu"] if base else f"{report['model']}_float32.tflite")
            check(name, "speed", None, f"not evaluated: ARM not measured ({why})", rec["cpu"])
    return out


def _arm_why(art: dict, status: str | None) -> str:
    if status:
        return status
    errors = [f"{core}: {e['error']}" for core, e in art.get("arm", {}).items() if "error" in e]
    return "; ".join(errors) or "no ARM figures for this file"


def _per_class(labels, iou) -> dict:
    return {label: (None if np.isnan(v) else round(float(v), 6)) for label, v in zip(labels, iou)}


def _weights_desc(opts: ConvertOptions) -> str:
    return f"weights {opts.weights}" if opts.weights else "trained here on the default data"


def _publish(staging: Path, final_dir: Path) -> None:
    """Move every staged file into place (after the whole run succeeded)."""
    final_dir.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        os.replace(path, final_dir / path.name)
