"""The first stage of `convert`: the data and the float Keras model.

The model is loaded from --weights, from the finished training run in OUT/MODEL/training, or
trained there (only when there is none): nothing a user trained is replaced or ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from architectures import ModelConfig, build, get_spec, importers, resolve_config
from calibration.checks import check_labels
from calibration.sources import load_splits
from exporter.errors import ExporterError, WeightsError, first_line
from exporter.options import ConvertOptions
from exporter.progress import say
from exporter.train import find_run, run_from_weights, seed_everything, train, training_dir


def prepare_model(opts: ConvertOptions, splits_loader=load_splits):
    """Resolve the config, load the data and get a float Keras model: loaded from --weights, from the
    finished training run in OUT/MODEL/training, or trained there (only when there is none)."""
    spec = get_spec(opts.model)
    run = _trained_run(opts)
    overrides = {}
    if run is not None:
        overrides = _config_of_run(run, opts)
    elif opts.weights is not None:
        if not importers.exists(opts.weights) and spec.config_from_weights is None:
            raise WeightsError(f"{opts.weights}: weights file not found")
        overrides = importers.config_overrides(opts.model, Path(opts.weights))
    overrides.update(_what_the_user_says(opts, overrides, run))
    if opts.data.classes is not None:
        overrides.setdefault("num_classes", opts.data.classes)
    if opts.data.input_size is not None:
        overrides.setdefault("input_size", opts.data.input_size)
    config = resolve_config(opts.model, **overrides)
    splits = splits_loader(opts.data.source, config.input_size, config.num_classes,
                           train_samples=opts.data.train_samples, val_samples=opts.data.val_samples)
    if "labels" not in overrides and len(splits.labels) == config.num_classes:
        # Weights without class names (a Keras .h5) take the data's, as does a model trained here.
        config = dataclasses.replace(config, labels=splits.labels)
    # The files' output contract (exporter.output_contract): only the export graph reads it.
    config = dataclasses.replace(config, output_activation=getattr(opts, "output_activation", "model"),
                                 output_size=getattr(opts, "output_size", "input"))
    for part in (splits.train, splits.val):
        check_labels(part.masks, config.num_classes, f"data {opts.data.source} vs model {opts.model}")

    seed_everything(opts.schedule.seed)  # before the model is built: seeded initial weights
    model = build(config)
    if (config.output_activation, config.output_size) != ("model", "input"):
        from exporter.output_contract import strip

        strip(model, config)  # an architecture without a final resize refuses --output-size native here, in one line
    if run is not None:
        say(f"using the model trained in {run.folder}: {run.describe()}"
            + ("" if opts.weights is not None else
               " (training options apply only when there is no run; another --out trains anew)"))
        if run.data_spec != opts.data.source:
            say(f"warning: that model was trained on {run.data_spec} data; calibrating and validating on {opts.data.source}")
        load_weights(model, run.weights, config)
        state = run.state
    elif opts.weights is not None:
        imported = load_weights(model, Path(opts.weights), config)
        if not isinstance(imported, importers.Imported):  # our own weights, or an architecture's loader
            return spec, config, splits, model, {"summary": f"weights loaded from {opts.weights}"}
        return spec, config, splits, model, {"summary": f"weights imported from {opts.weights}: {imported.describe()}",
                                             "import": imported.to_json()}
    else:
        say(f"no --weights given and no training run in {training_dir(opts.out, config.name)}: training "
            f"{config.name} on {opts.data.source} data first ({opts.schedule.epochs} epochs; "
            "pass --weights to skip)")
        state = train(model, config, spec, splits, opts.out, opts.schedule, data_spec=opts.data.source)
        run = find_run(training_dir(opts.out, config.name))
    last = state["history"][-1] if state["history"] else {}
    training = {
        "summary": f"trained for {state['epochs_done']} epochs on {run.data_spec} data ({run.folder}); "
                   f"held-out mIoU after training {last.get('val_miou', float('nan')):.4f}",
        "history": state["history"],
        "schedule": state.get("schedule"),
        "weights": str(run.weights),
        "folder": str(run.folder),
    }
    return spec, config, splits, model, training


def _trained_run(opts: ConvertOptions):
    """The training run convert uses: --weights naming one, else the one in OUT/MODEL/training."""
    if opts.weights is not None:
        run = run_from_weights(Path(opts.weights))
    else:
        run = find_run(training_dir(opts.out, opts.model))
        if run is not None and not run.finished:
            raise ExporterError(f"{run.folder} holds an unfinished training run ({run.describe()}); finish it with "
                                f"`exporter train --model {opts.model} --out {opts.out} --resume`, or pass --weights")
    if run is not None and run.model_config.get("name", opts.model) != opts.model:
        raise WeightsError(f"{run.folder}: a training run of {run.model_config.get('name')!r}, not {opts.model!r}")
    return run


def _what_the_user_says(opts: ConvertOptions, implied: dict, run) -> dict:
    """--labels and --input-norm as overrides, checked against what the weights imply."""
    out = {}
    where = f"the model trained in {run.folder}" if run is not None else f"{opts.weights}"
    if opts.labels is not None:
        classes = len(implied["labels"]) if "labels" in implied else implied.get("num_classes")
        if classes is not None and classes != len(opts.labels):
            raise WeightsError(f"--labels names {len(opts.labels)} classes; {where} has {classes}")
        out["labels"] = opts.labels
    if opts.input_norm is not None:
        from architectures.input_norm import parse

        theirs = implied.get("input_norm")
        if run is not None and parse(opts.input_norm).spec != parse(theirs or spec_norm(opts.model)).spec:
            raise ExporterError(f"--input-norm {opts.input_norm}: {where} was trained with "
                                f"{theirs or spec_norm(opts.model)}; drop --input-norm, or train anew")
        out["input_norm"] = opts.input_norm
    if opts.data.classes is not None and "num_classes" in implied and implied["num_classes"] != opts.data.classes:
        raise WeightsError(f"--classes {opts.data.classes}: {where} has {implied['num_classes']} classes")
    return out


def spec_norm(name: str) -> str:
    return get_spec(name).input_norm


def _config_of_run(run, opts: ConvertOptions) -> dict:
    """resolve_config overrides that rebuild the run's model; explicit options that contradict it fail."""
    cfg = run.model_config
    size = tuple(cfg["input_size"])
    if opts.data.input_size is not None and (opts.data.input_size, opts.data.input_size) != size:
        raise ExporterError(f"--input-size {opts.data.input_size}: the model trained in {run.folder} takes "
                            f"{size[0]}x{size[1]}; drop --input-size, or use another --out to train anew")
    if opts.data.classes is not None and opts.data.classes != len(cfg["labels"]):
        raise ExporterError(f"--classes {opts.data.classes}: the model trained in {run.folder} has "
                            f"{len(cfg['labels'])} classes; drop --classes, or use another --out to train anew")
    # The trained weights replace any pretrained encoder's, whose file need not exist any more.
    options = {k: v for k, v in cfg["options"].items() if k != "encoder_weights"}
    return {"labels": tuple(cfg["labels"]), "input_size": size, **options}


def load_weights(model, path: Path, config: ModelConfig):
    """Weights into our graph: the importer that claims the source (the user's own checkpoints;
    returns what it mapped), else the architecture's loader, else Keras' for our own weights (an
    .h5, or a save_weights TF checkpoint by its prefix or folder)."""
    from architectures.importers.tf_checkpoint import prefix_of

    loaded = importers.load(config.name, model, path, config)
    if loaded is not None or get_spec(config.name).load_weights is not None:
        return loaded
    prefix = None if Path(path).is_file() else prefix_of(path)
    if not Path(path).is_file() and prefix is None:
        raise WeightsError(f"{path}: weights file not found")
    try:
        model.load_weights(str(prefix or path))
    except Exception as exc:  # Keras' message can list every tensor with its values: its first line only
        raise WeightsError(f"{path}: cannot load into {config.name} "
                           f"({config.num_classes} classes, {config.input_size}): {first_line(exc)}") from exc


def weight_count(model) -> int:
    """Weights that survive into the file: BatchNorm parameters fold into the convolutions."""
    from exporter.keras import keras

    return int(sum(np.prod(w.shape) for layer in model.layers
                   if not isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights))
