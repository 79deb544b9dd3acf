"""--qat, --keep-float (auto and manual) and `inspect --quant` through the real console script.

One small UNet (64x64, 4 training epochs, 1 QAT epoch, 16 calibration and 16 held-out samples) is
trained once by the QAT run; the manual --keep-float run reuses its weights. Real files, real
LiteRT; nothing mocked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import EXPORTER
from exporter.convert.ranges import DEFAULT_PERCENTILE
from test_cli import assert_one_line_error

pytestmark = pytest.mark.slow

SMALL = ["--input-size", "64", "--train-samples", "64", "--val-samples", "16", "--calibration-samples", "16",
         "--threads", "1", "--no-onnx"]
SAFE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD")  # ops the quantiser honours a denylist for


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([EXPORTER, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def tflite_facts(path: Path) -> tuple:
    from ai_edge_litert.interpreter import Interpreter

    from exporter.convert.tflite import float_ops

    blob = path.read_bytes()
    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    return inp["dtype"], tuple(inp["shape"]), float_ops(blob)


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """convert --int8 --qat --keep-float auto: trains (4 epochs on 160 scenes, enough for the float
    model to segment rather than paint one class), fine-tunes, converts, searches, reports."""
    root = tmp_path_factory.mktemp("qat")
    result = cli("convert", "--model", "unet", "--int8", "--qat", "--qat-epochs", "1", "--epochs", "4",
                 "--keep-float", "auto", "--keep-float-tries", "2", "--layer-errors", "200", *SMALL,
                 "--train-samples", "160", "--no-arm",  # ARM is tested in test_end_to_end and test_arm
                 "--out", "out", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = root / "out" / "unet"
    return root, folder, json.loads((folder / "report.json").read_text()), result


@pytest.fixture(scope="module")
def manual_run(qat_run):
    """convert --keep-float LAYER with the QAT run's trained weights (no training, no QAT)."""
    root, folder, report, _ = qat_run
    layer = next(r["layer"] for r in report["quantisation"]["layer_errors"]["worst"] if r["op"] in SAFE_OPS)
    result = cli("convert", "--model", "unet", "--weights", folder / "training" / "weights.h5",
                 "--keep-float", layer, *SMALL, "--no-arm", "--out", "manual", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "manual" / "unet"
    return layer, out, json.loads((out / "report.json").read_text())


def int8_files(report: dict) -> dict:
    """{"qat": entry, "ptq": entry} of a --qat run's two full-integer files (not --keep-float's)."""
    return {a["method"]: a for a in report["artifacts"]
            if a["format"] == "tflite" and a["precision"] == "int8" and a.get("role") != "selective"}


def test_qat_and_ptq_are_measured_side_by_side_and_the_better_ships(qat_run):
    from exporter.policy import better_int8

    _, folder, report, result = qat_run
    arts = {a["file"]: a for a in report["artifacts"]}
    qat, ptq = int8_files(report)["qat"], int8_files(report)["ptq"]
    # The better held-out result under UNet's gate is MODEL_int8.tflite; the other keeps its suffix.
    best, why = better_int8("unet", report["reference"]["per_class_iou"], [qat, ptq])
    other = qat if best is ptq else ptq
    assert best["file"] == "unet_int8.tflite" and "role" not in best
    assert other["file"] == f"unet_int8_{other['method']}.tflite" and other["role"] == "alternative"
    shipped = report["shipped_int8"]
    assert shipped == {"file": "unet_int8.tflite", "method": best["method"],
                       "from": f"unet_int8_{best['method']}.tflite", "why": why, "others": {other["file"]: other["method"]}}
    assert set(arts) >= {"unet_int8.tflite", other["file"]} and f"unet_int8_{best['method']}.tflite" not in arts
    assert f"unet_int8.tflite is the {best['method']} file" in result.stderr
    assert report["quantisation"]["qat"]["file"] == qat["file"]
    for art in (qat, ptq):
        dtype, shape, floats = tflite_facts(folder / art["file"])
        assert dtype == np.uint8 and shape == (1, 64, 64, 3) and floats == [] and art["float_ops"] == []
        assert art["bytes"] == (folder / art["file"]).stat().st_size
        assert art["latency_ms"]["1"]["median"] > 0
        assert set(art["per_class_iou"]) == set(report["labels"])
    # Same run, same held-out samples, same benchmark: side by side.
    assert qat["latency_ms"]["1"]["runs"] == ptq["latency_ms"]["1"]["runs"]
    assert qat["agreement"] >= 0.9, qat  # a broken QAT graph agrees on ~1/classes of the pixels
    q = report["quantisation"]["qat"]
    assert q["epochs"] == 1 and len(q["losses"]) == 1 and math.isfinite(q["losses"][0])
    assert q["ranges_calibrated_on"] == report["calibration"]["samples"] == 16
    # QAT's ranges start where post-training int8's end: the same percentile of the same samples.
    assert q["range_percentile"] == report["calibration"]["range_percentile"] == DEFAULT_PERCENTILE < 100
    assert q["learning_rate"] == pytest.approx(1e-5)  # a hundredth of UNet's 1e-3
    assert q["targets"] == "the float model's class probabilities on the training images (distillation)"  # default
    assert q["frozen_batchnorms"] > 0
    assert "not written" in q["onnx"]
    # The shipped file, not the one measured beside it, is what --strict gates on.
    kinds = {c["name"].split(":")[0]: c["kind"] for c in report["checks"] if "agreement" in c["name"]}
    assert kinds["unet_int8.tflite"] == "accuracy" and kinds[other["file"]] == "reported"
    md = (folder / "report.md").read_text()
    assert "## Post-training vs quantisation-aware int8" in md and f"is the {best['method']} file (chosen: " in md
    assert f"| {qat['file']} | int8 | qat |" in md and f"| {ptq['file']} | int8 | ptq |" in md
    for label in report["labels"]:
        assert f"| IoU Δ {label} |" in md
    ref = report["reference"]["per_class_iou"][report["labels"][0]]
    delta = qat["per_class_iou"][report["labels"][0]] - ref
    assert f"{delta:+.4f}" in md


def test_unquantised_layers_are_listed_with_reasons(qat_run):
    _, folder, report, _ = qat_run
    unq = report["quantisation"]["unquantised"]
    files = int8_files(report)
    assert unq[files["ptq"]["file"]] == []
    qat_rows = {r["layer"]: r for r in unq[files["qat"]["file"]]}
    # QAT fine-tunes the export graph: the decoder BNs are already in its phase convs (no up*_bn),
    # MobileNetV2's zero paddings (range-preserving) are all that has no quantizer of its own.
    assert report["quantisation"]["qat"]["graph"] == "export"
    assert qat_rows and {r["cls"] for r in qat_rows.values()} == {"ZeroPadding2D"}, qat_rows
    assert all(r["reason"] for r in qat_rows.values())
    records = {r["layer"]: r for r in report["quantisation"]["qat"]["layers"]}
    assert set(qat_rows) == {name for name, r in records.items() if not r["quantised"]}
    assert not [name for name in records if name.endswith("_bn")]
    md = (folder / "report.md").read_text()
    assert "## Layers left unquantised" in md and "block_1_pad (ZeroPadding2D): " in md
    assert "tfmot QAT from the trained float model on its export graph" in md


def test_per_layer_errors_are_measured_on_heldout_samples(qat_run):
    _, folder, report, _ = qat_run
    le = report["quantisation"]["layer_errors"]
    assert le["split"] == "held-out" and le["samples"] == 16
    assert le["heldout_ids"] == report["data"]["heldout_ids"][:16]
    scores = [r["rmse_over_scale"] for r in le["worst"]]
    assert len(scores) == le["tensors"] > 40 and scores == sorted(scores, reverse=True)
    assert all(s >= 0 and r["layer"] for s, r in zip(scores, le["worst"]))
    md = (folder / "report.md").read_text()
    assert "## Per-layer int8 error" in md and f"| 1 | {le['worst'][0]['layer']} |" in md
    # The calibration table: sample count, method, every class.
    assert "16 samples, stratified from the training split" in md
    for label in report["labels"]:
        assert f"| {label} | " in md


def test_keep_float_auto_keeps_the_fewest_worst_layers_and_saves_the_recipe(qat_run):
    _, folder, report, _ = qat_run
    recipe = json.loads((folder / "unet_int8_mixed.recipe.json").read_text())
    assert recipe == report["quantisation"]["keep_float"]
    assert recipe["mode"] == "auto" and recipe["max_tries"] == 2
    trials = recipe["trials"]
    assert trials[0]["keep_float"] == [] and trials[-1]["keep_float"] == recipe["keep_float"]
    # Every try but the last missed the target (mIoU, and no class losing more than the model's
    # per-class limit); the last met it or used up the tries.
    assert recipe["max_class_drop"] == pytest.approx(0.015)

    def meets(t):
        return t["miou"] >= recipe["target_miou"] and t["worst_class_delta"] >= -recipe["max_class_drop"]

    assert not any(meets(t) for t in trials[:-1])
    assert recipe["met"] == meets(trials[-1])
    assert recipe["met"] or len(recipe["keep_float"]) == 2
    ranked = list(dict.fromkeys(r["layer"] for r in report["quantisation"]["layer_errors"]["worst"]))
    assert recipe["keep_float"] == [x for x in ranked if x not in recipe["skipped"]][:len(recipe["keep_float"])]
    arts = {a["file"]: a for a in report["artifacts"]}
    if recipe["keep_float"]:
        mixed = arts["unet_int8_mixed.tflite"]
        assert mixed["role"] == "selective" and mixed["keep_float"] == recipe["keep_float"]
        # The pipeline's own validation of the published file reproduces the search's last try.
        assert mixed["miou"] == pytest.approx(trials[-1]["miou"], abs=1e-6)
        assert mixed["float_ops"] and not mixed["full_integer"]
        assert mixed["latency_ms"]["1"]["runs"] == arts["unet_int8.tflite"]["latency_ms"]["1"]["runs"]
        assert "latency cost, 1 thread(s)" in (folder / "report.md").read_text()
    else:
        assert recipe["met"] and recipe["file"] is None and "unet_int8_mixed.tflite" not in arts


def test_keep_float_manual_writes_a_selective_file_and_recipe(manual_run):
    layer, out, report = manual_run
    arts = {a["file"]: a for a in report["artifacts"]}
    full, mixed = arts["unet_int8.tflite"], arts["unet_int8_mixed.tflite"]
    assert full["method"] == "ptq" and full["float_ops"] == [] and "unet_int8_ptq.tflite" not in arts
    dtype, shape, floats = tflite_facts(out / "unet_int8_mixed.tflite")
    assert dtype == np.uint8 and shape == (1, 64, 64, 3) and floats and floats == mixed["float_ops"]
    recipe = json.loads((out / "unet_int8_mixed.recipe.json").read_text())
    assert recipe["mode"] == "manual" and recipe["keep_float"] == [layer] == mixed["keep_float"]
    assert recipe["denylisted_nodes"] and recipe["not_honoured"] == [] and recipe["full_integer"] is False
    assert report["quantisation"]["unquantised"]["unet_int8_mixed.tflite"][0]["layer"] == layer
    assert mixed["latency_ms"]["1"]["median"] > 0 and full["latency_ms"]["1"]["median"] > 0
    names = [c["name"] for c in report["checks"]]
    assert "unet_int8_mixed.tflite: no float op inside" not in names
    assert "unet_int8.tflite: no float op inside" in names


def test_inspect_quant_reproduces_the_reports_ranking(manual_run, qat_run):
    root, folder, report, _ = qat_run
    ptq = int8_files(report)["ptq"]["file"]
    result = cli("inspect", "--quant", folder / ptq, "--top", "5", "--samples", "16", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 5
    worst = report["quantisation"]["layer_errors"]["worst"]
    # Same float model, same calibration samples, same held-out samples: the same figures.
    assert [r[4] for r in rows] == [w["layer"] for w in worst[:5]]
    assert [float(r[1]) for r in rows] == pytest.approx([w["rmse_over_scale"] for w in worst[:5]], abs=1e-3)
    layer, out, _ = manual_run
    mixed = cli("inspect", "--quant", out / "unet_int8_mixed.tflite", "--top", "60", cwd=root)
    assert mixed.returncode == 0 and "[float in this file]" in mixed.stdout, mixed.stderr[-2000:]


def test_quant_bad_input_is_one_line(qat_run, tmp_path):
    root, folder, report, _ = qat_run
    files = int8_files(report)
    assert_one_line_error(cli("inspect", "--quant", folder / files["qat"]["file"], cwd=root),
                          "quantisation-aware", files["ptq"]["file"])
    assert_one_line_error(cli("inspect", "--quant", folder / "unet_float32.tflite", cwd=root), "float32")
    lonely = tmp_path / "unet_int8.tflite"
    lonely.write_bytes((folder / files["ptq"]["file"]).read_bytes())
    assert_one_line_error(cli("inspect", "--quant", lonely, cwd=root), "no report.json")
    bad = cli("convert", "--model", "unet", "--weights", folder / "training" / "weights.h5", "--keep-float",
              "block_1_expand_rleu", *SMALL, "--out", "bad", cwd=tmp_path)
    assert_one_line_error(bad, "no layer 'block_1_expand_rleu'", "block_1_expand_relu")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("*.tflite"))
    assert_one_line_error(cli("convert", "--model", "unet", "--keep-float", ",", cwd=tmp_path), "--keep-float")
    assert_one_line_error(cli("convert", "--model", "unet", "--qat", "--per-tensor", cwd=tmp_path), "--per-tensor")
    assert_one_line_error(cli("convert", "--model", "unet", "--range-percentile", "101", cwd=tmp_path),
                          "--range-percentile 101", "100 keeps")
    assert_one_line_error(cli("convert", "--model", "unet", "--qat", "--qat-targets", "soft", cwd=tmp_path),
                          "--qat-targets 'soft'", "float", "labels")


def test_qat_distillation_fits_the_float_models_probabilities_and_freezes_batchnorm():
    from architectures import build, get_spec, resolve_config
    from calibration.synthetic import synthetic_splits
    from exporter.keras import keras, tf
    from exporter.qat import batchnorms, calibrate_ranges, distillation_loss, fine_tune, qat_model

    # The loss is KL(teacher || student) over classes, averaged over pixels.
    rng = np.random.default_rng(0)
    t, st = rng.normal(size=(2, 4, 4, 3)).astype(np.float32), rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    p, q = tf.nn.softmax(t).numpy(), tf.nn.softmax(st).numpy()
    expected = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    assert float(distillation_loss(t, st, "logits")) == pytest.approx(expected, rel=1e-4)
    assert float(distillation_loss(p, q, "softmax")) == pytest.approx(expected, rel=1e-3)
    assert float(distillation_loss(t, t, "logits")) == pytest.approx(0.0, abs=1e-6)

    config = resolve_config("unet", input_size=64, num_classes=3)
    keras.utils.set_random_seed(0)  # the same untrained teacher whatever ran before
    teacher = build(config)
    head = teacher.layers[-1]  # the transposed conv to the classes: sharpen an untrained model's guesses
    head.set_weights([w * 30.0 for w in head.get_weights()])
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    qat = qat_model(teacher, config)
    bns = batchnorms(qat)
    assert bns and qat.qat_info.frozen_batchnorms == len(bns) and not any(bn.trainable for bn in bns)
    moving = [bn.moving_mean.numpy().copy() for bn in bns]
    splits = synthetic_splits(16, 2, (64, 64), 3)
    calibrate_ranges(qat, splits.train.images[:8])
    kernel = next(w for w in reversed(qat.trainable_weights) if w.name.split("/")[-1].startswith("kernel:"))
    kernel.assign(kernel + np.random.default_rng(1).normal(0, float(np.std(kernel.numpy())), kernel.shape))

    def gap():  # the student's distance from the teacher on the training images
        x = splits.train.images.astype(np.float32)
        return float(distillation_loss(teacher(x, training=False), qat(x, training=False), "logits"))

    before = gap()
    losses = fine_tune(qat, splits, get_spec("unet"), epochs=3, learning_rate=1e-3, batch_size=8, teacher=teacher)
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert before > 1e-3 and gap() < 0.5 * before, (before, gap(), losses)  # it moved toward the teacher
    for a, b in zip(teacher_weights, teacher.get_weights()):  # teacher untouched
        np.testing.assert_array_equal(a, b)
    for m, bn in zip(moving, bns):  # inference-mode BN: moving statistics never update
        np.testing.assert_array_equal(m, bn.moving_mean.numpy())
