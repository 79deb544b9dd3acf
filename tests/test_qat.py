"""Quantisation-aware training and per-layer quantisation error, at 64x64 on a small UNet.

The tests on the trained UNet (fixture `trained`: two epochs on 120 scenes) are marked slow; every
architecture's QAT wrap is in test_registry_contracts.py.
"""

import numpy as np
import pytest

from architectures import build, get_spec, resolve_config
from calibration.synthetic import synthetic_splits

SIZE = 64


@pytest.fixture(scope="module")
def trained():
    """A UNet trained for 2 epochs on synthetic scenes (float, dynamic batch)."""
    from exporter.keras import tf
    from exporter.train import _dataset, compile_for_training

    config = resolve_config("unet", input_size=SIZE, num_classes=3)
    spec = get_spec("unet")
    splits = synthetic_splits(120, 24, (SIZE, SIZE), 3)
    tf.random.set_seed(0)
    model = build(config)
    compile_for_training(model, spec.output, spec.learning_rate)
    model.fit(_dataset(splits, 16, 0), epochs=2, verbose=0)
    return config, spec, splits, model


def _randomise_batchnorm(model, seed=0):
    from exporter.keras import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.3, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)])


@pytest.mark.parametrize("deconv", ["transpose", "subpixel"])
def test_batchnorm_folds_exactly_into_transposed_convs(deconv):
    from exporter.keras import keras
    from exporter.qat import fold_batchnorm

    model = build(resolve_config("unet", input_size=SIZE, num_classes=3, deconv=deconv))
    _randomise_batchnorm(model)
    folded, record = fold_batchnorm(model)
    assert [f["bn"] for f in record] == ["up0_bn", "up1_bn", "up2_bn"]
    assert [f["into"] for f in record] == ["up0_deconv", "up1_deconv", "up2_deconv"]
    names = {layer.name for layer in folded.layers}
    assert not names & {"up0_bn", "up1_bn", "up2_bn"}
    # The encoder's BNs follow Conv2D/DepthwiseConv2D: tfmot handles those, they stay.
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers) == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) - 3
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = model(pixels, training=False).numpy()
    got = folded(pixels, training=False).numpy()
    assert np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()


@pytest.mark.slow
def test_batchnorm_fold_on_trained_model_is_exact(trained):
    from exporter.qat import fold_batchnorm

    _, _, splits, model = trained
    folded, record = fold_batchnorm(model)
    assert len(record) == 3
    pixels = splits.val.images[:4].astype(np.float32)
    diff = np.abs(folded(pixels, training=False).numpy() - model(pixels, training=False).numpy()).max()
    assert diff < 1e-4, diff


@pytest.fixture(scope="module")
def qat(trained):
    """The QAT model of the trained UNet, before fine-tuning (qat_run fine-tunes it)."""
    from exporter.qat import qat_model

    config, _, _, model = trained
    return qat_model(model, config)


@pytest.fixture(scope="module")
def qat_run(trained, qat):
    from exporter.convert.tflite import float_ops
    from exporter.errors import ConversionError
    from exporter.qat import fine_tune, to_int8_tflite

    config, spec, splits, _ = trained
    with pytest.raises(ConversionError, match="at least one step"):
        to_int8_tflite(qat, config, splits.train.images[:8])  # input quantizer still at [0, 0]
    losses = fine_tune(qat, splits, spec, epochs=1, learning_rate=1e-4, batch_size=16)
    blob = to_int8_tflite(qat, config, splits.train.images[:32])
    return qat, losses, blob, float_ops(blob)


@pytest.mark.slow
def test_every_layer_is_quantised_or_listed_with_a_reason(trained, qat):
    _, _, _, model = trained
    info = qat.qat_info
    by_name = {r.layer: r for r in info.layers}
    assert set(by_name) == {layer.name for layer in model.layers}
    assert all(r.reason for r in info.layers)
    assert not [r for r in info.layers if r.treatment == "float"]
    unquantised = {r["layer"]: r for r in info.unquantised}
    # Folded BNs and MobileNetV2's zero paddings (range-preserving) are the only ones left.
    assert {name for name in unquantised if name.endswith("_bn")} == {"up0_bn", "up1_bn", "up2_bn"}
    assert all(r["cls"] in ("BatchNormalization", "ZeroPadding2D") for r in unquantised.values())
    assert by_name["normalise"].treatment == "output" and by_name["normalise"].quantizers == 1
    # The folded transposed convs keep their kernel quantizer (tfmot's ReLU transform would drop it).
    assert all(by_name[f"up{i}_deconv"].quantizers >= 1 for i in range(3))
    assert by_name["pixels"].quantised


@pytest.mark.slow
def test_qat_int8_is_full_integer_and_agrees_with_float(trained, qat_run):
    from ai_edge_litert.interpreter import Interpreter

    config, _, splits, model = trained
    qat, losses, blob, floats = qat_run
    assert len(losses) == 1 and np.isfinite(losses[0])
    # Activation ranges started from the float model's, not tfmot's [-6, 6]: a ReLU6 range starts at 0.
    assert qat.qat_info.ranges_calibrated > 0
    relu6 = {w.name.split("/")[-1].split(":")[0]: float(w.numpy())
             for w in qat.get_layer("quant_block_1_expand_relu").weights if w.shape == ()}
    assert relu6["output_min"] == 0.0 and 0.0 < relu6["output_max"] <= 6.0, relu6
    assert floats == []
    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and tuple(inp["shape"]) == (1, SIZE, SIZE, 3)
    assert inp["quantization"] == (1.0, 0)
    assert out["dtype"] == np.uint8 and tuple(out["shape"]) == (1, SIZE, SIZE, 3)
    agree = total = 0
    for image in splits.val.images:
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        pred = np.argmax(interp.get_tensor(out["index"])[0], axis=-1)
        ref = np.argmax(model(image[None].astype(np.float32), training=False).numpy()[0], axis=-1)
        agree += int((pred == ref).sum())
        total += pred.size
    print(f"QAT int8 agreement with float: {agree / total:.4f}")
    assert agree / total >= 0.95, agree / total


@pytest.mark.slow
def test_qat_weights_line_up_with_the_batch1_rebuild(trained, qat_run):
    from exporter.qat import export_qat_model

    config, _, splits, _ = trained
    qat = qat_run[0]
    fixed = export_qat_model(qat, config)
    assert fixed.inputs[0].shape[0] == 1
    pixels = splits.val.images[:1].astype(np.float32)
    np.testing.assert_allclose(fixed(pixels, training=False).numpy(), qat(pixels, training=False).numpy(),
                               atol=1e-4)


@pytest.mark.slow
def test_quant_debug_ranks_layers_and_keeps_chosen_ones_float(trained):
    from exporter.convert.signature import export_model
    from exporter.quant_debug import QuantDebugSession, selective_int8

    config, _, splits, model = trained
    fixed = export_model(model, config)
    session = QuantDebugSession(fixed, config, splits.train.images[:16], splits.val.images[:8])
    stats = session.layer_stats()
    assert len(stats) > 40
    scores = [r["rmse_over_scale"] for r in stats]
    assert all(np.isfinite(s) and s >= 0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert all(r["layer"] and r["op"] and r["scale"] > 0 for r in stats)
    assert "logits" in {layer for r in stats for layer in r["layers"]}
    worst = next(r for r in stats if r["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD"))
    result = selective_int8(fixed, config, None, splits.val, [worst["layer"]], session=session)
    assert not result.full_integer and result.float_ops and not result.not_honoured
    full = session.quantize([])
    assert full.full_integer and full.float_ops == []


@pytest.mark.slow
def test_keep_float_auto_adds_worst_layers_until_the_target_or_the_tries_run_out(trained):
    from exporter.convert.signature import export_model
    from exporter.quant_debug import QuantDebugSession, keep_float_auto

    config, _, splits, model = trained
    fixed = export_model(model, config)
    heldout = splits.val.subset(range(6))
    session = QuantDebugSession(fixed, config, splits.train.images[:16], heldout.images)
    easy = keep_float_auto(fixed, config, None, heldout, max_miou_drop=1.0, session=session)
    assert easy["met"] and easy["keep_float"] == [] and easy["selective"].full_integer
    # An unreachable target: one layer kept float per try, at most max_tries of them.
    hard = keep_float_auto(fixed, config, None, heldout, max_miou_drop=-1.0, max_tries=2, session=session)
    assert not hard["met"] and len(hard["keep_float"]) == 2 and len(hard["trials"]) == 3
    ranked = list(dict.fromkeys(r["layer"] for r in hard["ranking"]))
    assert hard["keep_float"] == [x for x in ranked if x not in hard["skipped"]][:2]
    assert not hard["selective"].full_integer and hard["selective"].float_ops
    # The per-class criterion holds the search back on its own: an easy mIoU target, no class may lose anything.
    strict = keep_float_auto(fixed, config, None, heldout, max_miou_drop=1.0, max_class_drop=-1.0, max_tries=1,
                             session=session)
    assert not strict["met"] and len(strict["keep_float"]) == 1
    lenient = keep_float_auto(fixed, config, None, heldout, max_miou_drop=1.0, max_class_drop=1.0, session=session)
    assert lenient["met"] and lenient["keep_float"] == []
