"""The selfie segmenter (the seed's "modified ViT"): faithful to the seed, batch-agnostic, exportable.

The seed's own definition is rebuilt here, only as a reference, with its raw `tf.reshape` /
`tf.transpose` / `tf.image.resize` ops at its batch size of 1 and 256x256 input; the registry's
model must compute the same thing with Keras layers, at any batch size.

The contracts every architecture keeps (softmax output, batch independence, flat graph of at most
4-D tensors, float32/float16/int8 files, metadata, MediaPipe, QAT wrap) are in
test_registry_contracts.py; this file keeps what is the selfie model's own.
"""

import numpy as np
import pytest

from architectures import build, create_model, get_spec, resolve_config
from architectures.selfie import LABELS, patch_fold, patch_unfold
from exporter.keras import keras, tf

SEED_PARAMS = 4_068_428  # the seed's build_model((256, 256, 3), 6), counted from its definition
SMALL = 128  # test size: 1/8 map 16x16 (4x4 patches), 1/16 map 8x8 (2x2 patches)


# --- the seed's rearrangement blocks, raw ops, batch 1 (reference only) ----------------------

def seed_reshape_transpose(x, shape, perm=(0, 2, 1, 3)):
    return tf.transpose(tf.reshape(x, shape), perm=perm)


def seed_transpose_reshape(x, shape, perm=(0, 2, 1, 3)):
    return tf.reshape(tf.transpose(x, perm=perm), shape)


def seed_unfold_stage3(x):  # x2: [1, 32, 32, 128] at 256x256
    return seed_reshape_transpose(seed_reshape_transpose(x, (8, 4, 8, 512)), (1, 64, 16, 128))


def seed_fold_stage3(x):
    return seed_transpose_reshape(seed_transpose_reshape(x, (8, 8, 4, 512)), (1, 32, 32, 128))


def seed_unfold_stage4(x):  # x4: [1, 16, 16, 192] at 256x256
    return seed_reshape_transpose(seed_reshape_transpose(x, (4, 4, 4, 768)), (1, 16, 16, 192))


def seed_fold_stage4(x):
    return seed_transpose_reshape(seed_transpose_reshape(x, (4, 4, 4, 768)), (1, 16, 16, 192))


def numpy_unfold(x, patch=4):
    """The layout in closed form: out[b, 4*h2 + w2, gw*h1 + w1, c] = x[b, 4*h1 + h2, 4*w1 + w2, c]."""
    b, h, w, c = x.shape
    gh, gw = h // patch, w // patch
    y = x.reshape(b, gh, patch, gw, patch, c).transpose(0, 2, 4, 1, 3, 5)
    return y.reshape(b, patch * patch, gh * gw, c)


def keras_rearrange(fn, shape, grid, channels):
    inp = keras.Input(shape)
    return keras.Model(inp, fn(inp, grid, channels, "t"))


@pytest.mark.parametrize(
    "hw, channels, seed_unfold, seed_fold",
    [((32, 32), 128, seed_unfold_stage3, seed_fold_stage3), ((16, 16), 192, seed_unfold_stage4, seed_fold_stage4)],
    ids=["stage3_32x32", "stage4_16x16"],
)
def test_rearrangement_matches_seed(hw, channels, seed_unfold, seed_fold):
    h, w = hw
    grid = (h // 4, w // 4)
    unfold = keras_rearrange(patch_unfold, (h, w, channels), grid, channels)
    patches = grid[0] * grid[1]
    fold = keras_rearrange(patch_fold, (16, patches, channels), grid, channels)
    rng = np.random.default_rng(0)

    x = rng.normal(size=(1, h, w, channels)).astype(np.float32)
    ref = seed_unfold(tf.constant(x)).numpy()
    assert ref.shape == (1, 16, patches, channels)  # [1, 16, 64, 128] and [1, 16, 16, 192]
    np.testing.assert_array_equal(unfold(x).numpy(), ref)
    np.testing.assert_array_equal(ref, numpy_unfold(x))

    y = rng.normal(size=(1, 16, patches, channels)).astype(np.float32)
    np.testing.assert_array_equal(fold(y).numpy(), seed_fold(tf.constant(y)).numpy())
    np.testing.assert_array_equal(fold(unfold(x)).numpy(), x)

    # Any batch: each sample gets exactly the seed's batch-1 permutation.
    xb = rng.normal(size=(3, h, w, channels)).astype(np.float32)
    out = unfold(xb).numpy()
    for i in range(3):
        np.testing.assert_array_equal(out[i : i + 1], seed_unfold(tf.constant(xb[i : i + 1])).numpy())


@pytest.mark.parametrize("hw", [(16, 16), (8, 8), (8, 16), (4, 4)])
def test_rearrangement_at_other_sizes(hw):
    h, w = hw
    grid = (h // 4, w // 4)
    unfold = keras_rearrange(patch_unfold, (h, w, 8), grid, 8)
    fold = keras_rearrange(patch_fold, (16, grid[0] * grid[1], 8), grid, 8)
    x = np.random.default_rng(1).normal(size=(2, h, w, 8)).astype(np.float32)
    np.testing.assert_array_equal(unfold(x).numpy(), numpy_unfold(x))
    np.testing.assert_array_equal(fold(unfold(x)).numpy(), x)


# --- the whole seed network, raw ops at batch 1, 256x256 (reference only) ---------------------

def seed_reference(classes=6):
    """The seed's build_model((256, 256, 3), classes), debug prints dropped, our layer names, and
    our x / 255 normalisation in front (the seed normalised outside the graph)."""
    L = keras.layers

    def conv_block(x, expand, stride, out, name):
        x = L.Conv2D(expand, 1, padding="same", activation="relu", name=f"{name}_expand")(x)
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu", name=f"{name}_dw")(x)
        return L.Conv2D(out, 1, padding="same", name=f"{name}_project")(x)

    def large_block(prior, mul, name):
        b21 = tf.multiply(prior, prior)
        b21 = tf.add(b21, b21)
        b22 = L.Conv2D(1, 1, name=f"{name}_score")(b21)
        n = 64 if mul == 128 else 16
        b22 = tf.reshape(b22, (tf.shape(b22)[0], 16, 1, n))
        b22 = L.Softmax(axis=-1)(b22)
        b22 = tf.reshape(b22, (tf.shape(b22)[0], 16, n, 1))
        b23 = L.Conv2D(mul, 1, name=f"{name}_value")(b21)
        b23 = L.Multiply()([b22, b23])
        b23 = tf.reduce_sum(b23, axis=2, keepdims=True)
        b24 = L.Conv2D(mul, 1, activation="relu", name=f"{name}_gate_conv")(b21)
        b24 = L.Multiply()([b23, b24])
        b24 = L.Conv2D(mul, 1, name=f"{name}_proj")(b24)
        b24 = L.Add()([b24, prior])
        b25 = L.Conv2D(mul * 2, 1, padding="same", name=f"{name}_ffn_expand")(b21)
        b25 = L.Conv2D(mul, 1, padding="same", name=f"{name}_ffn_project")(b25)
        return L.Add()([b25, b24])

    def dw_pw(x, k, f, name, act=None):
        x = L.DepthwiseConv2D(k, padding="same", activation=act, name=f"{name}_dw")(x)
        return L.Conv2D(f, 1, padding="same" if act else "valid", activation=act, name=f"{name}_pw")(x)

    def resize(x, size, method):
        return tf.image.resize(x, size=(size, size), method=method)

    inputs = keras.Input((256, 256, 3), batch_size=1)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem_conv")(inputs / 255.0)
    x1 = conv_block(x, 96, 1, 64, "block1a")
    x1 = conv_block(x1, 384, 2, 128, "block1b")
    output1 = L.Add()([conv_block(x1, 768, 1, 128, "block1c"), x1])
    x2 = conv_block(output1, 768, 2, 256, "block2a")
    x2 = L.Conv2D(128, 3, padding="same", activation="relu", name="block2_conv3x3")(x2)
    x2 = L.Conv2D(128, 1, padding="same", activation="relu", name="block2_conv1x1")(x2)
    x3 = seed_unfold_stage3(x2)
    x3 = large_block(large_block(x3, 128, "stage3_attn0"), 128, "stage3_attn1")
    x3 = seed_fold_stage3(x3)
    output3 = L.Conv2D(256, 1, padding="same", name="output3")(x3)
    x4 = conv_block(output3, 1536, 2, 384, "block4a")
    x4 = L.Conv2D(192, 3, padding="same", activation="relu", name="block4_conv3x3")(x4)
    x4 = L.Conv2D(192, 1, padding="same", activation="relu", name="block4_conv1x1")(x4)
    x4 = seed_unfold_stage4(x4)
    for i in range(4):
        x4 = large_block(x4, 192, f"stage4_attn{i}")
    x4 = seed_fold_stage4(x4)
    x4 = L.Conv2D(384, 1, padding="same", name="block4_expand_out")(x4)
    x4 = L.DepthwiseConv2D(1, padding="same", name="block4_dw_out")(x4)
    output4 = L.Conv2D(64, 1, name="output4")(x4)
    nearest, bilinear = tf.image.ResizeMethod.NEAREST_NEIGHBOR, tf.image.ResizeMethod.BILINEAR
    output5 = L.Add()([dw_pw(output3, 1, 64, "output5_lateral"), resize(output4, 32, nearest)])
    output6 = L.Add()([dw_pw(output1, 1, 64, "output6_lateral"), resize(output5, 64, nearest)])
    output7 = L.Add()([dw_pw(x, 1, 64, "output7_lateral"), resize(output6, 128, nearest)])
    output8 = L.Add()([dw_pw(output7, 3, 64, "block8"), resize(dw_pw(output6, 3, 64, "block8_skip"), 128, bilinear)])
    output9 = L.Add()([output8, resize(dw_pw(output5, 3, 64, "block9_skip"), 128, bilinear)])
    output10 = L.Add()([output9, resize(dw_pw(output4, 3, 64, "block10_skip"), 128, bilinear)])
    x11 = output10
    for i in range(5):
        x11 = dw_pw(x11, 3, 32, f"head{i}", act="relu")
    x11 = L.Conv2DTranspose(32, 2, strides=2, padding="same", name="head_upsample")(x11)
    scores = L.Conv2D(classes, 1, padding="same", activation="softmax", name="scores")(x11)
    return keras.Model(inputs, [output3, output4, scores])


def lively_weights(model, seed=0):
    """Random weights that keep activations near unit scale (Keras' defaults shrink them to ~1e-8
    by the attention stages, which would make any comparison there vacuous)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel = weights[0]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            fan_in = kernel.shape[0] * kernel.shape[1]
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            fan_in = kernel.shape[-1]
        else:
            fan_in = int(np.prod(kernel.shape[:-1]))
        new = [rng.normal(0, np.sqrt(1.0 / fan_in), kernel.shape)]
        new += [rng.normal(0, 0.05, w.shape) for w in weights[1:]]
        layer.set_weights([w.astype(np.float32) for w in new])


def weighted(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


@pytest.fixture(scope="module")
def small_model():
    model = create_model("selfie", input_size=SMALL)
    lively_weights(model, seed=3)
    return model


@pytest.mark.slow
def test_whole_network_matches_seed_at_256(small_model):
    ours = create_model("selfie")
    ref = seed_reference()
    assert ours.count_params() == ref.count_params() == SEED_PARAMS
    assert sorted(weighted(ours)) == sorted(weighted(ref))
    # The weights do not depend on the input size: the 128x128 model's load into the 256x256 one.
    ours.set_weights(small_model.get_weights())
    for name, layer in weighted(ref).items():
        layer.set_weights(ours.get_layer(name).get_weights())

    probe = keras.Model(ours.input, [ours.get_layer(n).output for n in ("output3", "output4")] + [ours.output])
    x = np.random.default_rng(2).uniform(0, 255, (1, 256, 256, 3)).astype(np.float32)
    for got, want, scale in zip(probe(x), ref(x), (0.1, 0.1, 1e-3)):
        got, want = got.numpy(), want.numpy()
        assert np.std(want) > scale, np.std(want)  # the comparison is not vacuous
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


# --- the registry's model ----------------------------------------------------------------------

def test_spec():
    spec = get_spec("selfie")
    assert spec.labels == LABELS == ("outer", "hair", "face", "skin", "clothes", "accessories")
    assert spec.output == "softmax" and spec.input_size == (256, 256)
    assert spec.min_input == spec.input_multiple == 64
    create_model("selfie", input_size=spec.min_input)  # the smallest size builds
    with pytest.raises(ValueError, match="multiple of 64"):
        create_model("selfie", input_size=96)


@pytest.mark.slow
def test_tfmot_registry_lacks_only_multiply_reducesum_and_rescaling():
    """tfmot's default 8-bit registry covers every layer but Multiply (the squaring and the two
    gates of each attention block), Rescaling (the input normalisation) and ReduceSum: those are
    the layers `exporter.qat.LAYER_CONFIGS` must give a config (test_qat wraps the whole graph)."""
    import tensorflow_model_optimization as tfmot

    from exporter.qat import LAYER_CONFIGS

    model = create_model("selfie", input_size=64)
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    unsupported = {}
    for layer in model.layers[1:]:
        if not registry.supports(layer):
            unsupported.setdefault(type(layer).__name__, []).append(layer.name)
    assert sorted(unsupported) == ["Multiply", "ReduceSum", "Rescaling"]
    assert len(unsupported["Multiply"]) == 3 * 6 and len(unsupported["ReduceSum"]) == 6
    assert all(cls in LAYER_CONFIGS for cls in unsupported)


@pytest.mark.slow
def test_int8_tflite_leaves_only_softmax_to_reference_kernels(small_model):
    """In the full-integer file every op but SOFTMAX runs inside XNNPACK (LiteRT 2.3's XNNPACK has
    no int8 SOFTMAX): the squaring, weighting, SUM and gating MULs around the attention blocks,
    the rearranging RESHAPE/TRANSPOSE pairs and the decoder's nearest upsamplings are delegated;
    only the six small attention softmaxes, the output softmax and the uint8 <-> int8 QUANTIZE at
    the input and output stay on LiteRT's own kernels, so the graph splits into 7 partitions."""
    from ai_edge_litert.interpreter import Interpreter

    from exporter.runtimes import delegation

    export = create_model("selfie", input_size=SMALL, batch_size=1)
    export.set_weights(small_model.get_weights())
    fn = tf.function(lambda x: export(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, SMALL, SMALL, 3], tf.float32))
    calib = np.random.default_rng(8).uniform(0, 255, (8, 1, SMALL, SMALL, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    interpreter = Interpreter(model_content=converter.convert(), num_threads=1)
    interpreter.allocate_tensors()
    split = delegation(interpreter)
    assert split == {"partitions": 7, "undelegated": {"QUANTIZE": 2, "SOFTMAX": 7}}, split


@pytest.mark.slow
def test_fresh_weights_carry_signal_and_train_stably():
    """The registry's initialisers (see `architectures.selfie._init`): with Keras' defaults the
    attention stages saw features ~1e-6 and every gradient above the decoder underflowed; with
    plain He initialisation the squared features overflowed after one Adam step."""
    from calibration.synthetic import synthetic_splits
    from exporter.train import compile_for_training

    spec = get_spec("selfie")
    size = spec.min_input
    model = create_model("selfie", input_size=size, num_classes=3)
    data = synthetic_splits(16, 1, (size, size), 3).train
    x, y = data.images.astype(np.float32), data.masks.astype(np.int32)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("block2_conv1x1", "output3", "output4")])
    for name, feature in zip(("block2_conv1x1", "output3", "output4"), probe(x[:4])):
        assert 1e-3 < float(np.std(feature)) < 1e2, (name, float(np.std(feature)))  # glorot: ~1e-9
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y[:4], model(x[:4], training=True))
    stem_grad = tape.gradient(loss, model.get_layer("stem_conv").kernel)
    assert float(tf.norm(stem_grad)) > 1e-4
    compile_for_training(model, spec.output, spec.learning_rate)
    losses = [float(model.train_on_batch(x[i % 2 * 8:][:8], y[i % 2 * 8:][:8])) for i in range(12)]
    assert np.all(np.isfinite(losses)), losses
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses


def test_export_graph_fuses_the_head_and_folds_the_doubling():
    """Exported, the head's 2x2 stride-2 deconv and the 1x1 scores conv are one 1x1 conv to
    4 x classes channels and DEPTH_TO_SPACE (no TRANSPOSE_CONV, no 32-channel map at full size),
    and each attention block's s = x^2 + x^2 ADD is folded into the four convs that read s; the
    function is the training graph's, with every weight non-zero."""
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import op_histogram, to_tflite

    config = resolve_config("selfie", input_size=SMALL)
    model = build(config)
    # Fresh weights leave every attention branch at zero (its output convs start at zero), which
    # would hide a wrong fold of the x^2 + x^2 ADD: give those convs values.
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.name.startswith("stage") and layer.name.endswith(("_proj", "_ffn_project")):
            layer.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in layer.get_weights()])
    fixed = export_model(model, config)
    x = rng.uniform(0, 255, (1, SMALL, SMALL, 3)).astype(np.float32)
    want, got = model(x, training=False).numpy(), fixed(x).numpy()
    assert want.std() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-5)
    without_attention = model_at_batch_1(model, config)
    for layer in without_attention.layers:
        if layer.name.endswith(("_proj", "_ffn_project")):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    assert np.abs(without_attention(x).numpy() - want).max() > 1e-3  # the attention branches count
    ops = op_histogram(to_tflite(fixed, config, "float32"))
    assert "TRANSPOSE_CONV" not in ops and ops.get("DEPTH_TO_SPACE") == 1, ops
    assert ops["ADD"] == op_histogram(to_tflite(model_at_batch_1(model, config), config, "float32"))["ADD"] - 6
    assert fixed.get_layer("scores_phases").kernel.shape == (1, 1, 32, 4 * config.num_classes)


def model_at_batch_1(model, config):
    import dataclasses

    plain = build(dataclasses.replace(config, batch_size=1))
    plain.set_weights(model.get_weights())
    return plain
