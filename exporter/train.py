"""Training: Adam on sparse cross-entropy, a checkpoint every epoch, resume, previews.

A training run lives in `<out>/<model>/training/`: `checkpoints/` (model and optimiser state,
so --resume continues exactly), `previews/epoch_NNN.png` (image | true mask | predicted mask,
the seed's display callback as files), `weights.h5` (the final float weights, what `convert`
loads) and `state.json` (model config, data, schedule, per-epoch metrics).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from calibration.dataset import IGNORE_LABEL, Splits
from exporter.artifacts import atomic_path, write_json
from exporter.errors import ExporterError
from exporter.progress import make_progress, say

WEIGHTS_FILE = "weights.h5"
STATE_FILE = "state.json"


@dataclasses.dataclass(frozen=True)
class Schedule:
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float | None = None  # None: the architecture's default
    seed: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def training_dir(out: Path, model_name: str) -> Path:
    return Path(out) / model_name / "training"


def compile_for_training(model, output: str, learning_rate: float):
    from exporter.keras import keras

    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=(output == "logits"), ignore_class=IGNORE_LABEL
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model


def divergence_guard(learning_rate: float, option: str = "--lr"):
    """A Keras callback that stops training with one clear line when the loss stops being finite.

    Keras' own TerminateOnNaN stops silently, and the NaN weights would then be saved, converted
    and reported as a model; here the run fails before anything is written from them.
    """
    from exporter.keras import keras

    class DivergenceGuard(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not np.isfinite(loss):
                raise ExporterError(f"training diverged: the loss became {loss} at epoch {self.epoch + 1}, "
                                    f"step {batch + 1} (learning rate {learning_rate:g}); try a lower {option}")

    return DivergenceGuard()


def _dataset(splits: Splits, batch_size: int, seed: int):
    from exporter.keras import tf

    train = splits.train

    def flip(image, mask):
        # Left-right flips only: cheap, label-preserving for every class we know of.
        do = tf.random.uniform(()) < 0.5
        image = tf.cond(do, lambda: tf.image.flip_left_right(image), lambda: image)
        mask = tf.cond(do, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
        return image, mask

    ds = tf.data.Dataset.from_tensor_slices((train.images, train.masks))
    ds = ds.shuffle(len(train), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda i, m: (tf.cast(i, tf.float32), tf.cast(m, tf.int32)))
    ds = ds.map(lambda i, m: flip(i, m[..., None]))
    return ds.batch(batch_size).prefetch(2)


def predict_masks(model, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    preds = [
        np.argmax(model(images[i : i + batch_size].astype(np.float32), training=False), axis=-1)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(preds).astype(np.uint8)


def write_preview(path: Path, image: np.ndarray, mask: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
    from PIL import Image

    from exporter.palette import colourise

    row = np.concatenate([image, colourise(mask, num_classes), colourise(pred, num_classes)], axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(row).save(tmp, format="PNG")


def train(model, config, spec, splits: Splits, out: Path, schedule: Schedule, *, resume: bool = False,
          data_spec: str = "synthetic") -> dict:
    """Train `model` in place; returns the state written to state.json."""
    from exporter.keras import keras, tf
    from exporter.parity import confusion, miou_from_confusion

    run_dir = training_dir(out, config.name)
    ckpt_dir = run_dir / "checkpoints"
    lr = schedule.learning_rate or spec.learning_rate
    compile_for_training(model, spec.output, lr)
    tf.random.set_seed(schedule.seed)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=2)
    fingerprint = {"model": config.to_json(), "data": data_spec}
    state = {"fingerprint": fingerprint, "schedule": schedule.to_json(), "epochs_done": 0, "history": []}
    if resume:
        state_path = run_dir / STATE_FILE
        if not manager.latest_checkpoint or not state_path.is_file():
            raise ExporterError(f"{run_dir}: nothing to resume (no checkpoint); run without --resume")
        previous = json.loads(state_path.read_text())
        if previous["fingerprint"] != fingerprint:
            raise ExporterError(f"{run_dir}: checkpoint was trained with a different model or data; "
                                "use another --out or drop --resume")
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        state.update(epochs_done=previous["epochs_done"], history=previous["history"])
        say(f"resuming {config.name} from epoch {state['epochs_done']}")
    elif run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a fresh run must not mix with an old run's checkpoints
    run_dir.mkdir(parents=True, exist_ok=True)

    ds = _dataset(splits, schedule.batch_size, schedule.seed)
    steps = int(np.ceil(len(splits.train) / schedule.batch_size))
    preview_image = splits.val.images[:1]
    say(f"training {config.name} at {config.input_size[0]}x{config.input_size[1]} on "
        f"{len(splits.train)} samples of {splits.train.source}: {schedule.epochs} epochs, lr {lr:g}")

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self, bar, task):
            super().__init__()
            self.bar, self.task, self.start = bar, task, time.time()

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(self.task, advance=1, info=f"loss {logs['loss']:.3f}")

        def on_epoch_end(self, epoch, logs=None):
            pred = predict_masks(self.model, splits.val.images)
            cm = confusion(splits.val.masks, pred, config.num_classes)
            record = {"epoch": epoch + 1, "loss": float(logs["loss"]),
                      "val_miou": miou_from_confusion(cm), "seconds": round(time.time() - self.start, 1)}
            state["history"].append(record)
            state["epochs_done"] = epoch + 1
            manager.save(checkpoint_number=epoch + 1)
            write_preview(run_dir / "previews" / f"epoch_{epoch + 1:03d}.png", preview_image[0],
                          splits.val.masks[0], pred[0], config.num_classes)
            write_json(run_dir / STATE_FILE, state)
            say(f"epoch {epoch + 1}/{schedule.epochs}: loss {record['loss']:.4f}, "
                f"held-out mIoU {record['val_miou']:.4f}")

    remaining = schedule.epochs - state["epochs_done"]
    if remaining > 0:
        with make_progress() as bar:
            task = bar.add_task("training", total=remaining * steps, info="")
            model.fit(ds, epochs=schedule.epochs, initial_epoch=state["epochs_done"], verbose=0,
                      callbacks=[divergence_guard(lr), EpochEnd(bar, task)])
    with atomic_path(run_dir / WEIGHTS_FILE) as tmp:
        model.save_weights(str(tmp))
    return state


def cached_state(out: Path, config, data_spec: str, schedule: Schedule) -> dict | None:
    """The state of a finished training run matching this model, data and schedule, if any."""
    run_dir = training_dir(out, config.name)
    state_path, weights = run_dir / STATE_FILE, run_dir / WEIGHTS_FILE
    if not (state_path.is_file() and weights.is_file()):
        return None
    state = json.loads(state_path.read_text())
    same = state["fingerprint"] == {"model": config.to_json(), "data": data_spec}
    if same and state["schedule"] == schedule.to_json() and state["epochs_done"] >= schedule.epochs:
        return state
    return None
