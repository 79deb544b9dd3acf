"""Training that never loses a run: Adam on the chosen loss, atomic checkpoints, exact resume.

A training run lives in `<out>/<model>/training/`: `checkpoints/` (model, optimiser state and the
position in the schedule: epoch and step), `previews/epoch_NNN.png` (image | true mask | predicted
mask, the seed's display callback as files), `curves.png` (loss, held-out mIoU and learning rate
per epoch), `weights.h5` (the final float weights, what `convert`
loads) and `state.json` (model config, data, schedule, per-epoch metrics, `finished`).

What a user trained is never deleted: a new run into a folder that holds one refuses (use
`--resume`, another `--out`, or `--overwrite`). A run killed at any moment (SIGKILL included)
resumes from its last checkpoint, written at every epoch end and every `save_every` steps; the
epoch order, flips and augmentation of epoch e depend only on (seed, e), and its learning rate only
on e and the history before it, so a resumed run sees exactly the batches and rates an
uninterrupted one would have seen. The recipe (loss, class weights, schedule, augmentation) is part
of the run: --resume with another recipe refuses.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from calibration.augment import DEFAULT_AUGMENT, Augment, apply as apply_augment, draw_epoch, parse_augment
from calibration.dataset import Splits
from exporter.artifacts import atomic_path, write_json
from exporter.errors import ExporterError
from exporter.losses import DEFAULT_LOSS, make_loss, parse_class_weights
from exporter.progress import make_progress, say
from exporter.schedules import DEFAULT_SCHEDULE, learning_rate as scheduled_rate

WEIGHTS_FILE = "weights.h5"
CURVES_FILE = "curves.png"
STATE_FILE = "state.json"
CHECKPOINTS = "checkpoints"


class RunExistsError(ExporterError):
    """A training run is already in the folder a new run would write to."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float | None = None  # None: the architecture's default
    seed: int = 0
    save_every: int = 0  # also checkpoint every this many steps inside an epoch; 0: at epoch ends only
    # The recipe (see RECIPE): what a resumed run must share with the run it continues.
    loss: str = DEFAULT_LOSS  # exporter.losses spec, e.g. "ce", "0.5*ce+dice"
    class_weights: str | None = None  # "w1,w2,...", "auto" or None (all 1)
    lr_schedule: str = DEFAULT_SCHEDULE  # exporter.schedules.SCHEDULES
    warmup_epochs: int = 0
    augment: str = DEFAULT_AUGMENT  # calibration.augment spec, e.g. "standard,grayscale=0.05"
    freeze_epochs: int = 0  # the encoder (ArchSpec.encoder_layers) frozen for this many epochs, then trained

    def __post_init__(self):
        """Checked once, where the schedule is made: before any data loads (one line per bad option)."""
        from calibration.augment import parse_augment
        from exporter.losses import parse_loss
        from exporter.schedules import check_schedule

        if self.epochs < 1 or self.batch_size < 1 or self.save_every < 0:
            raise ExporterError("--epochs and --batch-size must be at least 1, --save-every at least 0")
        parse_loss(self.loss)  # class weights are checked once the data gives the classes (in train)
        check_schedule(self.lr_schedule, self.warmup_epochs, self.epochs)
        parse_augment(self.augment)
        if not 0 <= self.freeze_epochs < self.epochs:
            raise ExporterError(f"--freeze-epochs {self.freeze_epochs}: must be at least 0 and below --epochs "
                                f"({self.epochs})")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


RECIPE = ("loss", "class_weights", "lr_schedule", "warmup_epochs", "augment", "freeze_epochs")


def training_dir(out: Path, model_name: str) -> Path:
    return Path(out) / model_name / "training"


def seed_everything(seed: int) -> None:
    """Same seed, data and code -> the same weights: Python, NumPy and TF seeds, deterministic TF ops.

    Called before the model is built, so the initial weights are seeded too.
    """
    from exporter.keras import keras, tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


# ---------------------------------------------------------------------------------------------
# Finished and unfinished runs on disk


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A training run folder and what its state.json says."""

    folder: Path
    state: dict

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FILE

    @property
    def finished(self) -> bool:
        # Runs from before `finished` was recorded: done when every scheduled epoch is.
        done = self.state.get("finished", self.epochs_done >= self.state.get("schedule", {}).get("epochs", 1 << 30))
        return bool(done) and self.weights.is_file()

    @property
    def epochs_done(self) -> int:
        return int(self.state.get("epochs_done", 0))

    @property
    def model_config(self) -> dict:
        return self.state["fingerprint"]["model"]

    @property
    def data_spec(self) -> str:
        return self.state["fingerprint"]["data"]

    def describe(self) -> str:
        last = self.state["history"][-1] if self.state.get("history") else {}
        miou = last.get("val_miou")
        return (f"{self.epochs_done} epoch(s) on {self.data_spec} data"
                + (f", held-out mIoU {miou:.4f}" if miou is not None else ""))


def find_run(folder: Path) -> TrainedRun | None:
    """The run in `folder` (finished or not), or None when the folder holds none."""
    folder = Path(folder)
    state_path = folder / STATE_FILE
    if state_path.is_file():
        try:
            return TrainedRun(folder, json.loads(state_path.read_text()))
        except (json.JSONDecodeError, OSError) as exc:
            raise ExporterError(f"{state_path}: unreadable training state ({exc})") from None
    if (folder / CHECKPOINTS).is_dir() or (folder / WEIGHTS_FILE).is_file():
        # Checkpoints without a state file: not ours to judge, and certainly not ours to delete.
        return TrainedRun(folder, {"fingerprint": {"model": {}, "data": "unknown"}, "history": []})
    return None


def run_from_weights(path: Path) -> TrainedRun | None:
    """`--weights` given as a training folder or as the weights.h5 inside one."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.name != WEIGHTS_FILE:
        return None
    run = find_run(folder) if (folder / STATE_FILE).is_file() else None
    if run is not None and path.is_dir() and not run.finished:
        raise ExporterError(f"{folder}: the training run there is unfinished ({run.describe()}); "
                            "finish it with `exporter train --resume` first")
    return run


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """A new run may write to `run_dir` only if it holds no run, or the user said --overwrite."""
    existing = find_run(run_dir)
    if existing is None or resume:
        return
    if not overwrite:
        what = "a finished" if existing.finished else "an unfinished"
        raise RunExistsError(f"{run_dir} already holds {what} training run ({existing.describe()}); "
                             "use --resume to continue it, another --out, or --overwrite to replace it")
    say(f"--overwrite: replacing the training run in {run_dir} ({existing.describe()})")
    shutil.rmtree(run_dir)


# ---------------------------------------------------------------------------------------------
# Training


def compile_for_training(model, output: str, learning_rate: float, loss: str = DEFAULT_LOSS,
                         class_weights: list[float] | None = None):
    """Adam on `loss` (an exporter.losses spec) read from the head's `output` (logits or softmax)."""
    from exporter.keras import keras

    loss_fn = make_loss(loss, output, model.output_shape[-1], class_weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_fn)
    return model


def check_loss(loss: float, epoch: int, step: int, learning_rate: float, option: str = "--lr") -> None:
    """Stop with one clear line when the loss stops being finite (nothing is saved from NaN weights)."""
    if loss is not None and not np.isfinite(loss):
        raise ExporterError(f"training diverged: the loss became {loss} at epoch {epoch + 1}, "
                            f"step {step + 1} (learning rate {learning_rate:g}); try a lower {option}")


def divergence_guard(learning_rate: float, option: str = "--lr"):
    """check_loss as a Keras callback, for training that runs through `fit` (QAT).

    Keras' own TerminateOnNaN stops silently, and the NaN weights would then be saved, converted
    and reported as a model.
    """
    from exporter.keras import keras

    class DivergenceGuard(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            check_loss((logs or {}).get("loss"), self.epoch, batch, learning_rate, option)

    return DivergenceGuard()


def _dataset(splits: Splits, batch_size: int, seed: int):
    """The training split as a shuffled, flipped tf.data pipeline (QAT fine-tuning uses it)."""
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


def epoch_batches(splits: Splits, batch_size: int, seed: int, epoch: int, start_step: int = 0,
                  augment: Augment | None = None):
    """Epoch `epoch`'s batches from `start_step` on: order, flips and augmentation drawn from
    (seed, epoch) alone, so a resumed epoch replays exactly the batches an uninterrupted run would see."""
    train = splits.train
    augment = augment or parse_augment(DEFAULT_AUGMENT)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(train))
    draws = draw_epoch(augment, len(train), seed, epoch, rng.random(len(train)))
    for start in range(start_step * batch_size, len(train), batch_size):
        idx = order[start : start + batch_size]
        images = train.images[idx].astype(np.float32)
        masks = train.masks[idx].astype(np.int32)
        images, masks = apply_augment(augment, draws, range(start, start + len(idx)), images, masks)
        yield images, masks[..., None]


def evaluate(model, val, num_classes: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(confusion matrix over the held-out samples, predicted mask of the first), a batch at a time so
    streamed data is never held whole."""
    from exporter.parity import confusion

    cm, first = np.zeros((num_classes, num_classes), np.int64), None
    for start in range(0, len(val), batch_size):
        pred = predict_masks(model, val.images[start : start + batch_size], batch_size)
        cm += confusion(val.masks[start : start + batch_size], pred, num_classes)
        first = pred[0] if first is None else first
    return cm, first


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


def write_curves(path: Path, history: list[dict], title: str) -> None:
    """Loss, held-out mIoU and learning rate per epoch, one panel each, as a PNG (rewritten every epoch,
    so a killed run still has its curves)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(9, 2.8), dpi=100, layout="constrained")
    panels = (("loss", "training loss"), ("val_miou", "held-out mIoU"), ("lr", "learning rate"))
    for axes, (key, name) in zip(figure.subplots(1, 3), panels):
        # Runs from before the learning rate was recorded have no "lr": that panel stays empty.
        points = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        if points:
            axes.plot(*zip(*points), marker="o")
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


class _Encoder:
    """--freeze-epochs: the encoder's layers frozen, then trained. The optimiser is built over every
    trainable variable first, so its state (and a checkpoint's) is the same frozen or not."""

    def __init__(self, model, spec, freeze_epochs: int, strategy=None):
        self.model, self.frozen, self.strategy = model, None, strategy
        self.layers = []
        if not freeze_epochs:
            return
        if spec.encoder_layers is None:
            raise ExporterError(f"--freeze-epochs: {spec.name} has no pretrained encoder to freeze")
        self.layers = [layer for layer in spec.encoder_layers(model) if layer.weights]
        for layer in self.layers:
            layer.trainable = True
        model.optimizer.build(model.trainable_variables)

    def set_frozen(self, frozen: bool) -> None:
        if not self.layers or frozen == self.frozen:
            return
        for layer in self.layers:
            layer.trainable = not frozen
        from exporter.distribute import scope

        # Keras fixes the trainable variables when it compiles: recompile, keeping the optimiser.
        with scope(self.strategy):
            self.model.compile(optimizer=self.model.optimizer, loss=self.model.loss)
        self.frozen = frozen
        say(f"encoder {'frozen' if frozen else 'unfrozen'} ({len(self.layers)} layers)")


def _check_same_recipe(previous: dict, schedule: Schedule, run_dir: Path) -> None:
    """--resume continues a run with its own recipe; another recipe would be another run."""
    defaults = Schedule()
    for name in RECIPE:
        before, now = previous.get(name, getattr(defaults, name)), getattr(schedule, name)
        if before != now:
            option = "--" + name.replace("_", "-")
            raise ExporterError(f"{run_dir}: that run was trained with {option} {before}, not {now}; "
                                f"resume with {option} {before}, or use another --out")


class _Checkpoints:
    """Model, optimiser and schedule position, saved atomically (TensorFlow writes a checkpoint's
    files under temporary names and then its index file by rename; a save killed halfway leaves the
    previous checkpoint the latest). Restore falls back to an older one if the newest is damaged."""

    def __init__(self, folder: Path, model, read_folder: Path | None = None):
        from exporter.keras import tf

        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # epochs completed
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)  # steps done in the epoch after them
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch,
                                              step=self.step)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(folder), max_to_keep=3)
        # A multiworker run's non-chief worker restores the chief's checkpoints and saves its own elsewhere.
        self.read = (self.manager if read_folder is None
                     else tf.train.CheckpointManager(self.checkpoint, str(read_folder), max_to_keep=3))

    def save(self, epoch: int, step: int, number: int) -> None:
        self.epoch.assign(epoch)
        self.step.assign(step)
        self.manager.save(checkpoint_number=number)

    def restore(self) -> tuple[int, int]:
        """(epochs completed, steps into the next epoch) of the newest usable checkpoint."""
        candidates = list(reversed(self.read.checkpoints))
        if not candidates:
            raise ExporterError(f"{self.read.directory}: nothing to resume (no checkpoint); run without --resume")
        for i, path in enumerate(candidates):
            try:
                self.checkpoint.restore(path).expect_partial()
            except Exception as exc:  # a damaged file: the previous checkpoint is still whole
                say(f"warning: checkpoint {Path(path).name} is unreadable ({type(exc).__name__}); "
                    + ("trying the one before it" if i + 1 < len(candidates) else "no older checkpoint left"))
                continue
            return int(self.epoch.numpy()), int(self.step.numpy())
        raise ExporterError(f"{self.read.directory}: no readable checkpoint to resume from")


def _run_to_resume(run_dir: Path, fingerprint: dict, schedule: Schedule):
    """The run --resume continues: same model, data and recipe, or one line saying what differs."""
    previous = find_run(run_dir)
    if previous is None:
        raise ExporterError(f"{run_dir}: nothing to resume (no training run there); run without --resume")
    if previous.state["fingerprint"] != fingerprint:
        raise ExporterError(f"{run_dir}: that run was trained with a different model or data; "
                            "use another --out or drop --resume")
    _check_same_recipe(previous.state.get("schedule", {}), schedule, run_dir)
    return previous


def _announce(config, splits, schedule: Schedule, lr: float, class_weights, strategy) -> None:
    say(f"training {config.name} at {config.input_size[0]}x{config.input_size[1]} on "
        f"{len(splits.train)} samples of {splits.train.source}: {schedule.epochs} epochs, lr {lr:g}"
        + (f" ({schedule.lr_schedule}" + (f", {schedule.warmup_epochs} warm-up" if schedule.warmup_epochs else "") + ")"
           if schedule.lr_schedule != DEFAULT_SCHEDULE or schedule.warmup_epochs else "")
        + f", loss {schedule.loss}" + (f" (class weights {class_weights})" if class_weights else "")
        + (f", augment {schedule.augment}" if schedule.augment != DEFAULT_AUGMENT else "")
        + (f", {strategy.num_replicas_in_sync} replicas" if strategy is not None else "")
        + f", seed {schedule.seed}")


def train(model, config, spec, splits: Splits, out: Path, schedule: Schedule, *, resume: bool = False,
          overwrite: bool = False, data_spec: str = "synthetic", strategy=None, chief: bool = True) -> dict:
    """Train `model` in place into OUT/MODEL/training; returns the state written to state.json.
    `strategy` (exporter.distribute): the one `model` was built under; its batches are split across replicas.
    `chief` False (a multiworker run's other workers): the same steps, but the run folder is only read
    (--resume restores its checkpoint); this worker's files go to a temporary folder, `state["written_to"]`."""
    from exporter.distribute import scope
    from exporter.parity import miou_from_confusion

    run_dir = training_dir(out, config.name)
    if chief:
        claim_run_dir(run_dir, resume=resume, overwrite=overwrite)
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="exporter-worker-")) / config.name
    lr = schedule.learning_rate or spec.learning_rate
    augment = parse_augment(schedule.augment)
    class_weights = parse_class_weights(schedule.class_weights, config.num_classes, splits.train.masks)
    fingerprint = {"model": config.to_json(), "data": data_spec}
    state = {"fingerprint": fingerprint, "schedule": schedule.to_json(), "class_weights": class_weights,
             "epochs_done": 0, "history": [], "finished": False}
    previous = _run_to_resume(run_dir, fingerprint, schedule) if resume else None
    with scope(strategy):
        compile_for_training(model, spec.output, lr, schedule.loss, class_weights)
        encoder = _Encoder(model, spec, schedule.freeze_epochs, strategy)
    ckpt = _Checkpoints(write_dir / CHECKPOINTS, model, None if chief else run_dir / CHECKPOINTS)
    start_epoch = start_step = 0
    if resume:
        start_epoch, start_step = ckpt.restore()
        # state.json is written just before each checkpoint: keep only what the checkpoint holds.
        history = [h for h in previous.state["history"] if h["epoch"] <= start_epoch]
        state.update(epochs_done=start_epoch, history=history)
        say(f"resuming {config.name} from epoch {start_epoch + 1}" + (f", step {start_step + 1}" if start_step else "")
            + f" ({start_epoch} epoch(s) done)")
    write_dir.mkdir(parents=True, exist_ok=True)

    steps = int(np.ceil(len(splits.train) / schedule.batch_size))
    _announce(config, splits, schedule, lr, class_weights, strategy)

    def save(epoch: int, step: int) -> None:
        write_json(write_dir / STATE_FILE, state)
        ckpt.save(epoch, step, number=epoch * steps + step)

    remaining = (schedule.epochs - start_epoch) * steps - start_step
    with make_progress() as bar:
        task = bar.add_task("training", total=max(remaining, 0), info="")
        for epoch in range(start_epoch, schedule.epochs):
            started = time.time()
            losses = []
            first = start_step if epoch == start_epoch else 0
            # Set every epoch (also the first after a resume): the checkpoint's rate is not trusted.
            epoch_lr = scheduled_rate(schedule.lr_schedule, lr, epoch, schedule.epochs, schedule.warmup_epochs,
                                      state["history"], schedule.freeze_epochs)
            model.optimizer.learning_rate.assign(epoch_lr)
            encoder.set_frozen(epoch < schedule.freeze_epochs)
            for step, (images, masks) in enumerate(
                    epoch_batches(splits, schedule.batch_size, schedule.seed, epoch, first, augment), start=first):
                loss = float(model.train_on_batch(images, masks))
                check_loss(loss, epoch, step, epoch_lr)
                losses.append(loss)
                bar.update(task, advance=1, info=f"epoch {epoch + 1} loss {loss:.3f}")
                if schedule.save_every and (step + 1) % schedule.save_every == 0 and step + 1 < steps:
                    save(epoch, step + 1)
            cm, first_pred = evaluate(model, splits.val, config.num_classes)
            # The loss of a resumed epoch is over the steps run since the resume.
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                      "val_miou": miou_from_confusion(cm), "lr": epoch_lr, "seconds": round(time.time() - started, 1)}
            state["history"].append(record)
            state["epochs_done"] = epoch + 1
            save(epoch + 1, 0)
            write_preview(write_dir / "previews" / f"epoch_{epoch + 1:03d}.png", splits.val.images[0],
                          splits.val.masks[0], first_pred, config.num_classes)
            write_curves(write_dir / CURVES_FILE, state["history"], f"{config.name}, loss {schedule.loss}")
            say(f"epoch {epoch + 1}/{schedule.epochs}: loss {record['loss']:.4f}, "
                f"held-out mIoU {record['val_miou']:.4f}")
    with atomic_path(write_dir / WEIGHTS_FILE) as tmp:
        model.save_weights(str(tmp))
    state["finished"] = True
    write_json(write_dir / STATE_FILE, state)
    return {**state, "written_to": str(write_dir)}
