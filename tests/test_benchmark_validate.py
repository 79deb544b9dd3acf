"""`exporter benchmark` and `exporter validate` on files that already exist, through the console script.

The files are built here, once: a UNet at 32x32 through the project's own converters (float32 and
int8 TFLite with metadata, ONNX), and files this project did not make, converted with plain
TensorFlow and tf2onnx from a tiny CNN: float32, float16 and dynamic-range TFLite, ONNX, the
same CNN with other weights (a wrong candidate), a 2-output file, and a 1-channel sigmoid head
taking float 0..1 pixels declared in MediaPipe-style metadata (and its ONNX, which declares nothing).
Building them takes 15-30 s on two cores, so every test that uses them is marked slow.
"""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.conftest import write_png
from tests.test_cli import assert_one_line_error

SIZE = 32


def _tiny(keras, seed, channels=3, activation=None, scale=1 / 255, size=SIZE):
    """A segmentation-like CNN: full-resolution features + an upsampled coarse branch -> scores."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), batch_size=1, name="image")
    x = keras.layers.Rescaling(scale)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    low = keras.layers.Conv2D(64, 3, strides=4, padding="same", activation="relu")(x)  # >1024 weights: dynamic
    x = keras.layers.Concatenate()([x, keras.layers.UpSampling2D(4)(low)])
    scores = keras.layers.Conv2D(channels, 1, activation=activation, name="scores")(x)
    return keras.Model(inputs, scores), inputs, low


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import tf2onnx

    from architectures import build, resolve_config
    from exporter.convert.onnx import to_onnx
    from exporter.convert.tflite import to_tflite
    from exporter.keras import keras, tf
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for

    out = tmp_path_factory.mktemp("model_files")
    # Ours: the registry's UNet through the project's converters, with the metadata convert writes.
    config = resolve_config("unet", input_size=SIZE, num_classes=3, batch_size=1)
    keras.utils.set_random_seed(0)
    unet = build(config)
    unet.save_weights(str(out / "unet.weights.h5"))
    calib = np.random.default_rng(0).integers(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8)
    for precision in ("float32", "int8"):
        blob = to_tflite(unet, config, precision, calib)
        (out / f"unet_{precision}.tflite").write_bytes(add_segmenter_metadata(blob, **segmenter_metadata_for(config)))
    (out / "unet_float32.onnx").write_bytes(to_onnx(unet, config))

    # Theirs: plain TensorFlow and tf2onnx.
    def tflite(model, optimise=False, types=None, size=SIZE):
        fn = tf.function(lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="image")])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], tf.Module())
        if optimise:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if types:
            converter.target_spec.supported_types = types
        return converter.convert()

    def onnx(model, path):
        spec = [tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32, name="image")]
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))

    foreign, inputs, low = _tiny(keras, 1)
    (out / "foreign_float32.tflite").write_bytes(tflite(foreign))
    (out / "foreign_float16.tflite").write_bytes(tflite(foreign, True, [tf.float16]))
    (out / "foreign_dynamic.tflite").write_bytes(tflite(foreign, True))
    onnx(foreign, out / "foreign.onnx")
    (out / "other_float32.tflite").write_bytes(tflite(_tiny(keras, 2)[0]))
    aux = keras.layers.Conv2D(3, 1, name="aux")(low)  # a coarse 8x8 head beside the 32x32 scores
    (out / "two_outputs.tflite").write_bytes(tflite(keras.Model(inputs, [aux, foreign.output])))
    (out / "small16.tflite").write_bytes(tflite(_tiny(keras, 1, size=16)[0], size=16))
    sigmoid = _tiny(keras, 3, channels=1, activation="sigmoid", scale=1.0)[0]  # takes 0..1
    blob = add_segmenter_metadata(tflite(sigmoid), name="fg", description="a 1-channel sigmoid head, 0..1 input",
                                  labels=["foreground"], mean=0.0, std=255.0, output_activation="NONE")
    (out / "sigmoid.tflite").write_bytes(blob)
    onnx(sigmoid, out / "sigmoid.onnx")
    (out / "bad.tflite").write_bytes(np.arange(256, dtype=np.uint8).tobytes())
    return out


@pytest.mark.slow
def test_benchmark_reports_every_file_and_names_the_failed_ones(files, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGEXPORT_ARM_CACHE", str(tmp_path / "no-arm-env"))  # --arm says why it cannot run
    names = ["unet_float32.tflite", "unet_int8.tflite", "unet_float32.onnx", "foreign_float16.tflite",
             "foreign_dynamic.tflite", "two_outputs.tflite", "sigmoid.tflite", "bad.tflite", "missing.onnx"]
    result = run_cli("benchmark", *[str(files / n) for n in names], "--threads", "1,2", "--runs", "4",
                     "--warmup", "1", "--arm", "cortex-a76", "--json", "bench.json", "--markdown", "bench.md")
    assert_one_line_error(result, "2 of 9 file(s) failed", "bad.tflite", "missing.onnx: file not found")
    assert result.returncode == 1
    assert "ARM: not measured" in result.stdout and "no-arm-env" in result.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["file"].rsplit("/", 1)[-1]: r for r in report["files"]}
    assert list(rows) == names
    for name in names[:7]:
        row = rows[name]
        assert row["status"] == "ran", row
        assert {"file", "format", "precision", "bytes", "inputs", "outputs", "ops", "delegation", "latency_ms",
                "status"} <= set(row)
        assert set(row["latency_ms"]) == {"1", "2"}
        for stats in row["latency_ms"].values():
            assert 0 < stats["min"] <= stats["median"] <= stats["p90"] and stats["runs"] == 4
        assert row["bytes"] == (files / name).stat().st_size
    assert rows["bad.tflite"]["status"].startswith("failed: not a valid TFLite file")
    assert rows["missing.onnx"]["status"] == "failed: file not found"
    assert {n: rows[n]["precision"] for n in names[:5]} == {
        "unet_float32.tflite": "float32", "unet_int8.tflite": "int8", "unet_float32.onnx": "float32",
        "foreign_float16.tflite": "float16", "foreign_dynamic.tflite": "dynamic"}

    int8 = rows["unet_int8.tflite"]
    assert int8["inputs"][0]["dtype"] == "uint8" and int8["inputs"][0]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert int8["outputs"][0]["quantization"]["scale"] > 0
    assert int8["ops"]["CONV_2D"] > 0 and int8["float_ops"] == []
    d = int8["delegation"]
    assert d["partitions"] >= 1 and d["delegated_ops"] + sum(d["undelegated"].values()) == d["total_ops"]
    assert d["undelegated"] == {"QUANTIZE": 2}  # the uint8 edges stay on LiteRT's kernels
    assert d["gpu"]["compatible"] is True
    assert int8["metadata"]["labels"] == ["pet", "background", "border"] and int8["mediapipe_problems"] == []
    assert int8["arm"]["status"].startswith("ARM emulation not available")
    assert rows["unet_float32.onnx"]["delegation"]["execution_provider"] == "CPUExecutionProvider"
    assert rows["unet_float32.onnx"]["input_contract"]["source"] == "ours"

    two = rows["two_outputs.tflite"]
    assert len(two["outputs"]) == 2 and two["outputs"][two["head"]["output"]]["shape"] == [1, SIZE, SIZE, 3]
    sig = rows["sigmoid.tflite"]
    assert sig["head"]["channels"] == 1 and sig["head"]["rule"] == "threshold 0.5"
    assert sig["input_contract"]["source"] == "metadata" and sig["input_contract"]["std"] == [255.0]
    assert sig["metadata"]["labels"] == ["foreground"]

    env = report["environment"]
    assert env["packages"]["ai-edge-litert"] and env["cpu"] and "simd" in env
    assert report["settings"]["threads"] == [1, 2] and report["settings"]["runs"] == 4
    table = result.stdout.splitlines()
    assert any(line.startswith("bad.tflite") and "failed: not a valid TFLite file" in line for line in table)
    assert any(line.startswith("unet_int8.tflite") and line.rstrip().endswith("ran") for line in table)
    md = (tmp_path / "bench.md").read_text()
    assert "| `unet_int8.tflite` | tflite | int8 |" in md and "## sigmoid.tflite" in md


def test_benchmark_bad_usage(run_cli, tmp_path):
    assert_one_line_error(run_cli("benchmark", "x.tflite", "--threads", "0"), "--threads '0'")
    assert_one_line_error(run_cli("benchmark", "x.tflite", "--arm", "cortex-x1", "--json", "b.json"), "cortex-x1")
    assert run_cli("benchmark", "x.tflite", "--threads", "a").returncode == 2
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow
def test_validate_passes_and_fails_gates(files, run_cli, tmp_path):
    # Our float ONNX against our float TFLite: the same function, a passing gate.
    ok = run_cli("validate", str(files / "unet_float32.onnx"), "--reference", str(files / "unet_float32.tflite"),
                 "--samples", "12", "--fail-below", "agreement=0.99,miou_delta=-0.01,class_iou_delta=-0.02",
                 "--json", "ok.json", "--junit", "ok.xml")
    assert ok.returncode == 0, ok.stderr
    assert "| pixel agreement (argmax) |" in ok.stdout and ": pass" in ok.stdout
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["passed"] and [g["metric"] for g in report["gates"]] == ["agreement", "miou_delta", "class_iou_delta"]
    m = report["metrics"]
    assert m["agreement"] > 0.99 and abs(m["miou_delta"]) < 0.01 and m["max_abs_diff"] < 1e-2
    assert report["data"]["samples"] == 12 and report["data"]["split"] == "held-out" and report["data"]["masks"]
    assert set(report["per_class_iou"]) == {"pet", "background", "border"}
    assert report["candidate"]["input_contract"]["source"] == "ours"
    assert report["reference"]["input_contract"]["source"] == "metadata"
    suite = ET.parse(tmp_path / "ok.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "0"

    # A file converted from other weights, gated from a TOML file kept in the repository: exit 1, named.
    (tmp_path / "gate.toml").write_text("[fail_below]\nagreement = 0.99\nmiou_delta = -0.5\n")
    bad = run_cli("validate", str(files / "other_float32.tflite"), "--reference", str(files / "foreign_float32.tflite"),
                  "--samples", "8", "--gate", "gate.toml", "--json", "bad.json", "--junit", "bad.xml")
    assert bad.returncode == 1, bad.stderr
    fails = [line for line in bad.stdout.splitlines() if "FAIL " in line and " = " in line]
    assert len(fails) == 1 and fails[0].startswith("- FAIL agreement = ") and "below the gate 0.99" in fails[0]
    assert_one_line_error(bad, "1 gate(s) failed: agreement")
    report = json.loads((tmp_path / "bad.json").read_text())
    assert not report["passed"] and report["gate_source"] == "gate.toml"
    assert [g["passed"] for g in report["gates"]] == [False, True]
    cases = ET.parse(tmp_path / "bad.xml").getroot().find("testsuite").findall("testcase")
    assert [c.find("failure") is not None for c in cases] == [True, False]
    # The candidate declares nothing: 0..255 pixels assumed, and said so.
    assert report["candidate"]["input_contract"]["source"] == "default"
    assert "assumed" in report["candidate"]["input_contract"]["description"]


@pytest.mark.slow
def test_validate_sigmoid_head_two_outputs_and_plain_images(files, run_cli, tmp_path):
    # A 1-channel sigmoid head on 0..1 input: the TFLite declares it (metadata), the ONNX needs --mean/--std.
    sig = run_cli("validate", str(files / "sigmoid.onnx"), "--reference", str(files / "sigmoid.tflite"),
                  "--mean", "0", "--std", "255", "--samples", "6", "--fail-below", "agreement=0.999", "--json", "s.json")
    assert sig.returncode == 0, sig.stderr + sig.stdout
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["metrics"]["agreement_rule"] == "threshold 0.5" and report["metrics"]["agreement"] >= 0.999
    assert report["candidate"]["input_contract"]["source"] == "options"
    assert report["reference"]["input_contract"]["source"] == "metadata"
    assert report["labels"] == ["background", "foreground"] and report["metrics"]["max_abs_diff"] < 1e-4
    assert "(pixels - 0) / 255, from --mean/--std" in sig.stdout

    # Two outputs: the 32x32 one is the mask output, and it is the reference's function.
    two = run_cli("validate", str(files / "two_outputs.tflite"), "--reference", str(files / "foreign_float32.tflite"),
                  "--samples", "6", "--fail-below", "agreement=0.999", "--json", "t.json")
    assert two.returncode == 0, two.stderr
    head = json.loads((tmp_path / "t.json").read_text())["candidate"]["head"]
    assert head["size"] == [SIZE, SIZE] and head["channels"] == 3

    # A folder of plain images: agreement only; a mask metric as a gate is bad usage.
    for i in range(12):
        write_png(tmp_path / "photos" / f"p{i:02d}.png", np.random.default_rng(i).integers(0, 256, (40, 48, 3),
                                                                                            dtype=np.uint8))
    plain = run_cli("validate", str(files / "foreign.onnx"), "--reference", str(files / "foreign_float32.tflite"),
                    "--data", "photos", "--fail-below", "agreement=0.99", "--json", "p.json")
    assert plain.returncode == 0, plain.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["data"]["masks"] is False and report["data"]["images_in_folder"] == 12
    assert 1 <= report["data"]["samples"] < 12 and "miou" not in report["metrics"] and not report["per_class_iou"]
    assert_one_line_error(run_cli("validate", str(files / "foreign.onnx"), "--reference",
                                  str(files / "foreign_float32.tflite"), "--data", "photos", "--fail-below",
                                  "miou_delta=-0.01", "--json", "p2.json"), "miou_delta needs ground-truth masks")
    assert not (tmp_path / "p2.json").exists()


@pytest.mark.slow
def test_validate_against_keras_weights_with_the_models_targets(files, run_cli, tmp_path):
    result = run_cli("validate", str(files / "unet_float32.tflite"), "--reference", str(files / "unet.weights.h5"),
                     "--model", "unet", "--samples", "6", "--json", "k.json")
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads((tmp_path / "k.json").read_text())
    from exporter.policy import targets_for

    t = targets_for("unet")
    assert {g["metric"]: g["threshold"] for g in report["gates"]} == {
        "agreement": t.min_agreement, "miou_delta": -t.max_miou_drop, "class_iou_delta": -t.max_class_iou_drop}
    assert report["reference"]["format"] == "keras" and report["metrics"]["agreement"] > 0.999
    assert "unet's int8 targets" in report["gate_source"]


@pytest.mark.slow
def test_validate_bad_input_is_one_line_exit_2_and_writes_nothing(files, run_cli, tmp_path):
    ref = str(files / "foreign_float32.tflite")
    (tmp_path / "broken.toml").write_text("[fail_below\nagreement = 0.99\n")
    cases = [
        (["missing.tflite", "--reference", ref], "missing.tflite: file not found"),
        ([str(files / "bad.tflite"), "--reference", ref], "not a valid TFLite file"),
        ([str(files / "small16.tflite"), "--reference", ref], "16x16"),
        ([str(files / "sigmoid.tflite"), "--reference", ref], "output channel(s)"),
        ([ref, "--reference", ref, "--fail-below", "speed=2"], "unknown gate metric 'speed'"),
        ([ref, "--reference", ref, "--gate", "broken.toml"], "broken.toml: not valid TOML"),
        ([ref, "--reference", str(files / "unet.weights.h5")], "needs --model"),
    ]
    for args, needle in cases:
        result = run_cli("validate", *args, "--samples", "2", "--json", "v.json", "--junit", "v.xml")
        assert result.returncode == 2, (args, result.stderr)
        assert_one_line_error(result, needle)
        assert not (tmp_path / "v.json").exists() and not (tmp_path / "v.xml").exists()
