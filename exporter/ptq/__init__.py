"""Post-training methods that repair what int8 rounding breaks (issue 18).

Each method takes the float Keras model that is converted (`export_model`'s batch-1 rebuild) and
changes its weights only (same layers, same graph; `relu_swap` alone changes activations, ReLU6 to
ReLU, so CLE can act on MobileNet pairs), so the TFLite converter's own int8 rounding of the result
is what ships; `apply_methods` runs a list of them on a copy and returns the copy
with a recipe of what each changed. `choose_method` is `--ptq-method auto`'s selection.

Methods run in `METHODS` order whatever order they are named in: the ReLU swap first (it makes
pairs equalisable), the rescalings next (they
change the ranges the weight grid is built on), then AdaRound (fixes the weights on that grid),
then bias correction (corrects the mean shift the final weights' rounding leaves).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from exporter.errors import ExporterError


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    run: Callable  # run(model, calibration_images) -> recipe entry (dict); changes model in place
    applies_to: str
    description: str
    applicable: Callable  # applicable(model) -> bool: the model has a layer pattern it acts on


def _relu_swap(model, images):
    from exporter.ptq.relu_swap import swap

    return swap(model)


def _has_relu6(model) -> bool:
    from exporter.ptq.relu_swap import relu6_layers

    return bool(relu6_layers(model))


def _equalize(model, images):
    from exporter.ptq.equalize import equalize

    return equalize(model, images=images)


def _smooth(model, images):
    from exporter.ptq.smoothquant import smooth

    return smooth(model, images)


def _adaround(model, images):
    from exporter.ptq.adaround import adaround

    return adaround(model, images)


def _bias(activations: bool):
    def run(model, images):
        from exporter.ptq.bias_correction import correct_biases

        return correct_biases(model, images, activations=activations)

    return run


def _has_pairs(model) -> bool:
    from exporter.ptq.equalize import pairs

    return bool(pairs(model))


def _has_smooth_edges(model) -> bool:
    from exporter.ptq.smoothquant import edges

    return bool(edges(model))


def _has_convs(model) -> bool:
    from exporter.ptq.adaround import targets

    return bool(targets(model))


def _has_biases(model) -> bool:
    from exporter.ptq.bias_correction import correctable

    return bool(correctable(model))


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("relu_swap", _relu_swap, "ReLU6 activations (UNet's MobileNetV2 encoder)",
           "ReLU6 replaced by ReLU so `cle` can equalise those pairs (changes the float function where "
           "a pre-activation exceeded 6; measured like any method)", _has_relu6),
    Method("smoothquant", _smooth, "LayerNorm -> Dense/conv and linear -> Dense/1x1-conv edges (SegFormer, selfie)",
           "SmoothQuant: per-channel activation outliers moved into the next matmul's weights, alpha measured per edge",
           _has_smooth_edges),
    Method("cle", _equalize, "Conv/depthwise(+BN) -> ReLU or nothing -> conv/depthwise/Dense pairs (selfie, DeepLab's "
           "ReLU blocks; not ReLU6/hard-swish)",
           "cross-layer equalisation: output/input channel ranges of consecutive layers made equal (exact in "
           "float), then high-bias absorption into pointwise consumers (exact on the calibration samples)",
           _has_pairs),
    Method("adaround", _adaround, "Conv2D and DepthwiseConv2D weights (up to adaround.MAX_LAYERS, graph order)",
           "AdaRound: learned up/down rounding per weight, delivered on the converter's int8 grid",
           _has_convs),
    Method("bias_correction", _bias(False), "every conv/depthwise/Dense with a bias or folded BN",
           "empirical bias correction of the mean output shift weight rounding causes",
           _has_biases),
    Method("bias_correction_act", _bias(True), "every conv/depthwise/Dense with a bias or folded BN",
           "empirical bias correction including 8-bit activation rounding",
           _has_biases),
)}
NONE = "none"  # the plain int8 file, a candidate for `auto`
# Methods that model the converter's per-channel weight grid (exporter.ptq.grid); wrong for --per-tensor.
PER_CHANNEL_ONLY = ("adaround", "bias_correction", "bias_correction_act")


def check_methods(methods: Sequence[str]) -> list[str]:
    """The named methods in run order; ExporterError (one line) for an unknown name."""
    unknown = [m for m in methods if m not in METHODS and m != NONE]
    if unknown:
        raise ExporterError(f"unknown --ptq-method {', '.join(unknown)}; choose from {', '.join([NONE, *METHODS])} or auto")
    if "bias_correction" in methods and "bias_correction_act" in methods:
        raise ExporterError("--ptq-method: bias_correction and bias_correction_act are alternatives; name one")
    return [m for m in METHODS if m in methods]


def clone(model):
    """A copy of `model` with its weights (the methods change the copy, never the caller's model)."""
    from exporter.keras import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def apply_methods(model, config, calibration_images: np.ndarray, methods: Sequence[str],
                  per_tensor: bool = False) -> tuple[object, dict]:
    """Run `methods` on a copy of the export model `model`; (the copy, the recipe).

    recipe = {"methods": [names in run order], "seconds": {name: s}, "skipped": {name: why},
    name: that method's own entry} (cle: pairs equalised, precision before/after, ReLU6 layers
    skipped; smoothquant: per edge alpha and the measured error before/after; adaround: per layer
    the output error of nearest vs learned rounding and the fraction of weights flipped;
    bias_correction*: layers corrected and their mean |shift|). `config` is the model's
    ModelConfig (recorded as its name; the methods need only the graph). `per_tensor`: the int8
    file will scale weights per tensor, which the grid-based methods do not model (refused).
    """
    import time

    order = check_methods(methods)
    grid_based = [m for m in order if m in PER_CHANNEL_ONLY]
    if per_tensor and grid_based:
        raise ExporterError(f"--ptq-method {', '.join(grid_based)} models per-channel int8 weights; "
                            "drop --per-tensor or choose among smoothquant, cle")
    result = clone(model)
    recipe: dict = {"model": getattr(config, "name", None), "methods": [], "seconds": {}, "skipped": {}}
    images = np.asarray(calibration_images, np.float32)
    for name in order:
        method = METHODS[name]
        if not method.applicable(result):
            recipe["skipped"][name] = f"no layer pattern it applies to ({method.applies_to})"
            continue
        start = time.perf_counter()
        recipe[name] = method.run(result, images)
        recipe["seconds"][name] = round(time.perf_counter() - start, 2)
        recipe["methods"].append(name)
    return result, recipe


def applicable_methods(model, per_tensor: bool = False) -> list[str]:
    """The methods with a layer pattern in `model`, in run order (`per_tensor`: without the ones
    apply_methods refuses for per-tensor weights)."""
    return [name for name, method in METHODS.items()
            if method.applicable(model) and not (per_tensor and name in PER_CHANNEL_ONLY)]


def choose_method(candidates: Sequence[Sequence[str] | str], score_fn: Callable[[tuple[str, ...]], float]) -> dict:
    """`--ptq-method auto`: the candidate (a method list; "none" or () for the plain file) whose
    `score_fn` is highest, ties to the earlier candidate (list "none" first so the plain file wins
    ties). score_fn should convert with the candidate and score on a held-out slice disjoint from
    the report's samples (`exporter.ptq.auto.agreement_score`). Returns {"chosen": (names...),
    "scores": {"+".join(names) or "none": score}}, what the report records."""
    scores: dict[str, float] = {}
    best, best_score = None, -np.inf
    for candidate in candidates:
        names = (candidate,) if isinstance(candidate, str) else tuple(candidate)
        names = tuple(n for n in names if n != NONE)
        check_methods(names)
        score = float(score_fn(names))
        scores["+".join(names) or NONE] = score
        if score > best_score:
            best, best_score = names, score
    if best is None:
        raise ExporterError("--ptq-method auto: no candidate method to choose from")
    return {"chosen": best, "scores": scores}
