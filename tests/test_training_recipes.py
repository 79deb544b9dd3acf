"""Training recipes (issue 19): losses, class weights, learning-rate schedules, augmentation and the
curves PNG each do what they claim; a resumed run replays the same rates and augmented batches."""

import numpy as np
import pytest

from calibration.augment import MAX_GRAYSCALE, Augment, apply, draw_epoch, parse_augment, warp
from calibration.dataset import IGNORE_LABEL
from exporter.errors import ExporterError
from exporter.schedules import learning_rate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Losses


def _scores(seed=0, shape=(2, 8, 8), classes=3, ignore=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (*shape, classes)).astype(np.float32)
    labels = rng.integers(0, classes, shape)
    labels[rng.random(shape) < ignore] = IGNORE_LABEL
    return logits, labels[..., None].astype(np.int32)


def _loss(spec, logits, labels, output="logits", weights=None):
    from exporter.losses import make_loss

    return float(make_loss(spec, output, logits.shape[-1], weights)(labels, logits))


def test_cross_entropy_matches_keras_from_logits_and_from_probabilities():
    from exporter.keras import keras, tf

    logits, labels = _scores()
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_LABEL)
    expected = float(reference(labels, logits))
    assert _loss("ce", logits, labels) == pytest.approx(expected, rel=1e-5)
    # A softmax head (selfie) hands over probabilities: the same loss, read the other way.
    probs = tf.nn.softmax(logits).numpy()
    assert _loss("ce", probs, labels, output="softmax") == pytest.approx(expected, rel=1e-4)
    # Reading probabilities as logits would be a different number: the head's kind matters.
    assert abs(_loss("ce", probs, labels, output="logits") - expected) > 0.1


def test_ignored_pixels_change_no_loss_and_weighted_sums_add_up():
    logits, labels = _scores(seed=1)
    other = logits.copy()
    other[labels[..., 0] == IGNORE_LABEL] = 50.0  # wild scores where the label is ignored
    for spec in ("ce", "dice", "jaccard", "focal"):
        assert _loss(spec, other, labels) == pytest.approx(_loss(spec, logits, labels), rel=1e-5), spec
    combined = 0.5 * _loss("ce", logits, labels) + _loss("dice", logits, labels)
    assert _loss("0.5*ce+dice", logits, labels) == pytest.approx(combined, rel=1e-5)


def test_overlap_losses_are_zero_when_right_and_near_one_when_wrong():
    _, labels = _scores(seed=2, ignore=0.0)
    right = np.eye(3, dtype=np.float32)[labels[..., 0]] * 40.0
    wrong = np.roll(right, 1, axis=-1)
    for spec in ("dice", "jaccard"):
        assert _loss(spec, right, labels) < 1e-4, spec
        assert _loss(spec, wrong, labels) > 0.99, spec
    # Focal down-weights pixels the model already gets right: far below CE on confident, mostly right scores.
    soft = right / 40.0 * 2.0
    assert _loss("focal", soft, labels) < 0.2 * _loss("ce", soft, labels)


def test_class_weights_weight_pixels_and_auto_favours_the_rare_class():
    from exporter.losses import auto_class_weights, parse_class_weights

    logits, labels = _scores(seed=3, ignore=0.0)
    weights = [1.0, 4.0, 0.0]
    nll = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
    y = labels[..., 0]
    per_pixel = np.take_along_axis(nll, y[..., None], -1)[..., 0]
    w = np.array(weights)[y]
    assert _loss("ce", logits, labels, weights=weights) == pytest.approx((w * per_pixel).sum() / w.sum(), rel=1e-5)

    masks = np.zeros((4, 10, 10), np.uint8)
    masks[:, :2, :5] = 1  # 10 % of the pixels
    masks[:, 9, 9] = 2  # 1 %
    masks[0, 0, 9] = IGNORE_LABEL  # not a class: no weight for it
    auto = auto_class_weights(masks, 3)
    assert auto[2] > auto[1] > auto[0] and np.mean(auto) == pytest.approx(1.0, rel=1e-4)
    assert parse_class_weights("auto", 3, masks) == auto
    for bad in ("1,2", "1,x,3", "-1,1,1", "0,0,0"):
        with pytest.raises(ExporterError, match="--class-weights"):
            parse_class_weights(bad, 3)


def _imbalanced(seed):
    """One feature per pixel; the rare class (3 % of pixels) is shifted by 1.5 standard deviations."""
    rng = np.random.default_rng(seed)
    masks = (rng.random((8, 32, 32)) < 0.03).astype(np.uint8)
    x = rng.normal(0, 1, masks.shape) + 1.5 * masks
    return x[..., None].astype(np.float32), masks


def _rare_class(spec, class_weights=None) -> tuple[float, float]:
    """(IoU, recall) of the rare class on held-out pixels, after training on `spec`."""
    from exporter.keras import keras
    from exporter.losses import make_loss

    (x, masks), (x_val, masks_val) = _imbalanced(0), _imbalanced(1)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))  # per-pixel logistic regression
    model.compile(keras.optimizers.Adam(0.05), loss=make_loss(spec, "logits", 2, class_weights))
    model.fit(x, masks[..., None], batch_size=8, epochs=150, verbose=0)
    pred, true = np.argmax(model(x_val), -1) == 1, masks_val == 1
    return (pred & true).sum() / (pred | true).sum(), (pred & true).sum() / true.sum()


@pytest.mark.slow
def test_dice_and_class_weights_favour_the_rare_class_over_cross_entropy():
    from exporter.losses import auto_class_weights

    ce_iou, ce_recall = _rare_class("ce")  # CE follows the 97:3 prior: it rarely calls the rare class
    dice_iou, _ = _rare_class("dice")
    assert dice_iou > ce_iou + 0.05, (dice_iou, ce_iou)  # about 0.16 against 0.06
    _, weighted_recall = _rare_class("ce", auto_class_weights(_imbalanced(0)[1], 2))
    assert weighted_recall > ce_recall + 0.3, (weighted_recall, ce_recall)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


def test_schedules_follow_their_formulas():
    base = 1e-3
    assert [learning_rate("constant", base, e, 5) for e in range(5)] == [base] * 5
    warm = [learning_rate("constant", base, e, 5, warmup_epochs=3) for e in range(5)]
    assert warm == pytest.approx([base / 4, base / 2, 3 * base / 4, base, base])
    cosine = [learning_rate("cosine", base, e, 6, warmup_epochs=1) for e in range(6)]
    assert cosine[1] == pytest.approx(base) and cosine[-1] == pytest.approx(0.01 * base)
    assert all(a > b for a, b in zip(cosine[1:], cosine[2:]))  # strictly falling after warm-up
    assert cosine[3] == pytest.approx(base * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 2 / 4))))
    assert [learning_rate("exponential", base, e, 4) for e in range(4)] == pytest.approx([base * 0.9**e for e in range(4)])


def test_plateau_halves_after_two_epochs_without_a_better_miou():
    mious = [0.3, 0.4, 0.4, 0.35, 0.5, 0.5, 0.45]
    history = [{"epoch": i + 1, "val_miou": m} for i, m in enumerate(mious)]
    rates = [learning_rate("plateau", 1.0, e, 8, history=history[:e]) for e in range(8)]
    # Stalls at epochs 3-4 (no better than 0.4) and 6-7 (no better than 0.5): halved after each.
    assert rates == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25]


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_grayscale_rate_is_capped_in_every_epoch():
    standard = parse_augment("standard,grayscale=0.2")
    for epoch in range(5):
        draws = draw_epoch(standard, 1000, seed=3, epoch=epoch, flip_draws=np.zeros(1000))
        assert draws.gray.sum() == 200  # exactly the rate: never more, whatever the seed
    assert draw_epoch(standard, 1000, 3, 0, np.zeros(1000)).gray.tolist() != \
        draw_epoch(standard, 1000, 3, 1, np.zeros(1000)).gray.tolist()  # other samples each epoch
    with pytest.raises(ExporterError, match="grayscale must be between 0 and 0.2"):
        parse_augment(f"standard,grayscale={MAX_GRAYSCALE + 0.05}")
    # The greyed samples really are grey, the others keep their colour.
    images = np.random.default_rng(0).uniform(0, 255, (1000, 4, 4, 3)).astype(np.float32)
    draws = draw_epoch(Augment(hflip=0, grayscale=0.2), 1000, 3, 0, np.zeros(1000))
    out, _ = apply(Augment(hflip=0, grayscale=0.2), draws, range(1000), images, np.zeros((1000, 4, 4), np.int32))
    grey = (out.max(-1) - out.min(-1)).max(axis=(1, 2)) < 1e-3
    assert grey.tolist() == draws.gray.tolist()


def _palette_scene(size=64):
    """A scene whose mask can be read back from its colours: class c is painted PALETTE[c]."""
    from calibration.synthetic import render_scene

    _, mask = render_scene(3, (size, size), 4, seed=1)
    palette = np.array([[40, 40, 40], [230, 30, 30], [30, 230, 30], [30, 30, 230]], np.float32)
    return palette[mask], mask, palette


def test_rotation_and_scale_keep_image_and_mask_aligned():
    image, mask, palette = _palette_scene()
    assert len(np.unique(mask)) >= 3
    for angle, scale, shift in ((0.2, 1.0, (0, 0)), (-0.25, 1.2, (0.7, -0.5)), (0.1, 0.8, (0, 0))):
        new_image, new_mask = warp(image, mask, angle, scale, shift)
        assert set(np.unique(new_mask)) <= set(np.unique(mask)) | {IGNORE_LABEL}
        valid = new_mask != IGNORE_LABEL
        read_back = np.argmin(((new_image[..., None, :] - palette) ** 2).sum(-1), axis=-1)
        # Bilinear images blend colours along edges only; everything else reads back as the mask says.
        assert (read_back[valid] == new_mask[valid]).mean() > 0.97, (angle, scale)
        # The test can fail: a mask moved by another angle disagrees with the image.
        _, other = warp(image, mask, angle + 0.3, scale, shift)
        both = valid & (other != IGNORE_LABEL)
        assert (read_back[both] == other[both]).mean() < 0.95
    _, rotated = warp(image, mask, 0.3, 1.0)
    assert (rotated == IGNORE_LABEL).any()  # corners come from outside: ignored, not background
    _, zoomed_out = warp(image, mask, 0.0, 0.8)
    assert (zoomed_out[0] == IGNORE_LABEL).all() and (zoomed_out[32, 28:36] != IGNORE_LABEL).all()


def test_epoch_batches_replay_from_seed_and_epoch_and_off_is_plain_flips():
    from calibration.synthetic import synthetic_splits
    from exporter.train import epoch_batches

    splits = synthetic_splits(12, 2, (32, 32), 3, seed=0)
    standard = parse_augment("standard")
    whole = list(epoch_batches(splits, 4, seed=5, epoch=2, augment=standard))
    resumed = list(epoch_batches(splits, 4, seed=5, epoch=2, start_step=1, augment=standard))
    for (a, am), (b, bm) in zip(whole[1:], resumed):
        assert np.array_equal(a, b) and np.array_equal(am, bm)
    other_epoch = list(epoch_batches(splits, 4, seed=5, epoch=3, augment=standard))
    assert not np.array_equal(whole[0][0], other_epoch[0][0])
    # Without --augment: exactly the order and flips of (seed, epoch), as before augmentation existed.
    rng = np.random.default_rng([5, 2])
    order, flips = rng.permutation(12), rng.random(12) < 0.5
    plain = np.concatenate([b for b, _ in epoch_batches(splits, 4, seed=5, epoch=2)])
    expected = splits.train.images[order].astype(np.float32)
    expected[flips] = expected[flips][:, :, ::-1]
    assert np.array_equal(plain, expected)


# ---------------------------------------------------------------------------------------------
# Through training: recorded rates, curves, resume


def _tiny_run(tmp_path, schedule, *, resume=False, fail_after=None, monkeypatch=None):
    from architectures import build, get_spec, resolve_config
    from calibration.synthetic import synthetic_splits
    from exporter import train as train_module

    config = resolve_config("unet", input_size=32, num_classes=3, alpha=0.35)
    splits = synthetic_splits(16, 4, (32, 32), 3, seed=0)
    train_module.seed_everything(schedule.seed)
    if fail_after is not None:  # a kill after epoch `fail_after`'s checkpoint
        original = train_module.write_preview

        def preview(path, *args):
            original(path, *args)
            if path.name == f"epoch_{fail_after:03d}.png":
                raise KeyboardInterrupt
        monkeypatch.setattr(train_module, "write_preview", preview)
    return train_module.train(build(config), config, get_spec("unet"), splits, tmp_path, schedule, resume=resume)


@pytest.mark.slow  # three short training runs: about a minute on 2 busy cores
def test_rates_are_recorded_follow_the_schedule_and_survive_a_resume(tmp_path, monkeypatch):
    from exporter.train import Schedule

    schedule = Schedule(epochs=3, batch_size=8, seed=1, loss="ce+dice", lr_schedule="cosine", warmup_epochs=1,
                        augment="light")
    whole = _tiny_run(tmp_path / "whole", schedule)
    expected = [learning_rate("cosine", 1e-3, e, 3, warmup_epochs=1) for e in range(3)]
    assert [h["lr"] for h in whole["history"]] == pytest.approx(expected)
    assert len(set(expected)) == 3

    curves = tmp_path / "whole" / "unet" / "training" / "curves.png"
    assert curves.read_bytes()[:8] == PNG_SIGNATURE
    from PIL import Image

    with Image.open(curves) as im:
        assert im.size[0] > 300 and len(np.unique(np.asarray(im.convert("L")))) > 10  # drawn, not blank

    with pytest.raises(KeyboardInterrupt):
        _tiny_run(tmp_path / "killed", schedule, fail_after=2, monkeypatch=monkeypatch)
    monkeypatch.undo()
    resumed = _tiny_run(tmp_path / "killed", schedule, resume=True)
    assert [h["lr"] for h in resumed["history"]] == pytest.approx(expected)
    assert resumed["history"][-1]["val_miou"] == pytest.approx(whole["history"][-1]["val_miou"], abs=0.02)

    from dataclasses import replace

    with pytest.raises(ExporterError, match="--lr-schedule cosine, not constant"):
        _tiny_run(tmp_path / "killed", replace(schedule, lr_schedule="constant"), resume=True)


@pytest.mark.slow
def test_bad_recipe_options_are_one_line_each(run_cli):
    cases = {("--loss", "ce+bce"): "unknown term 'bce'",
             ("--class-weights", "1,2"): "2 weight(s) for 3 classes",
             ("--augment", "strong"): "unknown preset 'strong'",
             ("--augment", "light,grayscale=0.5"): "grayscale must be between 0 and 0.2",
             ("--lr-schedule", "step"): "--lr-schedule 'step': unknown",
             ("--warmup-epochs", "3"): "--warmup-epochs 3: must be at least 0 and below --epochs (2)",
             ("--cpu-devices", "2"): "for --distribute mirrored only",
             ("--distribute", "ring"): "--distribute 'ring': unknown"}
    for option, message in cases.items():
        result = run_cli("train", "--model", "unet", "--input-size", "32", "--epochs", "2", "--train-samples", "4",
                         "--val-samples", "2", "--classes", "3", *option)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], (option, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.slow  # a short training run: about 30 s on 2 busy cores
def test_freeze_epochs_keep_the_encoder_fixed_then_train_it_at_a_lower_rate(tmp_path, monkeypatch):
    from architectures import build, get_spec, resolve_config
    from calibration.synthetic import synthetic_splits
    from exporter import train as train_module
    from exporter.schedules import UNFREEZE_FACTOR

    config = resolve_config("unet", input_size=32, num_classes=3, alpha=0.35)
    schedule = train_module.Schedule(epochs=3, batch_size=8, freeze_epochs=2)
    train_module.seed_everything(0)
    model = build(config)
    snapshots = [(model.get_layer("Conv1").get_weights()[0].copy(), model.get_layer("logits").get_weights()[0].copy())]
    original = train_module.write_preview

    def preview(*args):  # after each epoch: the encoder's first conv and the decoder's last
        snapshots.append((model.get_layer("Conv1").get_weights()[0].copy(),
                          model.get_layer("logits").get_weights()[0].copy()))
        original(*args)
    monkeypatch.setattr(train_module, "write_preview", preview)
    state = train_module.train(model, config, get_spec("unet"), synthetic_splits(16, 4, (32, 32), 3), tmp_path,
                               schedule)
    (enc0, dec0), (enc1, dec1), (enc2, dec2), (enc3, dec3) = snapshots
    assert np.array_equal(enc0, enc1) and np.array_equal(enc1, enc2)  # frozen for 2 epochs ...
    assert not np.array_equal(dec0, dec1) and not np.array_equal(dec1, dec2)  # ... while the decoder learns
    assert not np.array_equal(enc2, enc3)  # then trained
    assert [h["lr"] for h in state["history"]] == pytest.approx([1e-3, 1e-3, 1e-3 * UNFREEZE_FACTOR])

    selfie = resolve_config("selfie", input_size=64, num_classes=3)
    with pytest.raises(ExporterError, match="--freeze-epochs: selfie has no pretrained encoder"):
        train_module.train(build(selfie), selfie, get_spec("selfie"), synthetic_splits(4, 2, (64, 64), 3),
                           tmp_path / "selfie", schedule)
