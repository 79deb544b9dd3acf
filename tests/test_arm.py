"""ARM cost under QEMU user-mode emulation (exporter/arm): deterministic instruction counts of the
aarch64 LiteRT kernels. Needs `make arm-env`; without it these tests skip, saying why."""

import numpy as np
import pytest

from exporter.arm import env as arm_env
from exporter.errors import ExporterError

REASON = arm_env.check()
needs_arm = pytest.mark.skipif(REASON is not None, reason=REASON or "")
SIZE = 32


def build_cnn():
    """A small conv net (~1.2 M multiply-adds at 32x32), batch 1, with fixed weights."""
    from exporter.keras import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    x = keras.layers.Conv2D(4, 1)(x)
    return keras.Model(inputs, x)


def pixels(seed, count):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (1, SIZE, SIZE, 3)).astype(np.float32) for _ in range(count)]


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    """{"float32": path, "int8": path}: the CNN as float32 and full-integer int8 TFLite files."""
    from exporter.keras import tf

    model = build_cnn()
    folder = tmp_path_factory.mktemp("arm")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (folder / "cnn_float32.tflite").write_bytes(converter.convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([p] for p in pixels(0, 16))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (folder / "cnn_int8.tflite").write_bytes(converter.convert())
    return {"float32": folder / "cnn_float32.tflite", "int8": folder / "cnn_int8.tflite"}


def raw_inputs(path, images):
    """The images as the file's raw input tensor (int8 quantised with the file's own parameters)."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(path)).get_input_details()[0]
    if detail["dtype"] == np.float32:
        return images
    scale, zero = detail["quantization"]
    return [np.clip(np.round(p / scale + zero), -128, 127).astype(np.int8) for p in images]


@pytest.fixture(scope="module")
def measured(cnn_files):
    """measured(kind, core) -> ArmCost of that file on two held-out images, computed once."""
    from exporter.arm.runner import arm_cost

    done = {}

    def measure(kind, core):
        if (kind, core) not in done:
            done[kind, core] = arm_cost(cnn_files[kind], raw_inputs(cnn_files[kind], pixels(7, 2)), core)
        return done[kind, core]

    return measure


@needs_arm
def test_same_file_twice_gives_identical_counts(cnn_files, measured):
    from exporter.arm.runner import arm_cost

    first = measured("int8", "cortex-a76")
    again = arm_cost(cnn_files["int8"], raw_inputs(cnn_files["int8"], pixels(7, 2)), "cortex-a76")
    assert again.instructions == first.instructions
    assert again.per_sample == first.per_sample
    assert again.warmup_instructions == first.warmup_instructions
    assert (again.dot_instructions, again.fma_instructions) == (first.dot_instructions, first.fma_instructions)
    assert len(first.outputs) == 2
    for a, b in zip(again.outputs, first.outputs, strict=True):
        np.testing.assert_array_equal(a, b)


@needs_arm
@pytest.mark.parametrize("core", arm_env.CORES)
def test_int8_runs_dot_product_kernels_and_costs_fewer_instructions(measured, core):
    f32 = measured("float32", core)
    i8 = measured("int8", core)
    print(f"\n{core}: float32 {f32.instructions} instr ({f32.fma_instructions} FMLA), "
          f"int8 {i8.instructions} instr ({i8.dot_instructions} SDOT), ratio {f32.instructions / i8.instructions:.2f}")
    assert i8.dot_instructions > 0 and i8.fma_instructions == 0
    assert f32.fma_instructions > 0 and f32.dot_instructions == 0
    assert i8.instructions < f32.instructions
    # Each FMLA .4s does 4 of the float file's multiply-adds, each SDOT 16 of the int8 file's.
    assert f32.fma_instructions * 4 >= 1_000_000
    assert i8.dot_instructions * 16 >= 1_000_000


@needs_arm
def test_cores_pick_different_kernels(measured):
    """The A55's /proc/cpuinfo steers XNNPACK to its in-order kernels: other counts than the A76's."""
    assert measured("float32", "cortex-a55").instructions != measured("float32", "cortex-a76").instructions


@needs_arm
@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_arm_outputs_equal_host_outputs(cnn_files, measured, kind):
    from ai_edge_litert.interpreter import Interpreter

    arm = measured(kind, "cortex-a76")
    host = Interpreter(model_path=str(cnn_files[kind]), num_threads=1)
    host.allocate_tensors()
    assert len(arm.outputs) == 2
    for raw, on_arm in zip(raw_inputs(cnn_files[kind], pixels(7, 2)), arm.outputs, strict=True):
        host.set_tensor(host.get_input_details()[0]["index"], raw)
        host.invoke()
        on_host = host.get_tensor(host.get_output_details()[0]["index"])
        assert on_arm.dtype == on_host.dtype and on_arm.shape == on_host.shape
        if kind == "int8":
            difference = np.abs(on_arm.astype(np.int32) - on_host.astype(np.int32))
            assert difference.max() <= 1 and np.mean(difference == 0) >= 0.99, difference.max()
        else:
            np.testing.assert_allclose(on_arm, on_host, rtol=1e-4, atol=1e-4)


@needs_arm
def test_guest_failure_is_one_line_naming_the_cause(cnn_files):
    from exporter.arm.runner import arm_cost

    with pytest.raises(ExporterError) as failure:
        arm_cost(cnn_files["int8"], [np.zeros((1, SIZE, SIZE, 3), np.float32)], "cortex-a76")
    message = str(failure.value)
    assert "\n" not in message and "failed" in message and "wants int8[1, 32, 32, 3]" in message, message


def test_missing_environment_is_one_line(tmp_path, monkeypatch):
    from exporter.arm.runner import arm_cost

    model = tmp_path / "model.tflite"
    model.write_bytes(b"not read before the environment is checked")
    monkeypatch.setenv("SEGEXPORT_ARM_CACHE", str(tmp_path / "empty"))
    reason = arm_env.check()
    assert reason and "\n" not in reason and "make arm-env" in reason
    with pytest.raises(ExporterError, match="ARM emulation not available"):
        arm_cost(model, [np.zeros((1, SIZE, SIZE, 3), np.int8)], "cortex-a76")
    with pytest.raises(ExporterError, match="unknown ARM core"):
        arm_cost(model, [np.zeros((1, SIZE, SIZE, 3), np.int8)], "cortex-a53")


def test_convert_stage_without_the_environment_says_why_and_measures_nothing(tmp_path, monkeypatch):
    from exporter.arm.cost_stage import measure_arm
    from exporter.report import recommended_lines

    monkeypatch.setenv("SEGEXPORT_ARM_CACHE", str(tmp_path / "empty"))
    artifacts = [{"file": "m_float32.tflite", "format": "tflite", "precision": "float32", "bytes": 1}]
    per_file, summary = measure_arm(artifacts, tmp_path, None, arm_env.CORES)
    assert set(summary) == {"arm_status"} and "make arm-env" in summary["arm_status"]
    assert per_file == {}
    assert recommended_lines(summary) == [f"- ARM: not measured ({summary['arm_status']})."]
    assert measure_arm(artifacts, tmp_path, None, ()) == ({}, {"arm_status": "not requested (--arm none, --no-arm or --no-bench)"})


def test_arm_option_parsing():
    from exporter.arm.cost_stage import parse_cores

    assert parse_cores("cortex-a76,cortex-a55") == ("cortex-a76", "cortex-a55")
    assert parse_cores(" cortex-a55 ") == ("cortex-a55",)
    assert parse_cores("none") == parse_cores("") == ()
    with pytest.raises(ExporterError, match="--arm 'cortex-a53'"):
        parse_cores("cortex-a76,cortex-a53")


@needs_arm
def test_convert_stage_measures_every_tflite_file_without_touching_the_records(cnn_files, measured):
    """measure_arm returns per-file entries (the stage's records are not written into) whose counts
    are the runner's, with the float32 file's count over each file's as the ratio."""
    import copy

    from exporter.arm.cost_stage import measure_arm
    from calibration.dataset import SegData

    images = np.concatenate(pixels(7, 2)).astype(np.uint8)
    val = SegData(images=images, masks=np.zeros(images.shape[:3], np.uint8), labels=("a", "b", "c", "d"),
                  ids=["0", "1"], source="test")
    artifacts = [{"file": path.name, "format": "tflite", "precision": kind, "bytes": path.stat().st_size,
                  "float_ops": []} for kind, path in cnn_files.items()]
    before = copy.deepcopy(artifacts)
    per_file, summary = measure_arm(artifacts, cnn_files["int8"].parent, val, ("cortex-a76",))
    assert artifacts == before and "arm_run" in summary
    float32, int8 = (per_file[cnn_files[k].name]["cortex-a76"] for k in ("float32", "int8"))
    assert float32["ratio_to_float32"] == 1.0
    assert int8["ratio_to_float32"] == round(float32["instructions"] / int8["instructions"], 4) > 1
    # The runner's count for the same file; other pixels move it by a few hundred instructions at most.
    assert abs(int8["instructions"] - measured("int8", "cortex-a76").instructions) < 1e-3 * int8["instructions"]
