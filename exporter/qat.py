"""Quantisation-aware training (tfmot) from a trained float model, to a full-integer int8 TFLite.

The flow:

1. `fold_batchnorm`: a BatchNormalization after a transposed convolution (Keras' Conv2DTranspose
   or our SubpixelConv2DTranspose) is folded into that convolution's kernel and bias, exactly.
   tfmot folds nothing itself: it only knows Conv2D/DepthwiseConv2D/Dense + BN (where it places
   the quantizers so that the converter folds the BN); after a transposed conv the BN stays a
   float MUL/ADD pair in the file and the TRANSPOSE_CONV with it.
2. `annotate`: walk the functional model's layers; a layer tfmot's default 8-bit registry knows
   keeps tfmot's behaviour, every other layer gets a QuantizeConfig chosen by its class
   (`LAYER_CONFIGS`): an output-only config (one moving-average 8-bit quantizer on the output) for
   layers that compute something, a no-op config for range-preserving ones (resizes, reshapes).
   Every layer is recorded with what it got and why; layers left unquantised are listed.
3. `qat_model`: tfmot's `quantize_apply` on the annotated model, with tfmot's "X + ReLU" layout
   transform corrected so that a transposed conv before a ReLU keeps its kernel quantizer
   (`_scheme`). `fine_tune` first starts every activation range at the float model's min/max on
   representative training samples (`calibrate_ranges`: tfmot starts them at [-6, 6] and moves
   them with an EMA decay of 0.999, which a short fine-tune does not calibrate), then trains
   briefly at a low learning rate (weight ranges are only set by a training step).
4. `to_int8_tflite`: the QAT graph rebuilt at a static batch of 1 (the export contract) with the
   trained QAT weights copied in, converted by `exporter.convert.tflite.to_tflite` with the int8
   recipe (TFLITE_BUILTINS_INT8 only, representative samples calibrate the ops that carry no
   fake-quant range).

Nothing here picks Keras: `exporter.keras` did.
"""

from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np

from exporter.convert.ranges import DEFAULT_PERCENTILE, TailTracker
from exporter.errors import ConversionError, ExporterError
from exporter.keras import keras, tf

# What a layer gets. "default": tfmot's registry (weights and/or activations as tfmot decides);
# "output": one moving-average 8-bit quantizer on the output; "noop": no quantizer (the layer
# keeps its input's int8 scale in TFLite); "float": not annotated (tfmot cannot wrap it).
DEFAULT, OUTPUT, NOOP, FLOAT = "default", "output", "noop", "float"

# Layers tfmot's default 8-bit registry does not know, by class name.
LAYER_CONFIGS: dict[str, tuple[str, str]] = {
    # Element-wise arithmetic and normalisation: a new value range comes out.
    "Rescaling": (OUTPUT, "affine rescale: not in tfmot's registry; output quantised"),
    "Normalization": (OUTPUT, "affine normalisation: not in tfmot's registry; output quantised"),
    "Multiply": (OUTPUT, "element-wise product: not in tfmot's registry; output quantised"),
    "Subtract": (OUTPUT, "element-wise difference: not in tfmot's registry; output quantised"),
    "Maximum": (OUTPUT, "element-wise max: not in tfmot's registry; output quantised"),
    "Minimum": (OUTPUT, "element-wise min: not in tfmot's registry; output quantised"),
    "Average": (OUTPUT, "element-wise mean: not in tfmot's registry; output quantised"),
    "Dot": (OUTPUT, "matmul: not in tfmot's registry; output quantised, operands as produced"),
    "LayerNormalization": (OUTPUT, "not in tfmot's registry; output quantised, the converter "
                                   "calibrates its decomposition (mean, rsqrt, mul)"),
    "BatchNormalization": (OUTPUT, "BatchNorm not after a Conv2D/DepthwiseConv2D (tfmot folds only "
                                   "those): output quantised (MUL + ADD in TFLite)"),
    # Our layers (architectures/layers.py, architectures/subpixel.py).
    "HardSwish": (OUTPUT, "custom layer: output quantised (TFLite HARD_SWISH int8)"),
    "HardSigmoid": (OUTPUT, "custom layer: output quantised"),
    "ExactGelu": (OUTPUT, "custom layer: output quantised (TFLite GELU int8)"),
    "MatMul": (OUTPUT, "custom layer: output quantised (BATCH_MATMUL), operands as produced"),
    "ReduceSum": (OUTPUT, "custom layer: output quantised (SUM)"),
    "SubpixelConv2DTranspose": (OUTPUT, "custom layer: output quantised; its kernel is quantised "
                                        "per channel at conversion, not simulated in training"),
    "PhaseConv2DTranspose": (OUTPUT, "custom layer (a transposed conv as per-phase convs, the export "
                                     "graph's): output quantised; its phase kernels are quantised per "
                                     "channel at conversion, not simulated in training"),
    # Range-preserving: the int8 op keeps its input's scale, a quantizer would only add error.
    "Resizing": (NOOP, "resize: range-preserving, no quantizer (int8 with its input's scale)"),
    "ResizeBilinear": (NOOP, "resize: range-preserving, no quantizer (int8 with its input's scale)"),
}
# Classes tfmot cannot wrap at all: kept out of QAT, calibrated by the converter instead.
UNWRAPPABLE = {
    "Lambda": "Python Lambda: tfmot cannot wrap it; rewrite it as a Keras layer",
    "TFOpLambda": "raw TF op in the graph: tfmot's wrapper breaks it; rewrite it as a Keras layer",
    "SlicingOpLambda": "raw TF slice in the graph: tfmot's wrapper breaks it; use a Keras layer",
}
# Conv layers after which tfmot itself handles a BatchNormalization.
_TFMOT_BN_PREDECESSORS = ("Conv2D", "DepthwiseConv2D")
# Transposed convolutions whose following BN we fold ourselves; kernel [k, k, out, in].
FOLDABLE = ("Conv2DTranspose", "SubpixelConv2DTranspose")


@dataclasses.dataclass
class LayerRecord:
    layer: str
    cls: str
    treatment: str  # default | output | noop | float | folded | input
    reason: str = ""
    quantizers: int = 0  # fake-quant points the QAT model has in this layer (weights + outputs)
    quantised: bool = False  # its output is fake-quantised (by itself or by the op it fuses into)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class QATInfo:
    """What `qat_model` did to each layer: the report's 'left unquantised and why'."""

    layers: list[LayerRecord]
    folded: list[dict]  # {"bn", "into"}
    float_graph: object = None  # the folded float model the QAT model wraps (for range calibration)
    ranges_calibrated: int = 0  # samples the activation ranges were initialised from (0: not yet)
    frozen_batchnorms: int = 0  # BatchNormalization layers pinned to inference mode (`freeze_batchnorm`)
    range_percentile: float | None = None  # what `calibrate_ranges` started the ranges from
    # Which float graph is wrapped: "export" (the export graph, `export_graph_qat_model`: the file
    # gets the architecture's export-graph rewrites) or "training" (the model as given).
    graph: str = "training"

    @property
    def unquantised(self) -> list[dict]:
        """Layers with no fake-quant point of their own, each with the reason."""
        return [r.to_json() for r in self.layers if not r.quantised]

    def to_json(self) -> dict:
        return {"layers": [r.to_json() for r in self.layers], "folded": list(self.folded),
                "unquantised": self.unquantised, "ranges_calibrated_on": self.ranges_calibrated,
                "frozen_batchnorms": self.frozen_batchnorms, "range_percentile": self.range_percentile,
                "graph": self.graph}


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def _configs():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs as configs,
    )

    return configs


def _scheme():
    """tfmot's default 8-bit scheme with its "X + ReLU" transform corrected.

    tfmot's LayerReLUQuantize matches the producer class with '^Add|Conv2D|DepthwiseConv2D|Dense$',
    which (alternation precedence) also matches Conv2DTranspose, and gives the producer a no-op
    config: the conv's kernel then gets no fake-quant at all (our folded transposed convs are
    followed by ReLU). Here a weighted producer keeps its weight quantizer and only loses its
    output quantizer (the ReLU's output is quantised, as TFLite fuses the ReLU); Add keeps tfmot's
    no-op config.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layout_transform
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
        default_8bit_quantize_scheme,
        default_8bit_transforms as T,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
        model_transformer,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations.transforms import (
        LayerPattern,
    )

    weighted = {
        "Conv2D": lambda: registry.Default8BitConvQuantizeConfig(["kernel"], [], False),
        "DepthwiseConv2D": lambda: registry.Default8BitConvQuantizeConfig(["depthwise_kernel"], [], False),
        "Conv2DTranspose": lambda: registry.Default8BitConvTransposeQuantizeConfig(["kernel"], [], False),
        "Dense": lambda: registry.Default8BitQuantizeConfig(["kernel"], [], False),
    }
    producers = "(Add|Conv2D|DepthwiseConv2D|Conv2DTranspose|Dense)"

    class ReLUQuantize(T.LayerReLUQuantize):
        def pattern(self):
            return LayerPattern("ReLU", inputs=[LayerPattern(producers)])

        def replacement(self, match_layer):
            producer = match_layer.input_layers[0]
            cls = producer.layer["class_name"]
            activation = producer.layer["config"].get("activation", "linear")
            if cls in weighted and activation in ("linear", None):
                producer.metadata["quantize_config"] = weighted[cls]()
            elif cls == "Add":
                producer.metadata["quantize_config"] = _configs().NoOpQuantizeConfig()
            return match_layer

        def custom_objects(self):
            return {**super().custom_objects(), **registry._types_dict()}

    class ReluActivationQuantize(ReLUQuantize):
        def pattern(self):
            return LayerPattern("Activation", config={"activation": "relu"}, inputs=[LayerPattern(producers)])

    class Layout(quantize_layout_transform.QuantizeLayoutTransform):
        def apply(self, model, layer_quantize_map):
            transforms = [
                T.InputLayerQuantize(), T.SeparableConv1DQuantize(), T.SeparableConvQuantize(),
                T.Conv2DReshapeBatchNormReLUQuantize(), T.Conv2DReshapeBatchNormActivationQuantize(),
                T.Conv2DBatchNormReLUQuantize(), T.Conv2DBatchNormActivationQuantize(),
                T.Conv2DReshapeBatchNormQuantize(), T.Conv2DBatchNormQuantize(),
                T.ConcatTransform6Inputs(), T.ConcatTransform5Inputs(), T.ConcatTransform4Inputs(),
                T.ConcatTransform3Inputs(), T.ConcatTransform(), T.DenseBatchNormQuantize(),
                T.DenseBatchNormReLUQuantize(), T.DenseBatchNormActivationQuantize(),
                ReLUQuantize(), ReluActivationQuantize(),
            ]
            return model_transformer.ModelTransformer(
                model, transforms, set(layer_quantize_map.keys()), layer_quantize_map).transform()

    class Scheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):
        def get_layout_transformer(self):
            return Layout()

    return Scheme()


def quantize_scope():
    """tfmot's scope plus nothing else: our layers are registered Keras serializables."""
    return _tfmot().quantization.keras.quantize_scope()


# ---------------------------------------------------------------------------------------------
# 1. BatchNorm folding into transposed convolutions


def _inbound(layer_config: dict) -> list[list]:
    """[[producer, node_index, tensor_index, kwargs], ...] of a Keras 2 functional layer config."""
    return [entry for node in layer_config["inbound_nodes"] for entry in node]


def fold_batchnorm(model) -> tuple:
    """A copy of `model` with every BN after a transposed conv folded into it (exact).

    kernel' = kernel * g on the output-channel axis and bias' = beta + (bias - mean) * g, with
    g = gamma / sqrt(var + eps). Folded only where the conv has a linear activation, feeds the BN
    alone, and the BN normalises the last axis. Returns (model, [{"bn", "into"}]); the model is
    returned unchanged when there is nothing to fold.
    """
    if not getattr(model, "_is_graph_network", False):
        raise ExporterError(f"{model.name}: QAT needs a functional Keras model")
    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    consumers = collections.Counter(entry[0] for lc in config["layers"] for entry in _inbound(lc))
    for out in config["output_layers"]:
        consumers[out[0]] += 1
    renames, folded = {}, []
    for lc in config["layers"]:
        layer = by_name[lc["name"]]
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        inbound = _inbound(lc)
        if len(lc["inbound_nodes"]) != 1 or len(inbound) != 1:
            continue
        conv = by_name[inbound[0][0]]
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        if (type(conv).__name__ not in FOLDABLE or consumers[conv.name] != 1 or len(layer.axis) != 1
                or axis not in (-1, len(layer.input_shape) - 1)
                or keras.activations.serialize(conv.activation) not in ("linear", None)):
            continue
        renames[layer.name] = conv.name
        folded.append({"bn": layer.name, "into": conv.name})
    if not folded:
        return model, []
    conv_names = {f["into"] for f in folded}
    new_layers = []
    for lc in config["layers"]:
        if lc["name"] in renames:
            continue
        lc = dict(lc)
        if lc["name"] in conv_names:
            lc["config"] = {**lc["config"], "use_bias": True}
        lc["inbound_nodes"] = [[[renames.get(e[0], e[0]), *e[1:]] for e in node]
                               for node in lc["inbound_nodes"]]
        new_layers.append(lc)
    config = {**config, "layers": new_layers,
              "output_layers": [[renames.get(o[0], o[0]), *o[1:]] for o in config["output_layers"]]}
    clone = keras.Model.from_config(config)
    for layer in clone.layers:
        old = by_name[layer.name]
        if layer.name in conv_names:
            bn = by_name[next(f["bn"] for f in folded if f["into"] == layer.name)]
            layer.set_weights(_folded_weights(old, bn))
        else:
            layer.set_weights(old.get_weights())
    return clone, folded


def _folded_weights(conv, bn) -> list[np.ndarray]:
    kernel = conv.kernel.numpy().astype(np.float64)  # [k, k, out, in]
    out_ch = kernel.shape[2]
    bias = conv.bias.numpy().astype(np.float64) if getattr(conv, "bias", None) is not None else np.zeros(out_ch)
    gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else np.ones(out_ch)
    beta = bn.beta.numpy().astype(np.float64) if bn.center else np.zeros(out_ch)
    mean = bn.moving_mean.numpy().astype(np.float64)
    var = bn.moving_variance.numpy().astype(np.float64)
    g = gamma / np.sqrt(var + bn.epsilon)
    return [(kernel * g[None, None, :, None]).astype(np.float32), (beta + (bias - mean) * g).astype(np.float32)]


# ---------------------------------------------------------------------------------------------
# 2. Annotation


def _decide(layer, producers: dict, consumers: collections.Counter, registry) -> tuple[str, str]:
    cls = type(layer).__name__
    if isinstance(layer, keras.layers.InputLayer):
        return "input", "pixels: tfmot adds its own input quantizer (QuantizeLayer) after it"
    if isinstance(layer, keras.Model):
        raise ExporterError(f"{layer.name}: a Keras model nested inside another cannot be quantised "
                            "by tfmot; build the architecture as one flat functional graph")
    if cls in UNWRAPPABLE:
        return FLOAT, UNWRAPPABLE[cls]
    if isinstance(layer, keras.layers.BatchNormalization):
        prev = producers.get(layer.name, [])
        if (len(prev) == 1 and type(prev[0]).__name__ in _TFMOT_BN_PREDECESSORS
                and consumers[prev[0].name] == 1):
            return DEFAULT, "tfmot: quantised after the BN, which the converter folds into the conv"
        return LAYER_CONFIGS["BatchNormalization"]
    if cls in LAYER_CONFIGS:
        return LAYER_CONFIGS[cls]
    if registry.supports(layer):
        return DEFAULT, "tfmot's default 8-bit registry"
    return OUTPUT, f"{cls} is unknown to tfmot and to LAYER_CONFIGS: generic output-only config"


def annotate(model) -> tuple:
    """Wrap every layer for tfmot; returns (annotated model, {layer name: (treatment, reason)})."""
    tfmot = _tfmot()
    configs = _configs()
    registry = _registry()
    by_name = {layer.name: layer for layer in model.layers}
    config = model.get_config()
    producers = {lc["name"]: [by_name[e[0]] for e in _inbound(lc)] for lc in config["layers"]}
    consumers = collections.Counter(e[0] for lc in config["layers"] for e in _inbound(lc))
    decisions = {layer.name: _decide(layer, producers, consumers, registry) for layer in model.layers}

    def wrap(layer):
        treatment, _ = decisions[layer.name]
        if treatment == DEFAULT:
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        if treatment == OUTPUT:
            return tfmot.quantization.keras.quantize_annotate_layer(
                layer, configs.Default8BitOutputQuantizeConfig())
        if treatment == NOOP:
            return tfmot.quantization.keras.quantize_annotate_layer(layer, configs.NoOpQuantizeConfig())
        return layer  # input layers and what tfmot cannot wrap

    with quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=wrap)
    return annotated, decisions


def _quantizer_count(layer) -> int:
    """Fake-quant points a (possibly wrapped) layer of a QAT model has: weights, activations, output."""
    tfmot = _tfmot()
    if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2) or type(layer).__name__.startswith("QuantizeWrapper"):
        qc = layer.quantize_config
        inner = layer.layer
        n = len(qc.get_weights_and_quantizers(inner)) + len(qc.get_output_quantizers(inner))
        # Activation quantizers that actually quantize (QuantizeAwareActivation with a quantizer).
        for _, quantizer in qc.get_activations_and_quantizers(inner):
            n += quantizer is not None
        return n
    return 0


def qat_model(float_model, config):
    """A tfmot QAT model of `float_model` (weights copied), with `.qat_info` (a `QATInfo`).

    Not compiled: `fine_tune` compiles and trains it.
    """
    del config  # the graph carries everything; kept for a signature uniform with to_int8_tflite
    tfmot = _tfmot()
    folded_model, folded = fold_batchnorm(float_model)
    annotated, decisions = annotate(folded_model)
    with quantize_scope():
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=_scheme())
    qat.qat_info = QATInfo(_records(folded_model, float_model, qat, decisions, folded), folded,
                           float_graph=folded_model, frozen_batchnorms=freeze_batchnorm(qat))
    return qat


def export_graph_qat_model(float_model, config):
    """A tfmot QAT model of `float_model`'s EXPORT graph (`exporter.convert.signature.export_model`
    at any batch: the architecture's `export_options` with its weights moved by `export_weights`,
    the output contract applied), so the fine-tuned int8 file gets the same graph rewrites as the
    post-training one: UNet's phase convs with the decoder BNs folded, DeepLab's folded hard-swish
    1/6 and separable final resize, selfie's fused head. The export graph computes the same function
    as the training graph, so the float model stays the distillation teacher; the activation ranges
    start from the export graph's own tensors (`calibrate_ranges`), which is where the int8 file's
    quantisation points are. `to_int8_tflite` rebuilds the same graph at batch 1.

    Before (training graph wrapped): the QAT UNet file at 128x128 cost 48.27 M A76 instructions
    against the post-training file's 29.73 M (its TRANSPOSE_CONVs and decoder BN MUL/ADDs)."""
    from exporter.convert.signature import export_model

    qat = qat_model(export_model(float_model, config, batch_size=None), config)
    qat.qat_info.graph = "export"
    return qat


def freeze_batchnorm(qat) -> int:
    """Pin every BatchNormalization of a QAT model to inference mode; returns how many.

    quantize_apply rebuilds the graph without any `training=False` call argument, so in `fit` each
    BN would normalise with the batch's statistics and move its moving averages: the model being
    fine-tuned is then not the float model it started from, and the int8 file drifts from it.
    Measured on the trained DeepLab (128 px, 2 epochs): held-out agreement of the QAT model with
    float 98.54 % with BNs training, 99.00 % frozen (learning rate 1e-5). A non-trainable Keras 2 BN
    runs in inference mode (its gamma and beta stay fixed too; the convolutions adapt).
    """
    found = batchnorms(qat)
    for bn in found:
        bn.trainable = False
    return len(found)


def batchnorms(qat) -> list:
    """The BatchNormalization layers of a QAT model, unwrapped from tfmot's QuantizeWrapper."""
    inner = [getattr(layer, "layer", layer) for layer in qat.layers]
    return [layer for layer in inner if isinstance(layer, keras.layers.BatchNormalization)]


def calibrate_ranges(qat, images: np.ndarray, batch_size: int = 8, percentile: float = DEFAULT_PERCENTILE) -> int:
    """Start every activation range at the float model's over `images`; returns how many.

    tfmot starts each moving-average range at [-6, 6] and moves it with an EMA decay of 0.999, so a
    short fine-tune leaves ReLU6 outputs with half their int8 codes spent on negative values and
    wide tensors clipped at 6. Measuring the folded float model (what each wrapped layer computes)
    on representative samples, as post-training calibration does, gives QAT a calibrated start:
    output and post-activation ranges from each layer's output, pre-activation ranges (softmax,
    sigmoid, tanh, gelu activations) from its output with the activation switched off. The input
    quantizer gets the pixel range [0, 255] (widened if the samples exceed it). Each range is the
    `percentile`-th percentile of the values, as post-training int8 narrows its ranges
    (`exporter.convert.ranges`; 100: min/max). Measured on the trained DeepLab (128 px, 2 epochs at
    1e-5, distillation): held-out agreement of the int8 file 99.10 % from min/max, 99.24 % from
    the 99.99th percentile, 98.42 % from the 99.9th.
    """
    info = qat.qat_info
    graph = info.float_graph
    known = {layer.name for layer in graph.layers}
    post, pre = {}, {}  # inner layer name -> [(variable, "min"|"max")]
    input_vars = []
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        for w in layer.weights:
            kind, _, end = w.name.split(":")[0].split("/")[-1].rpartition("_")
            if end not in ("min", "max"):
                continue
            if inner is None:
                if type(layer).__name__ == "QuantizeLayer":
                    input_vars.append((w, end))
            elif inner.name in known and kind in ("output", "post_activation"):
                post.setdefault(inner.name, []).append((w, end))
            elif inner.name in known and kind == "pre_activation":
                pre.setdefault(inner.name, []).append((w, end))
    for targets, linear in ((post, False), (pre, True)):
        if targets:
            ranges = _measure(graph, list(targets), images, batch_size, linear, percentile)
            for name, (lo, hi) in ranges.items():
                for var, end in targets[name]:
                    var.assign(min(lo, 0.0) if end == "min" else max(hi, 0.0))
    pixels = images.astype(np.float32)
    for var, end in input_vars:
        var.assign(min(0.0, float(pixels.min())) if end == "min" else max(255.0, float(pixels.max())))
    info.ranges_calibrated = len(images)
    info.range_percentile = percentile
    return len(post) + len(pre)


def _measure(graph, names: list[str], images: np.ndarray, batch_size: int, linear: bool,
             percentile: float = 100.0) -> dict:
    """{layer: (low, high)} of the named layers' outputs (before their activation if `linear`):
    the `percentile`-th percentile at each end (100: min and max)."""
    saved = {}
    if linear:
        for name in names:
            layer = graph.get_layer(name)
            saved[name], layer.activation = layer.activation, keras.activations.linear
    try:
        probe = keras.Model(graph.inputs, [graph.get_layer(n).output for n in names])
        outputs = probe.outputs if isinstance(probe.outputs, list) else [probe.outputs]
        tails = {name: TailTracker(len(images) * int(np.prod(out.shape[1:])), percentile)
                 for name, out in zip(names, outputs)}
        for start in range(0, len(images), batch_size):
            outs = probe(images[start:start + batch_size].astype(np.float32), training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            for name, out in zip(names, outs):
                tails[name].add(out.numpy())
    finally:
        for name, activation in saved.items():
            graph.get_layer(name).activation = activation
    return {name: tails[name].range() for name in names}


# Layers TFLite fuses into the op after them (or whose output tfmot quantises at the next layer).
_FUSABLE = {"Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "Dense", "BatchNormalization", "Add",
            "ReLU", "Activation", "Concatenate"}
_RANGE_PRESERVING = {"Reshape", "Permute", "Flatten", "Dropout", "ZeroPadding2D", "Cropping2D",
                     "MaxPooling2D", "GlobalMaxPooling2D", "SpatialDropout2D", "UpSampling2D"}


def _records(model, float_model, qat, decisions, folded) -> list[LayerRecord]:
    wrapped, input_quantizers = {}, 0
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        if inner is not None:
            wrapped[inner.name] = layer
        elif type(layer).__name__ == "QuantizeLayer" and layer.quantizer is not None:
            input_quantizers += 1
    consumers = collections.defaultdict(list)
    for lc in model.get_config()["layers"]:
        for e in _inbound(lc):
            consumers[e[0]].append(lc["name"])
    count = {layer.name: (_quantizer_count(wrapped[layer.name]) if layer.name in wrapped else 0)
             for layer in model.layers}
    classes = {layer.name: type(layer).__name__ for layer in model.layers}

    def quantised_at(name, seen=()):
        """The layer whose output quantizer covers `name`'s output, following fusable layers."""
        if count[name]:
            return name
        if classes[name] not in _FUSABLE or len(consumers[name]) != 1 or name in seen:
            return None
        return quantised_at(consumers[name][0], (*seen, name))

    records = []
    for layer in model.layers:
        name, cls = layer.name, type(layer).__name__
        treatment, reason = decisions[name]
        n = input_quantizers if treatment == "input" else count[name]
        quantised = n > 0
        if not quantised and treatment == DEFAULT:
            at = quantised_at(name)
            if at is not None:
                quantised, reason = True, f"no quantizer of its own: fused, quantised at {at}'s output"
            elif cls in _RANGE_PRESERVING:
                reason = "tfmot default: range-preserving, no quantizer (int8 with its input's scale)"
            elif cls == "Softmax":
                reason = ("tfmot default: no quantizer; TFLite's int8 SOFTMAX has a fixed output scale "
                          "(1/256), the converter calibrates its input")
            else:
                reason = "tfmot default: no quantizer of its own; the converter calibrates its output"
        records.append(LayerRecord(name, cls, treatment, reason, n, quantised))
    by_name = {layer.name: layer for layer in float_model.layers}
    for f in folded:
        records.append(LayerRecord(f["bn"], type(by_name[f["bn"]]).__name__, "folded",
                                   f"folded exactly into {f['into']} before QAT (tfmot does not fold "
                                   "a BN after a transposed conv)", 0, False))
    return records


# ---------------------------------------------------------------------------------------------
# 3. Fine-tuning


def fine_tune(qat, splits, spec, epochs: int = 1, learning_rate: float = 1e-4, batch_size: int = 16,
              seed: int = 0, steps_per_epoch: int | None = None, calibration_samples: int = 64,
              teacher=None, range_percentile: float = DEFAULT_PERCENTILE) -> list[float]:
    """Train the QAT model on the training split (flips, as `exporter.train`); per-epoch losses.

    With a `teacher` (the float model) the QAT model fits the teacher's class probabilities on each
    batch (`distiller`: KL divergence, soft targets); without one, the split's masks (sparse
    cross-entropy). First (once) its activation ranges start from the float model's on
    `calibration_samples` stratified training samples (`calibrate_ranges`, at `range_percentile`);
    0 keeps tfmot's [-6, 6] start.
    """
    from exporter.train import _dataset, compile_for_training, divergence_guard

    if epochs < 1:
        raise ExporterError("QAT needs at least one training step (weight ranges are set in training)")
    info = getattr(qat, "qat_info", None)
    if info is not None and not info.ranges_calibrated and calibration_samples:
        from calibration.sampling import representative_indices

        idx, _ = representative_indices(splits.train, calibration_samples, seed=seed)
        calibrate_ranges(qat, splits.train.images[idx], percentile=range_percentile)
    if teacher is None:
        trainee = compile_for_training(qat, spec.output, learning_rate)
    else:
        trainee = distiller(qat, teacher, spec.output)
        trainee.compile(optimizer=keras.optimizers.Adam(learning_rate))
    tf.random.set_seed(seed)
    history = trainee.fit(_dataset(splits, batch_size, seed), epochs=epochs, verbose=0,
                          steps_per_epoch=steps_per_epoch,
                          callbacks=[divergence_guard(learning_rate, "--qat-lr")])
    return [float(x) for x in history.history["loss"]]


def distillation_loss(teacher_scores, student_scores, output: str):
    """Mean over pixels of KL(teacher || student) between class distributions.

    Soft targets keep what an argmax throws away: how close each pixel is to a class boundary,
    which is where int8 rounding flips the prediction. Measured on the trained DeepLab (128 px,
    BNs frozen, 2 epochs at 1e-5): held-out agreement of the QAT model with float 99.00 % fitting
    the float model's argmax, 99.24 % fitting its probabilities.
    """
    if output == "logits":
        log_t = tf.nn.log_softmax(teacher_scores, axis=-1)
        log_s = tf.nn.log_softmax(student_scores, axis=-1)
    else:  # probabilities already
        eps = 1e-7
        log_t = tf.math.log(tf.clip_by_value(teacher_scores, eps, 1.0))
        log_s = tf.math.log(tf.clip_by_value(student_scores, eps, 1.0))
    return tf.reduce_mean(tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), axis=-1))


def distiller(student, teacher, output: str):
    """A Keras model whose `fit` trains `student` toward `teacher`'s outputs (teacher frozen).

    Only a training harness: the QAT model itself stays the flat graph that is converted.
    """

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__(name=f"{student.name}_distiller")
            self.student, self.teacher = student, teacher

        def call(self, inputs, training=None):
            return self.student(inputs, training=training)

        def train_step(self, data):
            images = data[0] if isinstance(data, (list, tuple)) else data
            target = self.teacher(images, training=False)
            with tf.GradientTape() as tape:
                loss = distillation_loss(target, self.student(images, training=True), output)
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return {"loss": loss}

    return Distiller()


# ---------------------------------------------------------------------------------------------
# 4. Conversion


def _check_trained(qat) -> None:
    kernel_max = [w for layer in qat.layers for w in layer.weights
                  if w.name.split(":")[0].split("/")[-1] in ("kernel_max", "depthwise_kernel_max")]
    if kernel_max and all(np.all(w.numpy() == 6.0) for w in kernel_max):
        raise ConversionError("the QAT model's weight ranges are still tfmot's initial [-6, 6]: "
                              "fine-tune it for at least one step before converting")
    for layer in qat.layers:
        if type(layer).__name__ != "QuantizeLayer" or layer.quantizer is None:
            continue
        ranges = {w.name.rsplit("/", 1)[-1].split(":")[0]: float(w.numpy()) for w in layer.weights
                  if w.shape == ()}
        lo = next((v for k, v in ranges.items() if k.endswith("_min")), None)
        hi = next((v for k, v in ranges.items() if k.endswith("_max")), None)
        if lo is not None and hi is not None and hi <= lo:
            raise ConversionError(f"the QAT model's input quantizer has range [{lo:g}, {hi:g}]: "
                                  "fine-tune it for at least one step before converting")


def _weight_key(variable) -> tuple:
    # "quant_up0_deconv/kernel_min:0" with its shape. Keras appends _1, _2 to auto-named layers
    # (quantize_layer -> quantize_layer_1) built twice in one process: numbers are dropped.
    return re.sub(r"_\d+", "", variable.name), tuple(variable.shape)


def export_qat_model(qat, config):
    """The QAT graph rebuilt at a static batch of 1 with `qat`'s trained weights (fake-quant ranges
    included), as `exporter.convert.signature.export_model` does for float models: the export
    graph where `qat` wraps it (`export_graph_qat_model`), else the training graph."""
    from architectures import build
    from exporter.convert.signature import export_graph

    info = getattr(qat, "qat_info", None)
    if getattr(info, "graph", "training") == "export":
        fixed_float = export_graph(config, batch_size=1)
    else:
        fixed_float = build(dataclasses.replace(config, batch_size=1))
    fixed = qat_model(fixed_float, config)
    src, dst = qat.weights, fixed.weights
    if len(src) != len(dst) or any(_weight_key(a) != _weight_key(b) for a, b in zip(src, dst)):
        first = next((f"{a.name} {a.shape} vs {b.name} {b.shape}" for a, b in zip(src, dst)
                      if _weight_key(a) != _weight_key(b)), f"{len(src)} vs {len(dst)} weights")
        raise ConversionError(f"batch-1 QAT rebuild of {config.name} does not line up with the trained "
                              f"QAT model: {first}")
    fixed.set_weights(qat.get_weights())
    return fixed


def to_int8_tflite(qat, config, calibration_images: np.ndarray, io: str = "uint8",
                   range_percentile: float = DEFAULT_PERCENTILE) -> bytes:
    """Full-integer TFLite of a fine-tuned QAT model (the int8 recipe of `to_tflite`; the ops that
    carry no fake-quant range are calibrated, with ranges narrowed to `range_percentile`)."""
    from exporter.convert.tflite import to_tflite

    _check_trained(qat)
    fixed = export_qat_model(qat, config)
    return to_tflite(fixed, config, "int8", calibration_images, io=io, range_percentile=range_percentile)
