import numpy as np

from exporter.parity import confusion, miou_from_confusion, per_class_iou


def test_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = confusion(truth, pred, 3)
    assert cm.sum() == 7  # the ignore pixel counts for nothing
    iou = per_class_iou(cm)
    # class 0: tp 1, fp 1 (truth 2), fn 1 -> 1/3; class 1: tp 3, fp 1 -> 3/4; class 2: tp 1, fn 1 -> 1/2
    np.testing.assert_allclose(iou, [1 / 3, 3 / 4, 1 / 2])
    assert abs(miou_from_confusion(cm) - np.mean([1 / 3, 3 / 4, 1 / 2])) < 1e-12


def test_absent_class_is_not_averaged():
    truth = np.zeros((4, 4), int)
    cm = confusion(truth, truth, 3)
    assert np.isnan(per_class_iou(cm)[1:]).all()
    assert miou_from_confusion(cm) == 1.0
