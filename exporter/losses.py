"""Training losses for `--loss`: cross-entropy, Dice, Jaccard (IoU) and focal, and weighted sums.

A loss spec is a `+`-separated sum of terms, each optionally scaled: `ce`, `dice`, `ce+dice`,
`0.5*ce+dice`. Every term reads the model's scores the way its head writes them (logits or
softmax probabilities, `ArchSpec.output`), skips pixels labelled IGNORE_LABEL, and weights classes
by `--class-weights` (a list, or `auto`: inverse pixel frequency in the training split).
"""

from __future__ import annotations

import re

import numpy as np

from calibration.dataset import IGNORE_LABEL
from exporter.errors import ExporterError

DEFAULT_LOSS = "ce"
FOCAL_GAMMA = 2.0  # Lin et al.'s default: easy pixels (p_t > 0.5) count at most a quarter
EPS = 1e-6  # smooths Dice/Jaccard for classes absent from a batch (no 0/0)
# Names a user may write, and the term each stands for.
TERMS = {"ce": "ce", "crossentropy": "ce", "dice": "dice", "jaccard": "jaccard", "iou": "jaccard", "focal": "focal"}
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z]+)\s*$")


class LossError(ExporterError):
    """An unknown loss name, a malformed sum, or class weights that do not fit the classes."""


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """`0.5*ce+dice` -> [(0.5, "ce"), (1.0, "dice")]; LossError names what is wrong."""
    terms = []
    for part in spec.lower().split("+"):
        match = _TERM.match(part)
        if not match or match.group(2) not in TERMS:
            raise LossError(f"--loss {spec!r}: unknown term {part.strip()!r}; use {', '.join(sorted(set(TERMS.values())))}"
                            " or a weighted sum such as ce+dice or 0.5*ce+dice")
        weight = float(match.group(1)) if match.group(1) else 1.0
        if weight <= 0:
            raise LossError(f"--loss {spec!r}: the weight of {match.group(2)!r} must be positive")
        terms.append((weight, TERMS[match.group(2)]))
    return terms


def parse_class_weights(text: str | None, num_classes: int, masks: np.ndarray | None = None) -> list[float] | None:
    """--class-weights: None, `auto` (inverse frequency of `masks`' labels), or one number per class."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        if masks is None:
            raise LossError("--class-weights auto needs the training masks")
        return auto_class_weights(masks, num_classes)
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise LossError(f"--class-weights {text!r}: expected comma-separated numbers such as 1,4,4, or auto") from None
    if len(weights) != num_classes:
        raise LossError(f"--class-weights {text!r}: {len(weights)} weight(s) for {num_classes} classes")
    if any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
        raise LossError(f"--class-weights {text!r}: weights must be finite, non-negative and not all zero")
    return weights


def auto_class_weights(masks, num_classes: int, chunk: int = 256) -> list[float]:
    """Inverse pixel frequency, scaled so the classes present average 1; absent classes get 1 (no signal).
    `masks`: an array or streamed masks (calibration.stream), counted `chunk` masks at a time."""
    counts = np.zeros(256, np.int64)
    for start in range(0, len(masks), chunk):
        counts += np.bincount(np.asarray(masks[start : start + chunk]).ravel(), minlength=256)
    counts = counts[:num_classes].astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts[present].sum() / counts[present]
    weights[present] /= weights[present].mean()
    return [round(float(w), 6) for w in weights]


def make_loss(spec: str, output: str, num_classes: int, class_weights: list[float] | None = None):
    """A Keras loss function (y_true [B,H,W,1] class ids, y_pred [B,H,W,C] scores) -> scalar."""
    from exporter.keras import tf

    terms = parse_loss(spec)
    from_logits = output == "logits"
    weights = tf.constant(class_weights if class_weights is not None else [1.0] * num_classes, tf.float32)

    def loss(y_true, y_pred):
        labels = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(y_pred)[:-1])
        valid = tf.cast(tf.not_equal(labels, IGNORE_LABEL), tf.float32)
        safe = tf.where(labels == IGNORE_LABEL, 0, labels)  # any class; its pixel is masked out below
        one_hot = tf.one_hot(safe, num_classes) * valid[..., None]
        y_pred = tf.cast(y_pred, tf.float32)
        if from_logits:
            log_p = tf.nn.log_softmax(y_pred)
        else:
            log_p = tf.math.log(tf.clip_by_value(y_pred, EPS, 1.0))
        probs = tf.exp(log_p) * valid[..., None]
        pixel_w = tf.gather(weights, safe) * valid
        total = 0.0
        for scale, name in terms:
            total += scale * _TERMS[name](one_hot, log_p, probs, pixel_w, weights)
        return total

    loss.__name__ = "loss_" + re.sub(r"[^a-z0-9]+", "_", spec.lower())
    return loss


def _cross_entropy(one_hot, log_p, probs, pixel_w, weights):
    from exporter.keras import tf

    nll = -tf.reduce_sum(one_hot * log_p, axis=-1)
    return tf.reduce_sum(pixel_w * nll) / tf.maximum(tf.reduce_sum(pixel_w), EPS)


def _focal(one_hot, log_p, probs, pixel_w, weights):
    from exporter.keras import tf

    log_pt = tf.reduce_sum(one_hot * log_p, axis=-1)
    focal = -((1.0 - tf.exp(log_pt)) ** FOCAL_GAMMA) * log_pt
    return tf.reduce_sum(pixel_w * focal) / tf.maximum(tf.reduce_sum(pixel_w), EPS)


def _overlap(one_hot, probs):
    """Per class, over the batch: soft intersection and the sum of predicted and true pixels."""
    from exporter.keras import tf

    axes = tf.range(tf.rank(probs) - 1)
    return tf.reduce_sum(one_hot * probs, axis=axes), tf.reduce_sum(one_hot + probs, axis=axes)


def _class_mean(score, weights):
    from exporter.keras import tf

    return tf.reduce_sum(weights * score) / tf.reduce_sum(weights)


def _dice(one_hot, log_p, probs, pixel_w, weights):
    inter, total = _overlap(one_hot, probs)
    return 1.0 - _class_mean((2.0 * inter + EPS) / (total + EPS), weights)


def _jaccard(one_hot, log_p, probs, pixel_w, weights):
    inter, total = _overlap(one_hot, probs)
    return 1.0 - _class_mean((inter + EPS) / (total - inter + EPS), weights)


_TERMS = {"ce": _cross_entropy, "focal": _focal, "dice": _dice, "jaccard": _jaccard}
