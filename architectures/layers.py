"""Small Keras layers shared by the architectures.

Everything here is a real Keras layer (not a raw `tf.` op or a Lambda): tfmot's quantize_model
cannot wrap TFOpLambda/Lambda nodes, and the TFLite converter maps these to builtin ops.
"""

from exporter.keras import keras, tf


def pixel_input(config, name: str = "pixels"):
    """The export contract's input: RGB pixels 0..255, float32, NHWC."""
    h, w = config.input_size
    return keras.Input(shape=(h, w, 3), batch_size=config.batch_size, name=name, dtype="float32")


def normalise_pixels(x, config, name: str = "normalise"):
    """The model's input normalisation (architectures.input_norm: the user's --input-norm, else the
    architecture's), inside the graph so every runtime gets raw 0..255 pixels."""
    from architectures.input_norm import of_config

    scale, offset = of_config(config).rescaling()
    return keras.layers.Rescaling(scale, offset=offset, name=name)(x)


@keras.utils.register_keras_serializable(package="segexport")
class HardSwish(keras.layers.Layer):
    """x * relu6(x + 3) / 6 as one layer (one quantiser in QAT), in one of two TFLite forms.

    `builtin=True` writes `x * relu6(x + 3) * (1/6)`, the pattern TFLite's converter fuses into
    its HARD_SWISH builtin. LiteRT 2.3's XNNPACK delegate runs HARD_SWISH in float only: in an
    int8 file every HARD_SWISH runs on the reference kernel and splits the delegated graph (18
    of them cut DeepLab into 19 partitions and made its int8 file slower than float).
    `builtin=False` (the default) writes the same function as `relu6(x + 3) * (x * (1/6))`,
    which the converter leaves as ADD (fused RELU6), MUL and MUL, three element-wise ops XNNPACK
    takes in float and in int8. Float results differ from the fused form by rounding only
    (a few ulp).

    The operand order matters for int8 accuracy. TF 2.21's calibration gives the final MUL's
    first operand the union of its own range and the product's range. With
    `(x * (1/6)) * relu6(x + 3)` that operand was x/6, and it got a step 3.4x too coarse on
    every hard-swish. On the trained DeepLab (128 px) the mean |logit error| was 0.290 and the
    agreement with float 98.74 %. In this order the widened operand is relu6(x + 3), whose own
    range [0, 6] lies inside the product's. The same file measured 0.160 and 99.25 %, no worse
    than the HARD_SWISH builtin (0.164 and 99.30 %). The ops and the latency are the same.

    `sixth_folded=True` (export graphs only) leaves the 1/6 out: the layer computes 6 * hard-swish
    as relu6(x + 3) * x, two element-wise ops, and the convolutions that read it take the 1/6 in
    their kernels (DeepLab's `fold_sixth_weights`).
    """

    def __init__(self, builtin: bool = False, sixth_folded: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.builtin = bool(builtin)
        self.sixth_folded = bool(sixth_folded)

    def call(self, x):
        if self.sixth_folded:
            return tf.nn.relu6(x + 3.0) * x
        if self.builtin:
            return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
        return tf.nn.relu6(x + 3.0) * (x * (1.0 / 6.0))

    def get_config(self):
        return {**super().get_config(), "builtin": self.builtin, "sixth_folded": self.sixth_folded}


@keras.utils.register_keras_serializable(package="segexport")
class HardSigmoid(keras.layers.Layer):
    """relu6(x + 3) / 6 (MobileNetV3's hard sigmoid, not Keras 2's 0.2x+0.5 variant).

    `scale` replaces the 1/6: TF1 DeepLab's q_sigmoid and slim MobileNetV3's SE gate multiply by
    0.16667, and a model imported from such a checkpoint computes exactly that (2e-6 apart per
    gate, compounding over a network's gates)."""

    def __init__(self, scale: float = 1.0 / 6.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        return tf.nn.relu6(x + 3.0) * self.scale

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.utils.register_keras_serializable(package="segexport")
class ResizeBilinear(keras.layers.Layer):
    """Bilinear resize to a fixed size, with TF1's align-corners geometry as an option.

    Keras' `UpSampling2D`/`Resizing` only do half-pixel centres; this maps to one TFLite
    RESIZE_BILINEAR with either `align_corners` (TF1 DeepLab at 32k+1 inputs) or
    `half_pixel_centers` set. The batch dimension stays free.

    `separable=True` computes the same resize as two: along the width (the small map, few
    channels), then along the height with width x channels as one channel axis (RESHAPE is free of
    arithmetic). Bilinear weights are a product of a row and a column weight, so the float result
    is the same (max |diff| 0 on DeepLab's x8 logits). It is cheaper where the channels are few:
    XNNPACK's 8-bit kernel does 16 channels at a time, so DeepLab's 21 classes paid for 32 at every
    one of 128x128 output pixels (A76, uint8, x8 of 16x16x21: 1.87 M -> 1.44 M instructions).
    """

    def __init__(self, size, align_corners: bool = False, separable: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))
        self.align_corners = bool(align_corners)
        self.separable = bool(separable)

    def _resize(self, x, size):
        return tf.raw_ops.ResizeBilinear(
            images=x,
            size=size,
            align_corners=self.align_corners,
            half_pixel_centers=not self.align_corners,
        )

    def call(self, x):
        if not self.separable:
            return self._resize(x, self.size)
        h, c = x.shape[1], x.shape[3]
        (out_h, out_w) = self.size
        y = self._resize(x, (h, out_w))  # width only: the scale along the height is 1, weights 1 and 0
        y = tf.reshape(y, (-1, h, 1, out_w * c))
        y = self._resize(y, (out_h, 1))
        return tf.reshape(y, (-1, out_h, out_w, c))

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([input_shape[0], *self.size, input_shape[3]])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "align_corners": self.align_corners,
                "separable": self.separable}



@keras.utils.register_keras_serializable(package="segexport")
class ReduceSum(keras.layers.Layer):
    """Sum over one axis, keeping it (TFLite SUM; XNNPACK runs it in float and int8)."""

    def __init__(self, axis: int, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, x):
        return tf.reduce_sum(x, axis=self.axis, keepdims=True)

    def compute_output_shape(self, input_shape):
        shape = list(tf.TensorShape(input_shape).as_list())
        shape[self.axis] = 1
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.utils.register_keras_serializable(package="segexport")
class DepthToSpace(keras.layers.Layer):
    """tf.nn.depth_to_space as a layer (one DEPTH_TO_SPACE op; XNNPACK runs it in float and int8)."""

    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.block_size
        return (b, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def upsample_nearest_2x(x, name: str):
    """Nearest-neighbour 2x upsampling as concatenations and reshapes.

    Exactly `UpSampling2D(2, interpolation="nearest")`, but XNNPACK has no RESIZE_NEAREST_NEIGHBOR
    kernel (float or int8), so that op splits the delegated graph; CONCATENATION and RESHAPE it
    runs in both. Shapes exclude the batch, so any batch size works.
    """
    _, h, w, c = x.shape
    L = keras.layers
    y = L.Concatenate(axis=-1, name=f"{name}_cols")([x, x])  # [B, H, W, 2C]: each pixel twice
    y = L.Reshape((h, 1, 2 * w * c), name=f"{name}_r0")(y)  # = [B, H, 2W, C] row by row
    y = L.Concatenate(axis=2, name=f"{name}_rows")([y, y])  # each row twice
    return L.Reshape((2 * h, 2 * w, c), name=f"{name}_r1")(y)


@keras.utils.register_keras_serializable(package="segexport")
class MatMul(keras.layers.Layer):
    """`scale * (a @ b)` (or `a @ b^T`) over the last two axes; leading axes are batch axes.

    Attention with heads as an axis ([B, heads, N, d] @ [B, heads, d, M]) needs a matmul that
    keeps both leading axes as batch axes: Keras' `Dot` contracts the batch_dot way, which turns
    two 4-D operands into a 5-D [B, heads, N, heads, M] result. This layer is one BATCH_MATMUL
    in TFLite (adj_y for `transpose_b`), followed by one MUL when `scale` is not 1.
    """

    def __init__(self, transpose_b: bool = False, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.transpose_b = bool(transpose_b)
        self.scale = float(scale)

    def call(self, inputs):
        a, b = inputs
        y = tf.linalg.matmul(a, b, transpose_b=self.transpose_b)
        if self.scale != 1.0:
            y = y * self.scale
        return y

    def compute_output_shape(self, input_shape):
        a, b = (tf.TensorShape(s) for s in input_shape)
        cols = b[-2] if self.transpose_b else b[-1]
        return a[:-1].concatenate([cols])

    def get_config(self):
        return {**super().get_config(), "transpose_b": self.transpose_b, "scale": self.scale}


@keras.utils.register_keras_serializable(package="segexport")
class CenteredLayerNormalization(keras.layers.LayerNormalization):
    """LayerNormalization (last axis, same weights) computed as `d = x - mean(x)`,
    `d * rsqrt(mean(d * d) + eps) * gamma + beta`: the same function in float.

    Keras's own form becomes MEAN, SQUARED_DIFFERENCE, ..., `x * s + (beta - mean * s)` in TFLite,
    and LiteRT has no int16 SQUARED_DIFFERENCE kernel, so an int16x8 file of it does not run; this
    form is SUB, MUL, MEAN, ADD, RSQRT, MUL, ADD, all with int16 kernels, and never subtracts two
    large products. Export graphs use it where a precision asks (SegFormer's int16x8 file).
    """

    def call(self, x):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        d = x - mean
        var = tf.reduce_mean(d * d, axis=-1, keepdims=True)
        return d * tf.math.rsqrt(var + self.epsilon) * self.gamma + self.beta


@keras.utils.register_keras_serializable(package="segexport")
class ExactGelu(keras.layers.Layer):
    """GELU with the exact erf form, `0.5 * x * (1 + erf(x / sqrt(2)))`, as PyTorch's default.

    Same values as `Activation("gelu")`, but TF 2.21's `tf.nn.gelu` is written with `erfc`, which
    tf2onnx cannot convert; `erf` becomes ONNX Erf, and TFLite's converter still fuses this
    pattern into its GELU builtin.
    """

    def call(self, x):
        return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))
