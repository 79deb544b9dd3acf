"""Output contracts (`convert --output-activation model|none --output-size input|native`, issue 28).

MediaPipe Tasks' ImageSegmenter applies the output activation the metadata declares and returns
masks at the image's size, whatever size the output tensor has. So a file may leave both to it:
- `--output-activation none`: the file outputs logits (a final softmax or sigmoid is cut off the
  export graph); the metadata declares SOFTMAX (several channels) or SIGMOID (one channel), so the
  client applies it. An architecture whose scores already are logits is unchanged.
- `--output-size native`: the export graph's final bilinear resize to the input resolution is cut
  off; the file outputs the decoder's own resolution and the client upsamples. Only where the
  architecture ends in such a resize; otherwise one line says why not.
- `--output-size aligned:R` (or `aligned:HxW`): the final resize is cut off as for `native`, and the
  decoder's logits are resampled inside the file to an R x R grid chosen for a client that upsamples
  with ALIGNED corners (MediaPipe's category mask): per axis a fixed linear map
  A = pinv(U_aligned(input <- R)) . M_model(input <- native), the least-squares grid whose
  aligned-corners upsample is closest to the model's own resize (half-pixel centres, or aligned
  corners where the architecture's resize has them). Two FULLY_CONNECTED ops over the transposed
  axes (`_aligned_resample`), cheap in int8, instead of the x8 resize at every input pixel.

The contract lives in ONE place, the export graph (`strip`, called by
exporter.convert.signature.export_model); the metadata and the parity follow from it.

What MediaPipe does with a smaller output, read in its source and checked with the real
ImageSegmenter (tests/test_output_contracts.py): the category mask is the argmax of the raw output
tensor upsampled bilinearly with ALIGNED CORNERS (source y = y' (h - 1) / (H - 1); the activation
does not change the argmax, except a one-channel head's sigmoid > 0.5); the confidence masks are the
activation at the tensor's resolution, then OpenCV's INTER_LINEAR resize (half-pixel centres).
`client_view` is that category-mask path: parity measures what an app gets.
"""

from __future__ import annotations

import numpy as np

from exporter.errors import ExporterError

ACTIVATION_CHOICES = ("model", "none")
SIZE_CHOICES = ("input", "native", "aligned:R")
DEFAULT_ACTIVATION, DEFAULT_SIZE = "model", "input"
# Keras layers that resize bilinearly (DeepLab's ResizeBilinear for align-corners and odd sizes).
_RESIZE_LAYERS = ("UpSampling2D", "Resizing", "ResizeBilinear")


def check(activation: str, size: str) -> None:
    if activation not in ACTIVATION_CHOICES:
        raise ExporterError(f"--output-activation {activation!r}: choose one of {', '.join(ACTIVATION_CHOICES)}")
    if size not in SIZE_CHOICES[:2]:
        aligned_grid(size, None)  # aligned:R / aligned:HxW, or one line saying what is wrong


def aligned_grid(size: str, input_size) -> tuple[int, int] | None:
    """(rows, cols) of `--output-size aligned:R` / `aligned:HxW`, None for another size; checked
    against `input_size` (2 <= R <= the input's) when given."""
    if not size.startswith("aligned:"):
        if size in SIZE_CHOICES[:2]:
            return None
        raise ExporterError(f"--output-size {size!r}: choose input, native or aligned:R (R x R logits for a client "
                            "that upsamples with aligned corners, e.g. aligned:32)")
    spec = size.split(":", 1)[1].lower()
    try:
        parts = [int(v) for v in spec.split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts, default=0) < 2:
        raise ExporterError(f"--output-size {size!r}: aligned:R or aligned:HxW with whole numbers >= 2 (e.g. aligned:32)")
    grid = (parts[0], parts[-1])
    if input_size is not None and (grid[0] > input_size[0] or grid[1] > input_size[1]):
        raise ExporterError(f"--output-size {size}: the grid is larger than the {input_size[0]}x{input_size[1]} input")
    return grid


def cuts_resize(size: str) -> bool:
    """Whether the contract cuts the final resize off the export graph (native and aligned:R)."""
    return size != DEFAULT_SIZE


def of(config) -> tuple[str, str]:
    """(activation, size) of a ModelConfig (today's contract when it names none)."""
    return (getattr(config, "output_activation", DEFAULT_ACTIVATION) or DEFAULT_ACTIVATION,
            getattr(config, "output_size", DEFAULT_SIZE) or DEFAULT_SIZE)


def is_default(config) -> bool:
    return of(config) == (DEFAULT_ACTIVATION, DEFAULT_SIZE)


def default_of(config):
    """`config` with today's contract: the float reference at full resolution."""
    import dataclasses

    return dataclasses.replace(config, output_activation=DEFAULT_ACTIVATION, output_size=DEFAULT_SIZE)


def file_output(config) -> str:
    """What the file's score tensor holds: "logits" when the activation is left to the client,
    else the architecture's own (`ArchSpec.output`)."""
    from architectures import get_spec

    return "logits" if of(config)[0] == "none" else get_spec(config.name).output


def client_activation(config) -> str:
    """The activation the metadata declares (MediaPipe applies it): SOFTMAX / SIGMOID on logits."""
    from exporter.metadata import activation_for

    kind = file_output(config)
    if kind == "logits" and config.num_classes == 1:
        return "SIGMOID"
    return activation_for(kind)


def _activation_of(layer) -> str | None:
    """"softmax" / "sigmoid" when `layer` is (or ends in) that activation, else None."""
    kind = type(layer).__name__
    if kind == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) if act is not None else None
    if kind == "Activation" or name in ("softmax", "sigmoid"):
        return name if name in ("softmax", "sigmoid") else None
    return None


def _resizes_to_input(layer, config) -> bool:
    if type(layer).__name__ not in _RESIZE_LAYERS:
        return False
    if type(layer).__name__ == "UpSampling2D" and getattr(layer, "interpolation", "") != "bilinear":
        return False
    return tuple(layer.output.shape[1:3]) == tuple(config.input_size)


def strip(model, config):
    """The export graph under `config`'s contract: `model` itself for today's, else a Keras model over
    the same layers (and weights) that ends before the final softmax/sigmoid and/or resize."""
    activation, size = of(config)
    check(activation, size)
    if (activation, size) == (DEFAULT_ACTIVATION, DEFAULT_SIZE):
        return model
    from exporter.keras import keras

    out, cut, resize = model.output, [], None
    for _ in range(2):  # an activation and a resize, in either order
        layer = out._keras_history.layer
        if activation == "none" and "activation" not in cut and _activation_of(layer):
            out = _without_activation(layer, keras)
            cut.append("activation")
        elif cuts_resize(size) and "size" not in cut and _resizes_to_input(layer, config):
            resize, out = layer, layer.input
            cut.append("size")
        else:
            break
    if cuts_resize(size) and "size" not in cut:
        last = out._keras_history.layer
        raise ExporterError(f"--output-size {size}: {config.name} does not end in a resize to the input resolution "
                            f"(its output comes from {type(last).__name__} {last.name!r}, already at "
                            f"{out.shape[1]}x{out.shape[2]}); use --output-size input")
    if not cut:  # --output-activation none on a model whose scores already are logits
        return model
    grid = aligned_grid(size, config.input_size)
    if grid is not None:
        out = _aligned_resample(out, grid, config.input_size, getattr(resize, "align_corners", False), keras)
    return keras.Model(model.input, out, name=model.name)


def resize_matrix(out: int, inp: int, align_corners: bool = False) -> np.ndarray:
    """[out, inp]: one axis of TensorFlow's/TFLite's RESIZE_BILINEAR (half-pixel centres, or aligned
    corners) as a matrix: row o holds the weights of the input samples output o interpolates."""
    m = np.zeros((out, inp), np.float64)
    for o in range(out):
        if align_corners:
            src = o * (inp - 1) / max(out - 1, 1)
        else:
            src = (o + 0.5) * inp / out - 0.5
        lo_f = np.floor(src)
        lo, hi = int(min(max(lo_f, 0), inp - 1)), int(min(max(np.ceil(src), 0), inp - 1))
        t = src - lo_f
        m[o, lo] += 1 - t
        m[o, hi] += t
    return m


def aligned_map(grid: int, native: int, size: int, align_corners: bool = False) -> np.ndarray:
    """[grid, native]: the fixed per-axis map from the decoder's `native` samples to `grid` values whose
    aligned-corners upsample to `size` (the client's) is closest, in least squares, to the model's own
    resize native -> size."""
    client = resize_matrix(size, grid, align_corners=True)
    return np.linalg.pinv(client) @ resize_matrix(size, native, align_corners)


def _aligned_resample(x, grid, input_size, align_corners: bool, keras):
    """[1, h, w, C] logits -> [1, R_h, R_w, C]: the per-axis `aligned_map`s as two bias-free Dense layers
    (TFLite FULLY_CONNECTED; XNNPACK's int8 GEMM) over transposed axes (TRANSPOSE: data movement)."""
    h, w = int(x.shape[1]), int(x.shape[2])
    maps = (aligned_map(grid[1], w, input_size[1], align_corners),
            aligned_map(grid[0], h, input_size[0], align_corners))
    y = keras.layers.Permute((1, 3, 2), name="aligned_to_width")(x)  # [h, C, w]
    dense = keras.layers.Dense(grid[1], use_bias=False, trainable=False, name="aligned_width")
    y = dense(y)  # [h, C, R_w]
    dense.set_weights([maps[0].T.astype(np.float32)])
    y = keras.layers.Permute((3, 2, 1), name="aligned_to_height")(y)  # [R_w, C, h]
    dense = keras.layers.Dense(grid[0], use_bias=False, trainable=False, name="aligned_height")
    y = dense(y)  # [R_w, C, R_h]
    dense.set_weights([maps[1].T.astype(np.float32)])
    return keras.layers.Permute((3, 1, 2), name="aligned_grid")(y)  # [R_h, R_w, C]


def _without_activation(layer, keras):
    """The logits tensor before `layer`'s softmax/sigmoid: its input for a bare activation layer,
    else the same layer rebuilt with a linear activation (same weights)."""
    if type(layer).__name__ in ("Softmax", "Activation"):
        return layer.input
    config = {**layer.get_config(), "activation": "linear", "name": f"{layer.name}_logits"}
    linear = type(layer).from_config(config)
    out = linear(layer.input)
    linear.set_weights(layer.get_weights())
    return out


def describe(config, output_shape) -> dict:
    """The report's "output_contract"."""
    activation, size = of(config)
    h, w = config.input_size
    oh, ow = int(output_shape[1]), int(output_shape[2])
    client = []
    if (oh, ow) != (h, w) and aligned_grid(size, None) is not None:
        client.append(f"upsamples the {oh}x{ow} output to the image size (bilinear with aligned corners, as "
                      "MediaPipe's ImageSegmenter does: the file resampled its logits for exactly that)")
    elif (oh, ow) != (h, w):
        client.append(f"upsamples the {oh}x{ow} output to the image size (bilinear)")
    if activation == "none" and client_activation(config) != "NONE":
        client.append(f"applies {client_activation(config)} (declared in the metadata)")
    return {"activation": activation, "size": size, "output": file_output(config),
            "output_shape": [oh, ow, int(output_shape[-1])], "metadata_activation": client_activation(config),
            "client": "; ".join(client) or "nothing (scores at input resolution, as the model computes them)",
            "agreement_measured": ("after the client's align-corners bilinear upsample (MediaPipe's category mask), "
                                   "against the float model's argmax at the input size") if client else "as is"}


def upsample_aligned(scores: np.ndarray, size) -> np.ndarray:
    """Bilinear upsample of [N, h, w, C] to [N, H, W, C] with aligned corners, exactly as MediaPipe's
    ImageSegmenter computes its category mask (tensors_to_segmentation_calculator.cc)."""
    n, h, w, c = scores.shape
    H, W = size
    if (h, w) == (H, W):
        return scores

    def axis(out, inp):
        pos = np.arange(out, dtype=np.float32) * (np.float32(inp - 1) / np.float32(max(out - 1, 1)))
        lo = np.clip(np.floor(pos), 0, inp - 1).astype(np.int64)
        hi = np.clip(np.ceil(pos), 0, inp - 1).astype(np.int64)
        return lo, hi, np.clip(pos - lo, 0, 1).astype(np.float32)

    y0, y1, ty = axis(H, h)
    x0, x1, tx = axis(W, w)
    tx = tx[None, None, :, None]
    top = scores[:, y0][:, :, x0] + (scores[:, y0][:, :, x1] - scores[:, y0][:, :, x0]) * tx
    bottom = scores[:, y1][:, :, x0] + (scores[:, y1][:, :, x1] - scores[:, y1][:, :, x0]) * tx
    return top + (bottom - top) * ty[None, :, None, None]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class ClientView:
    """A runner of a file under `config`'s contract, seen as MediaPipe's category mask sees it: the
    output upsampled to the input size (aligned corners), then the activation the architecture
    would have applied (so scores compare with the float model's own, as well as their argmax)."""

    def __init__(self, runner, config):
        self.runner, self.config = runner, config
        self.activation = None
        if of(config)[0] == "none":
            from architectures import get_spec

            self.activation = {"softmax": "softmax", "sigmoid": "sigmoid"}.get(get_spec(config.name).output)

    def __getattr__(self, name):  # invoke, set_input, interpreter...: the runner's
        return getattr(self.runner, name)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        scores = upsample_aligned(np.asarray(self.runner.predict(pixels), np.float32), pixels.shape[1:3])
        if self.activation == "softmax":
            return _softmax(scores)
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-scores))
        return scores


def client_runner(runner, config):
    """`runner` as is under today's contract, else its ClientView."""
    return runner if is_default(config) else ClientView(runner, config)
