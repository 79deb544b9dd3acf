"""A transposed convolution computed as a sub-pixel convolution: PAD + CONV_2D + DEPTH_TO_SPACE.

Same weights (kernel [kh, kw, filters, in], bias) and the same function as Keras'
Conv2DTranspose with padding="same", so a trained model's weights load unchanged; only the ops
differ. Each of the stride² output phases is a small dense convolution over the input, which
int8 and GPU kernels run as a plain GEMM, where TRANSPOSE_CONV has slower kernels and op
versions that mobile GPU delegates reject.

Output pixel o = s*i + k - p receives input i through tap k (p = (k - s) // 2, TF's "same"),
so phase r = o mod s reads input offsets d = (r + p - k) / s for the taps with (r + p - k)
divisible by s; the phases' kernels are stacked on the channel axis and DEPTH_TO_SPACE
interleaves them back into the full-resolution image.
"""

from exporter.keras import keras, tf


def _phase_taps(kernel: int, stride: int):
    pad = max(kernel - stride, 0) // 2
    taps = [[(k, (r + pad - k) // stride) for k in range(kernel) if (r + pad - k) % stride == 0]
            for r in range(stride)]
    offsets = [d for phase in taps for _, d in phase]
    return taps, min(offsets), max(offsets)


@keras.utils.register_keras_serializable(package="segexport")
class SubpixelConv2DTranspose(keras.layers.Layer):
    def __init__(self, filters, kernel_size, strides, use_bias=True, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size if isinstance(kernel_size, int) else kernel_size[0])
        self.strides = int(strides if isinstance(strides, int) else strides[0])
        if self.strides < 2:
            raise ValueError("a sub-pixel transposed convolution needs a stride of at least 2")
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        k, c_in = self.kernel_size, int(input_shape[-1])
        self.kernel = self.add_weight("kernel", (k, k, self.filters, c_in), initializer="glorot_uniform")
        self.bias = self.add_weight("bias", (self.filters,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def _phase_kernel(self):
        s, k, f = self.strides, self.kernel_size, self.filters
        taps, lo, hi = _phase_taps(k, s)
        size = hi - lo + 1
        c_in = self.kernel.shape[-1]
        # [size, size, in, s, s, filters] assembled from the transposed-conv taps.
        blocks = {}
        for ry in range(s):
            for rx in range(s):
                for ky, dy in taps[ry]:
                    for kx, dx in taps[rx]:
                        blocks[(dy - lo, dx - lo, ry, rx)] = tf.transpose(self.kernel[ky, kx])  # [in, f]
        zero = tf.zeros((c_in, f), self.kernel.dtype)
        rows = []
        for y in range(size):
            cols = []
            for x in range(size):
                # DEPTH_TO_SPACE takes channels in (row phase, column phase, filter) order.
                cols.append(tf.concat([blocks.get((y, x, ry, rx), zero) for ry in range(s) for rx in range(s)], -1))
            rows.append(tf.stack(cols))
        return tf.stack(rows), lo, hi

    def call(self, x):
        kernel, lo, hi = self._phase_kernel()
        x = tf.pad(x, [[0, 0], [-lo, hi], [-lo, hi], [0, 0]])
        y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
        if self.bias is not None:
            y = tf.nn.bias_add(y, tf.tile(self.bias, [self.strides * self.strides]))
        y = tf.nn.depth_to_space(y, self.strides)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        return (b, None if h is None else h * s, None if w is None else w * s, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


@keras.utils.register_keras_serializable(package="segexport")
class PhaseConv2DTranspose(SubpixelConv2DTranspose):
    """The sub-pixel form without the zero taps: one CONV_2D per output phase over only the
    input offsets that phase reads (for kernel 3, stride 2: 1x1, 1x2, 2x1 and 2x2 convs, 9 taps
    in all, the transposed conv's own weights), each on its input padded as it needs, then
    CONCATENATION and DEPTH_TO_SPACE. The dense `SubpixelConv2DTranspose` multiplies 16 taps
    (7 of them zero) and stores them: 1.8x the decoder's weights in the file. Same weights and
    function as Conv2DTranspose(padding="same")."""

    def call(self, x):
        s, f = self.strides, self.filters
        taps, _lo, _hi = _phase_taps(self.kernel_size, s)
        outputs = []
        for ry in range(s):
            for rx in range(s):
                ys = sorted({d for _, d in taps[ry]})
                xs = sorted({d for _, d in taps[rx]})
                # kernel[dy - ys[0], dx - xs[0], in, f] = transposed kernel at its tap (ky, kx).
                rows = []
                for dy in range(ys[0], ys[-1] + 1):
                    cols = []
                    for dx in range(xs[0], xs[-1] + 1):
                        hit = [(ky, kx) for ky, d1 in taps[ry] if d1 == dy for kx, d2 in taps[rx] if d2 == dx]
                        if hit:
                            ky, kx = hit[0]
                            cols.append(tf.transpose(self.kernel[ky, kx]))
                        else:
                            cols.append(tf.zeros((self.kernel.shape[-1], f), self.kernel.dtype))
                    rows.append(tf.stack(cols))
                kernel = tf.stack(rows)
                # Output (i, j) reads input (i + dy, j + dx) for dy in ys, dx in xs.
                pad = [[0, 0], [max(-ys[0], 0), max(ys[-1], 0)], [max(-xs[0], 0), max(xs[-1], 0)], [0, 0]]
                xp = tf.pad(x, pad) if any(p for row in pad for p in row) else x
                y = tf.nn.conv2d(xp, kernel, strides=1, padding="VALID")
                # The bias per phase: the converter fuses it into each CONV_2D (after the
                # CONCATENATION it would stay an ADD over the full-size output).
                # The activation too (element-wise, so it commutes with the interleaving): fused
                # into the CONV_2D, where int8 RELU after DEPTH_TO_SPACE ran outside XNNPACK.
                outputs.append(self.activation(y if self.bias is None else tf.nn.bias_add(y, self.bias)))
        return tf.nn.depth_to_space(tf.concat(outputs, axis=-1), s)


# XNNPACK's int8 GEMMs on a dot-product ARM core (4x16c4) compute output channels 16 at a time.
GEMM_TILE = 16


def cheapest_form(filters: int, kernel: int, stride: int):
    """The sub-pixel layer with fewer multiply-adds once output channels are padded to the GEMM
    tile: PhaseConv2DTranspose runs each phase on its own taps (9 for kernel 3, stride 2) with
    `filters` outputs each; the dense SubpixelConv2DTranspose runs all phases at once over the
    whole window (4 taps) with stride^2 x filters outputs. For UNet's 3-class logits layer that is
    9 x 16 against 4 x 16 padded channel-taps; for its 64-512-filter decoder layers the phases win."""
    taps, lo, hi = _phase_taps(kernel, stride)
    padded = lambda n: -(-n // GEMM_TILE) * GEMM_TILE  # noqa: E731
    phases = sum(len(taps[ry]) * len(taps[rx]) for ry in range(stride) for rx in range(stride)) * padded(filters)
    dense = (hi - lo + 1) ** 2 * padded(stride * stride * filters)
    return SubpixelConv2DTranspose if dense < phases else PhaseConv2DTranspose
