"""Accuracy parity on held-out samples: argmax agreement with the float model, mIoU, per-class IoU.

IoU is computed from one confusion matrix accumulated over all held-out pixels (not averaged
per image); mIoU averages the classes that occur in the ground truth or the prediction.
Pixels labelled IGNORE_LABEL count for neither. A prediction is the argmax of the scores; a
1-channel (sigmoid) head predicts class 1 where its probability is above 0.5 (`class_map`).
"""

from __future__ import annotations

import numpy as np

from calibration.dataset import IGNORE_LABEL


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    keep = truth != IGNORE_LABEL
    idx = truth[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class; NaN where a class is in neither truth nor prediction."""
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou_from_confusion(cm: np.ndarray) -> float:
    iou = per_class_iou(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def class_map(scores: np.ndarray, logits: bool = False) -> np.ndarray:
    """Class per pixel of scores [..., C]: the argmax, or for C == 1 (a sigmoid head) probability
    > 0.5 (`logits`: the head outputs logits, so > 0)."""
    if scores.shape[-1] == 1:
        return (scores[..., 0] > (0.0 if logits else 0.5)).astype(np.uint8)
    return np.argmax(scores, axis=-1).astype(np.uint8)


def evaluate(runner, images: np.ndarray, masks: np.ndarray, num_classes: int, reference_preds=None,
             reference_scores=None, classes_of=class_map) -> dict:
    """Run `runner` on every held-out image; compare with ground truth and the float reference.

    `classes_of(scores [H, W, C]) -> classes [H, W]` turns scores into a prediction (`class_map`)."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    preds, agree, max_diff = [], 0, 0.0
    scores_out = []
    for i in range(len(images)):
        scores = runner.predict(images[i : i + 1])[0]
        pred = classes_of(scores)
        preds.append(pred)
        cm += confusion(masks[i], pred, num_classes)
        if reference_preds is not None:
            agree += int((pred == reference_preds[i]).sum())
        if reference_scores is not None:
            max_diff = max(max_diff, float(np.abs(scores - reference_scores[i]).max()))
        else:
            scores_out.append(scores)
    iou = per_class_iou(cm)
    result = {
        "preds": np.stack(preds),
        "confusion": cm,
        "miou": miou_from_confusion(cm),
        "per_class_iou": iou,
    }
    if reference_preds is not None:
        result["agreement"] = agree / reference_preds.size
    if reference_scores is not None:
        result["max_abs_diff"] = max_diff
    else:
        result["scores"] = np.stack(scores_out)
    return result
