"""Quantisation-aware training (tfmot) from the trained float model, as one more int8 file.

Both this file and the post-training one are measured; the ship stage decides which is
MODEL_int8.tflite (exporter.policy.better_int8).
"""

from __future__ import annotations

import time

from exporter.artifacts import Artifact
from exporter.formats import ALTERNATIVE, artifact_name
from exporter.options import QAT_TARGETS
from exporter.progress import say
from exporter.stages.export import write_tflite
from exporter.stages.run import Run

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


def qat_files(run: Run) -> tuple[list[Artifact], dict]:
    """([the QAT int8 file], the report's quantisation["qat"]); nothing without --qat."""
    from exporter.convert.tflite import weight_scales

    if not run.opts.quant.qat:
        return [], {}
    blob, info = _qat_int8(run)
    name = artifact_name(run.name, "int8", role="qat")  # the ship stage may rename it MODEL_int8.tflite
    art = write_tflite(run, blob, name, "int8", "qat",
                       {"io": run.opts.quant.io, "weight_scales": weight_scales(False)}, role=ALTERNATIVE)
    return [art], {"qat": {**info, "file": name}}


def _qat_int8(run: Run) -> tuple[bytes, dict]:
    """QAT from the trained float model: fine-tune at a low learning rate, convert to int8."""
    from exporter.qat import export_graph_qat_model, fine_tune, to_int8_tflite

    opts, spec, config, splits, model, calib = run.opts.quant, run.spec, run.config, run.splits, run.model, run.calib
    schedule = run.opts.schedule
    lr = opts.qat_lr if opts.qat_lr is not None else spec.learning_rate * QAT_LR_FRACTION
    say(f"quantisation-aware training (tfmot): {opts.qat_epochs} epoch(s) at learning rate {lr:g} "
        f"on {len(splits.train)} training samples toward {QAT_TARGETS[opts.qat_targets]}, on the trained float model's export graph")
    t0 = time.time()
    # The export graph is fine-tuned (the same rewrites as the post-training file); the trained
    # float model, which computes the same function, is the teacher.
    qat = export_graph_qat_model(model, config)
    losses = fine_tune(qat, splits, spec, epochs=opts.qat_epochs, learning_rate=lr,
                       batch_size=schedule.batch_size, seed=schedule.seed, calibration_samples=len(calib),
                       teacher=model if opts.qat_targets == "float" else None,
                       range_percentile=opts.range_percentile)
    say("converting the QAT model to full-integer TFLite int8")
    blob = to_int8_tflite(qat, config, calib.images, io=opts.io, range_percentile=opts.range_percentile)
    info = qat.qat_info.to_json()
    return blob, {
        "epochs": opts.qat_epochs,
        "learning_rate": lr,
        "batch_size": schedule.batch_size,
        "training_samples": len(splits.train),
        "targets": QAT_TARGETS[opts.qat_targets],
        "losses": [round(x, 6) for x in losses],
        "seconds": round(time.time() - t0, 1),
        "ranges_calibrated_on": info["ranges_calibrated_on"],
        "range_percentile": info["range_percentile"],
        "frozen_batchnorms": info["frozen_batchnorms"],
        "graph": info["graph"],
        "folded_batchnorms": info["folded"],
        "layers": info["layers"],
        "onnx": QAT_ONNX_NOTE,
    }


# Why there is no QAT ONNX file (see README, "Quantisation-aware training").
QAT_ONNX_NOTE = ("not written: tf2onnx turns the QAT graph's activation fake-quant ops into "
                 "QuantizeLinear/DequantizeLinear but folds tfmot's per-channel weight fake-quant into float "
                 "constants, so the file would hold float weights (as large as the float32 ONNX) and would "
                 "not be an int8 model; the int8 ONNX file of a --qat run is the post-training one (method ptq)")
