"""--ptq-method through convert: the methods' int8 file is measured beside the plain one on the
same calibration and held-out samples, the better ships as MODEL_int8.tflite, and `auto` scores
its candidates on training samples that are neither calibration nor held-out samples."""

import dataclasses

import numpy as np
import pytest

from exporter.options import BenchSpec, ConvertOptions, DataSpec, QuantSpec
from exporter.train import Schedule

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bias_run(tmp_path_factory):
    from exporter.pipeline import convert

    out = tmp_path_factory.mktemp("ptq")
    opts = ConvertOptions(model="unet", precisions=("float32", "int8"), onnx=False, out=out,
                          data=DataSpec(input_size=64, train_samples=48, val_samples=8),
                          schedule=Schedule(epochs=2, batch_size=16),
                          quant=QuantSpec(calibration_samples=16, layer_errors=0, ptq_methods=("bias_correction",)),
                          bench=BenchSpec(enabled=False, arm=()))
    return opts, convert(opts)


def test_methods_file_is_measured_beside_the_plain_one_and_the_better_ships(bias_run):
    from exporter.policy import better_int8

    opts, report = bias_run
    int8 = {a["file"]: a for a in report["artifacts"] if a["precision"] == "int8"}
    assert len(int8) == 2 and "unet_int8.tflite" in int8
    plain = next(a for a in int8.values() if not a.get("ptq_methods"))
    methods = next(a for a in int8.values() if a.get("ptq_methods"))
    assert methods["ptq_methods"] == ["bias_correction"] and methods["method"] == "ptq"
    best, why = better_int8("unet", report["reference"]["per_class_iou"], [plain, methods])
    assert report["shipped_int8"]["why"] == why and best["file"] == "unet_int8.tflite"
    loser = methods if best is plain else plain
    assert loser["file"] in ("unet_int8_ptq.tflite", "unet_int8_bias_correction.tflite")
    section = report["quantisation"]["ptq_methods"]
    assert section["chosen"] == ["bias_correction"] and section["recipe"]["bias_correction"]
    # The correction changed what the file computes: the two files' int8 outputs differ somewhere.
    folder = opts.out / "unet"
    assert (folder / plain["file"]).read_bytes() != (folder / methods["file"]).read_bytes()
    md = (folder / "report.md").read_text()
    assert "## Post-training methods (--ptq-method)" in md and "| int8 | ptq+bias_correction |" in md


def test_auto_scores_on_samples_disjoint_from_calibration_and_heldout(bias_run):
    from calibration.sampling import representative_indices
    from calibration.sources import load_splits
    from exporter.pipeline import convert

    opts, _ = bias_run
    report = convert(dataclasses.replace(opts, quant=dataclasses.replace(opts.quant, ptq_methods=("auto",))))
    auto = report["quantisation"]["ptq_methods"]["auto"]
    assert "none" in auto["scores"] and len(auto["scores"]) >= 2
    assert all(0.0 <= v <= 1.0 for v in auto["scores"].values())
    splits = load_splits("synthetic", (64, 64), 3, train_samples=48, val_samples=8)
    calib_idx, _ = representative_indices(splits.train, 16)
    calib_ids = {splits.train.ids[i] for i in calib_idx}
    scored = set(auto["scored_ids"])
    assert scored and not scored & calib_ids and not scored & set(splits.val.ids)
    chosen = report["quantisation"]["ptq_methods"]["chosen"]
    best = max(auto["scores"], key=auto["scores"].get)
    assert ("+".join(chosen) or "none") == best  # the first of the best scores: ties go to the plain file
    int8 = [a for a in report["artifacts"] if a["format"] == "tflite" and a["precision"] == "int8"]
    assert np.sum([a["file"] == "unet_int8.tflite" for a in int8]) == 1
