"""TF1 research/deeplab, as the seed trains it, re-derived from its source for the import tests.

Two things, both written from tensorflow/models (research/deeplab/model.py, core/feature_extractor.py,
core/utils.py; research/slim/nets/mobilenet/mobilenet_v3.py, conv_blocks.py, mobilenet.py), not
from architectures/deeplab.py, so they check the importer against TF1's code rather than against
our own graph:

- `write_checkpoint`: a `model.ckpt-N` with the variable names and shapes that
  `--model_variant=mobilenet_v3_small_seg` and the seed's flags create (tf.compat.v1 variables and
  Saver, as train.py saves), random values, plus what train.py's checkpoints also hold (global_step,
  Adam's slots and beta powers);
- `tf1_logits`: that graph's forward pass in inference mode, op for op as the TF1 code computes it
  (slim's conv/BatchNorm/SAME padding, hard-swish, SE gates relu6(x+3)*0.16667, the image-level
  feature's avg_pool window from image_pooling_crop_size and image_pooling_stride, align-corners
  resizes, the sum-merge decoder), from the checkpoint's values.

research/deeplab itself does not run on TF 2.21 as it is (tf.contrib); a one-off build of its
executed branches with tf_slim created exactly `variables(2)` and matched `tf1_logits` to 2.4e-7
(docs/import-deeplab.md, which also says what is left unproven).
"""

from __future__ import annotations

import numpy as np

SCOPE = "MobilenetV3"
BN_LEAVES = ("gamma", "beta", "moving_mean", "moving_variance")
SLIM_BN_EPSILON = 1e-3  # slim.batch_norm's default (mobilenet_v2_arg_scope sets none)
ASPP_BN_EPSILON = 1e-5  # model.py's batch_norm_params
Q_SIGMOID = 0.16667  # core/utils.py q_sigmoid and mobilenet_v3.py's SE gating_fn
ASPP_FILTERS = 128  # --aspp_convs_filters
IMAGE_POOLING_CROP = (257, 257)  # --image_pooling_crop_size
IMAGE_POOLING_STRIDE = (4, 5)  # --image_pooling_stride
OUTPUT_STRIDE = 32
DECODER_STRIDE = 8


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def v3_small_seg():
    """mobilenet_v3.V3_SMALL with feature_extractor.mobilenet_v3_small_seg's halving of layers
    9..12 (0-based): [(kind, params)], params as slim's op() gets them."""
    hs, relu = "hswish", "relu"
    spec = [("conv", dict(stride=2, n=16, k=3, act=hs)),
            ("block", dict(ef=1, n=16, k=3, s=2, se=True, act=relu)),
            ("block", dict(ef=72 / 16, n=24, k=3, s=2, se=False, act=relu)),
            ("block", dict(ef=88 / 24, n=24, k=3, s=1, se=False, act=relu)),
            ("block", dict(ef=4, n=40, k=5, s=2, se=True, act=hs)),
            ("block", dict(ef=6, n=40, k=5, s=1, se=True, act=hs)),
            ("block", dict(ef=6, n=40, k=5, s=1, se=True, act=hs)),
            ("block", dict(ef=3, n=48, k=5, s=1, se=True, act=hs)),
            ("block", dict(ef=3, n=48, k=5, s=1, se=True, act=hs)),
            ("block", dict(ef=6, n=96, k=5, s=2, se=True, act=hs)),
            ("block", dict(ef=6, n=96, k=5, s=1, se=True, act=hs)),
            ("block", dict(ef=6, n=96, k=5, s=1, se=True, act=hs)),
            ("conv", dict(stride=1, n=576, k=1, act=hs))]
    for layer, expansion in [(9, 144), (10, 288), (11, 288), (12, None)]:
        spec[layer][1]["n"] /= 2
        if expansion is not None:
            spec[layer][1]["ef"] = expansion / spec[layer - 1][1]["n"]
    return spec


def variables(classes: int) -> dict[str, tuple]:
    """Every model variable's name -> shape, in creation order."""
    out: dict[str, tuple] = {}
    depth, convs, blocks, tap = 3, 0, 0, None
    for layer, (kind, p) in enumerate(v3_small_seg(), start=1):
        n = _make_divisible(p["n"])
        if kind == "conv":
            scope = f"{SCOPE}/Conv" + (f"_{convs}" if convs else "")
            convs += 1
            out[f"{scope}/weights"] = (p["k"], p["k"], depth, n)
            out.update({f"{scope}/BatchNorm/{leaf}": (n,) for leaf in BN_LEAVES})
        else:
            scope = f"{SCOPE}/expanded_conv" + (f"_{blocks}" if blocks else "")
            blocks += 1
            inner = _make_divisible(depth * p["ef"])
            if inner > depth:
                out[f"{scope}/expand/weights"] = (1, 1, depth, inner)
                out.update({f"{scope}/expand/BatchNorm/{leaf}": (inner,) for leaf in BN_LEAVES})
            else:
                inner = depth
            out[f"{scope}/depthwise/depthwise_weights"] = (p["k"], p["k"], inner, 1)
            out.update({f"{scope}/depthwise/BatchNorm/{leaf}": (inner,) for leaf in BN_LEAVES})
            if layer == 4:
                tap = inner
            if p["se"]:
                squeeze = _make_divisible(inner / 4)
                out[f"{scope}/squeeze_excite/Conv/weights"] = (1, 1, inner, squeeze)
                out[f"{scope}/squeeze_excite/Conv/biases"] = (squeeze,)
                out[f"{scope}/squeeze_excite/Conv_1/weights"] = (1, 1, squeeze, inner)
                out[f"{scope}/squeeze_excite/Conv_1/biases"] = (inner,)
            out[f"{scope}/project/weights"] = (1, 1, inner, n)
            out.update({f"{scope}/project/BatchNorm/{leaf}": (n,) for leaf in BN_LEAVES})
        depth = n
    out["image_pooling/weights"] = (1, 1, depth, ASPP_FILTERS)
    out["image_pooling/biases"] = (ASPP_FILTERS,)
    out["aspp0/weights"] = (1, 1, depth, ASPP_FILTERS)
    out.update({f"aspp0/BatchNorm/{leaf}": (ASPP_FILTERS,) for leaf in BN_LEAVES})
    out["decoder/feature_projection0/weights"] = (1, 1, tap, classes)
    out["decoder/feature_projection0/biases"] = (classes,)
    out["decoder/decoder_conv0/weights"] = (1, 1, ASPP_FILTERS, classes)
    out["decoder/decoder_conv0/biases"] = (classes,)
    return out


def _value(name: str, shape: tuple, rng) -> np.ndarray:
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if leaf in ("beta", "biases"):
        return rng.normal(0, 0.1, shape)
    if leaf == "moving_mean":
        return rng.normal(0, 0.3, shape)
    if leaf == "moving_variance":
        if name.startswith("aspp0/"):  # small variances too, where epsilon 1e-5 vs 1e-3 matters
            return rng.uniform(0.002, 0.05, shape)
        return rng.uniform(0.5, 1.5, shape)
    # Variance-preserving, so the logits stay in a trained model's range (tens, not thousands).
    fan_in = int(np.prod(shape[:-1])) if leaf == "weights" else int(np.prod(shape[:2]))
    return rng.normal(0, np.sqrt(1.0 / fan_in), shape)


def write_checkpoint(folder, classes: int, step: int = 30000, seed: int = 0,
                     drop: tuple = (), extra: dict | None = None) -> str:
    """Writes FOLDER/model.ckpt-STEP (+ `checkpoint`) as train.py's Saver does; returns the prefix.
    `drop`: variable names to leave out; `extra`: name -> shape to add (for the refusal tests)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        created = []
        specs = {k: v for k, v in variables(classes).items() if k not in drop}
        specs.update(extra or {})
        for name, shape in specs.items():
            value = _value(name, shape, rng).astype(np.float32)
            created.append(tf.compat.v1.get_variable(name, initializer=value))
            if not name.endswith(("moving_mean", "moving_variance")):  # Adam's slots, as train.py has
                tf.compat.v1.get_variable(name + "/Adam", initializer=np.zeros(shape, np.float32))
                tf.compat.v1.get_variable(name + "/Adam_1", initializer=np.zeros(shape, np.float32))
        tf.compat.v1.train.create_global_step()
        tf.compat.v1.get_variable("beta1_power", initializer=np.float32(0.9))
        tf.compat.v1.get_variable("beta2_power", initializer=np.float32(0.999))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(folder / "model.ckpt"), global_step=step)


def tf1_logits(prefix: str, images: np.ndarray, crop: tuple = (257, 257)) -> np.ndarray:
    """research/deeplab's predict-time logits for `images` (RGB 0..255, [N, crop, crop, 3]) at
    image resolution, from the checkpoint at `prefix` (inference-mode BatchNorm)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    get = reader.get_tensor
    scale_dimension = lambda dim, s: int((float(dim) - 1.0) * s + 1.0)  # noqa: E731 - utils.scale_dimension

    def conv(x, scope, stride=1, bias=False):
        y = tf.nn.conv2d(x, get(f"{scope}/weights"), stride, "SAME")
        return y + get(f"{scope}/biases") if bias else y

    def bn(x, scope, eps=SLIM_BN_EPSILON):
        g, b, m, v = (get(f"{scope}/BatchNorm/{leaf}") for leaf in BN_LEAVES)
        return tf.nn.batch_normalization(x, m, v, b, g, eps)

    def act(x, kind):
        if kind == "relu":
            return tf.nn.relu(x)
        return x * tf.nn.relu6(x + np.float32(3)) * np.float32(1.0 / 6.0)  # mobilenet_v3.hard_swish

    def resize(x, size):
        return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)

    x = (2.0 / 255.0) * tf.constant(images, tf.float32) - 1.0
    convs, blocks, tap = 0, 0, None
    for layer, (kind, p) in enumerate(v3_small_seg(), start=1):
        if kind == "conv":
            scope = f"{SCOPE}/Conv" + (f"_{convs}" if convs else "")
            convs += 1
            x = act(bn(conv(x, scope, p["stride"]), scope), p["act"])
            continue
        scope = f"{SCOPE}/expanded_conv" + (f"_{blocks}" if blocks else "")
        blocks += 1
        shortcut, net = x, x
        if reader.has_tensor(f"{scope}/expand/weights"):
            net = act(bn(conv(net, f"{scope}/expand"), f"{scope}/expand"), p["act"])
        net = tf.nn.depthwise_conv2d(net, get(f"{scope}/depthwise/depthwise_weights"), [1, p["s"], p["s"], 1], "SAME")
        net = act(bn(net, f"{scope}/depthwise"), p["act"])
        if layer == 4:
            tap = net  # layer_4/depthwise_output
        if p["se"]:  # conv_blocks.squeeze_excite, pool=None: the whole map
            se = tf.reduce_mean(net, axis=[1, 2], keepdims=True)
            se = tf.nn.relu(conv(se, f"{scope}/squeeze_excite/Conv", bias=True))
            se = tf.nn.relu6(conv(se, f"{scope}/squeeze_excite/Conv_1", bias=True) + 3) * Q_SIGMOID
            net = net * se
        net = bn(conv(net, f"{scope}/project"), f"{scope}/project")
        if p["s"] == 1 and net.shape[-1] == shortcut.shape[-1]:
            net = net + shortcut
        x = net
    features = x

    # model.extract_features: the image-level feature as an SE gate (aspp_with_squeeze_and_excitation).
    pool = [scale_dimension(c, 1.0 / OUTPUT_STRIDE) for c in IMAGE_POOLING_CROP]
    image = tf.nn.avg_pool2d(features, pool, list(IMAGE_POOLING_STRIDE), "VALID")
    image = tf.nn.relu6(conv(image, "image_pooling", bias=True) + 3) * Q_SIGMOID  # utils.q_sigmoid
    image = resize(image, [scale_dimension(c, 1.0 / OUTPUT_STRIDE) for c in crop])
    aspp = tf.nn.relu(bn(conv(features, "aspp0"), "aspp0", ASPP_BN_EPSILON))
    head = aspp * image  # no concat projection (aspp_with_concat_projection=0)

    # model.refine_by_decoder, sum merge, output is logits (1x1 convs with biases, no BatchNorm).
    size = [scale_dimension(c, 1.0 / DECODER_STRIDE) for c in crop]
    projection = resize(conv(tap, "decoder/feature_projection0", bias=True), size)
    logits = conv(resize(head, size), "decoder/decoder_conv0", bias=True) + projection
    logits = resize(logits, size)  # multi_scale_logits' resize to the logits size (a no-op here)
    return resize(logits, list(images.shape[1:3])).numpy()  # predict_labels' align-corners resize
