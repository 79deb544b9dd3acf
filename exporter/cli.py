"""Thin typer commands: parse, call the library, print. Errors become one line in `main`."""

from __future__ import annotations

import os
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from calibration.augment import DEFAULT_AUGMENT
from exporter.errors import ExporterError
from exporter.formats import parse_precisions, tflite_precisions
from exporter.losses import DEFAULT_LOSS
from exporter.options import BenchSpec, ConvertOptions, DataSpec, GateSpec, QuantSpec
from exporter.schedules import DEFAULT_SCHEDULE
from exporter.train import Schedule

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export segmentation models to small, fast, validated TFLite and ONNX files.")


class IO(str, Enum):
    uint8 = "uint8"
    int8 = "int8"
    float = "float"


# Options shared by several commands, declared once.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Architecture name (see `exporter list-models`).")]
DataOpt = Annotated[str, typer.Option(help="'synthetic', a folder (images/+masks/, Oxford-IIIT Pet or PASCAL VOC "
                                          "layout), folder:DIR / pet:DIR / voc:DIR, or tfrecord:DIR (DeepLab's "
                                          "train-*.tfrecord and val-*.tfrecord shards).")]
OutOpt = Annotated[Path, typer.Option(help="Output folder; files go to OUT/MODEL/.")]
SizeOpt = Annotated[Optional[int], typer.Option("--input-size", help="Square input size (default: the model's).")]
ClassesOpt = Annotated[Optional[int], typer.Option("--classes", help="Number of classes (default: the data's).")]
EpochsOpt = Annotated[int, typer.Option(help="Training epochs.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the model's).")]
TrainSamplesOpt = Annotated[int, typer.Option(help="Synthetic training samples to generate.")]
ValSamplesOpt = Annotated[int, typer.Option(help="Synthetic held-out samples to generate.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed: initial weights, batch order and flips (same seed, data and "
                                           "code: the same weights and byte-identical files).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks and everything the libraries print.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Show TensorFlow's, the converter's and LiteRT's own "
                                                            "messages (quiet by default).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only results, warnings and errors: no status lines or "
                                                              "progress bars on stderr (for CI logs).")]
LossOpt = Annotated[str, typer.Option(help="Training loss: ce, dice, jaccard (iou), focal, or a weighted sum such as "
                                           "ce+dice or 0.5*ce+dice; read from the model's logits or probabilities.")]
ClassWeightsOpt = Annotated[Optional[str], typer.Option(
    "--class-weights", help="Per-class loss weights w0,w1,... or 'auto' (inverse pixel frequency in the training split).")]
LrScheduleOpt = Annotated[str, typer.Option("--lr-schedule", help="Learning rate per epoch: constant, cosine, "
                                                                  "exponential (x0.9 an epoch) or plateau (halved "
                                                                  "after 2 epochs without a better held-out mIoU).")]
WarmupOpt = Annotated[int, typer.Option("--warmup-epochs", help="Epochs of linear warm-up to --lr before the schedule.")]
InputNormOpt = Annotated[Optional[str], typer.Option(
    "--input-norm", help="What the weights were trained to expect of 0..255 RGB pixels: 0,1 (x/255), -1,1 "
                         "(x/127.5-1), 0,255, imagenet, or 'mean=M;std=S' (one value or three each). Default: the "
                         "architecture's own (list-models). It goes inside the exported graph: files still take 0..255.")]
LabelsOpt = Annotated[Optional[str], typer.Option(
    "--labels", help="Class names, comma-separated (e.g. outer,hair,face,skin,clothes,accessories), or a labels "
                     "file with one name a line; checked against the weights' class count.")]
AugmentOpt = Annotated[str, typer.Option(help="Augmentation: off (left-right flips only), light or standard, optionally "
                                              "with overrides: standard,rotate=10,scale=0.2,brightness=0.1,contrast=0.1,"
                                              "saturation=0.1,grayscale=0.05,hflip=0.5 (grayscale at most 0.2).")]

_debug = False


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"exporter (segexport) {version('segexport')}")
        raise typer.Exit()


@app.callback()
def _root(debug: DebugOpt = False, verbose: VerboseOpt = False, quiet: QuietOpt = False,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    global _debug
    _debug = _debug or debug
    if verbose or debug:  # onnx2tf's own output (convert --from model.onnx), which it prints by itself
        os.environ["SEGEXPORT_ONNX2TF_VERBOSE"] = "1"
    if quiet:
        from exporter.progress import set_quiet

        set_quiet(True)


def _command_line() -> str:
    return "exporter " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command("list-models")
def list_models_cmd() -> None:
    """List the registered architectures."""
    from architectures import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        h, w = spec.input_size
        typer.echo(f"{name:10s} {h}x{w}  {len(spec.labels):2d} classes  {spec.description}")


def _encoder_options(encoder_weights: Path | None, freeze_encoder: bool | None, freeze_epochs: int) -> dict:
    """The architecture options for a pretrained encoder and its freezing."""
    if freeze_epochs and freeze_encoder is not None:
        raise ExporterError("--freeze-epochs freezes the encoder for its first epochs and then trains it; "
                            "drop --freeze-encoder/--train-encoder")
    if encoder_weights is not None:
        if not encoder_weights.is_file():
            raise ExporterError(f"{encoder_weights}: encoder weights file not found")
        # With --freeze-epochs the run freezes and unfreezes the encoder itself.
        frozen = not freeze_epochs if freeze_encoder is None else freeze_encoder
        return {"encoder_weights": str(encoder_weights), "freeze_encoder": frozen}
    return {"freeze_encoder": True} if freeze_encoder else {}


# train's own options, declared once here so the command reads as its parameters.
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT/MODEL/training.")]
OverwriteOpt = Annotated[bool, typer.Option(
        help="Replace a training run already in OUT/MODEL/training (without it, a new run there refuses).")]
SaveEveryOpt = Annotated[int, typer.Option(
        "--save-every", help="Also checkpoint every N steps inside an epoch (0: at epoch ends only).")]
EncoderWeightsOpt = Annotated[Optional[Path], typer.Option(
        help="Local pretrained encoder weights (e.g. ImageNet MobileNetV2 notop .h5), where the model has an encoder.")]
FreezeEncoderOpt = Annotated[Optional[bool], typer.Option(
        "--freeze-encoder/--train-encoder", help="Freeze the encoder (default: only with --encoder-weights).")]
StreamOpt = Annotated[Optional[bool], typer.Option(
        "--stream/--in-memory", help="Read folder data from disk a batch at a time instead of decoding it all first "
                                     "(default: stream when the decoded data would exceed 2 GiB).",
        show_default=False)]
FreezeEpochsOpt = Annotated[int, typer.Option(
        "--freeze-epochs", help="Keep the encoder frozen for the first N epochs, then train it too at a tenth of the "
                                "scheduled rate (with --encoder-weights: fine-tuning a pretrained encoder).")]
DistributeOpt = Annotated[str, typer.Option(
        help="none, mirrored: each batch split across all local GPUs (or --cpu-devices N CPU devices), or "
             "multiworker: across the processes named in TF_CONFIG (the chief writes OUT).")]
CpuDevicesOpt = Annotated[int, typer.Option(
        "--cpu-devices", help="With --distribute mirrored: mirror over N logical CPU devices (testing without GPUs).")]


@app.command()
def train(
    model: ModelOpt,
    data: DataOpt = "synthetic",
    epochs: EpochsOpt = Schedule.epochs,
    out: OutOpt = Path("runs"),
    input_size: SizeOpt = None,
    classes: ClassesOpt = None,
    batch_size: BatchOpt = Schedule.batch_size,
    lr: LrOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    save_every: SaveEveryOpt = 0,
    seed: SeedOpt = Schedule.seed,
    encoder_weights: EncoderWeightsOpt = None,
    freeze_encoder: FreezeEncoderOpt = None,
    train_samples: TrainSamplesOpt = DataSpec.train_samples,
    val_samples: ValSamplesOpt = DataSpec.val_samples,
    loss: LossOpt = DEFAULT_LOSS,
    class_weights: ClassWeightsOpt = None,
    lr_schedule: LrScheduleOpt = DEFAULT_SCHEDULE,
    warmup_epochs: WarmupOpt = 0,
    augment: AugmentOpt = DEFAULT_AUGMENT,
    stream: StreamOpt = None,
    freeze_epochs: FreezeEpochsOpt = 0,
    distribute: DistributeOpt = "none",
    cpu_devices: CpuDevicesOpt = 0,
    input_norm: InputNormOpt = None,
    labels: LabelsOpt = None,
) -> None:
    """Train a model; writes checkpoints, previews, curves.png and OUT/MODEL/training/weights.h5.

    A folder that already holds a run is never replaced without --overwrite; --resume continues it
    from its last checkpoint (epoch end, or every --save-every steps), also after a kill."""
    from architectures import build, get_spec, resolve_config
    from calibration.sources import load_splits
    from exporter.distribute import is_chief, make_strategy, scope
    from exporter.options import parse_labels
    from exporter.train import claim_run_dir, seed_everything, train as run_training, training_dir

    names = parse_labels(labels)
    if input_norm is not None:
        from architectures.input_norm import parse

        parse(input_norm)  # one line before any slow work
    if resume and overwrite:
        raise ExporterError("--resume continues the run in OUT/MODEL/training, --overwrite replaces it: pick one")
    schedule = Schedule(epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed, save_every=save_every,
                        loss=loss, class_weights=class_weights, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                        augment=augment, freeze_epochs=freeze_epochs)  # checks the recipe before any slow work
    options = _encoder_options(encoder_weights, freeze_encoder, freeze_epochs)
    chief = is_chief(distribute)  # a multiworker run's other workers only read the run folder (checks TF_CONFIG)
    if not overwrite and chief:  # refuse before any slow work; --overwrite replaces the run once the data loaded
        claim_run_dir(training_dir(out, model), resume=resume, overwrite=False)
    strategy = make_strategy(distribute, cpu_devices)  # before TensorFlow uses a device (TFRecord data does)
    config = resolve_config(model, input_size=input_size, num_classes=len(names) if names else classes,
                            input_norm=input_norm, **options)
    splits = load_splits(data, config.input_size, config.num_classes, train_samples=train_samples,
                         val_samples=val_samples, stream=stream)
    if names is not None and len(names) != len(splits.labels):
        raise ExporterError(f"--labels names {len(names)} classes; the data {data} has {len(splits.labels)}")
    config = resolve_config(model, input_size=input_size, labels=names or splits.labels, input_norm=input_norm,
                            **options)
    seed_everything(seed)  # before the model is built: seeded initial weights
    with scope(strategy):
        network = build(config)
    state = run_training(network, config, get_spec(model), splits, out, schedule, resume=resume,
                         overwrite=overwrite, data_spec=data, strategy=strategy, chief=chief)
    last = state["history"][-1] if state["history"] else {}
    typer.echo(f"trained {model}: {state['epochs_done']} epochs, held-out mIoU {last.get('val_miou', float('nan')):.4f}; "
               f"weights in {Path(state['written_to']) / 'weights.h5'}")


_Q, _D, _B, _S = QuantSpec(), DataSpec(), BenchSpec(), Schedule()  # every default is declared in these specs
PtqMethodOpt = Annotated[Optional[str], typer.Option(
    "--ptq-method", help="Post-training methods applied to the float graph before int8, comma-separated: "
                         "cle, smoothquant, adaround, bias_correction (or bias_correction_act), or 'auto' (none, "
                         "bias_correction_act and smoothquant+bias_correction_act, where they apply, scored on "
                         "training samples outside the calibration set; docs/ptq-methods.md). Their "
                         "file is measured beside the plain one; the better ships as MODEL_int8.tflite. Implies int8.")]

# convert's options, declared once here so the command reads as its parameters.
PrecisionOpt = Annotated[Optional[str], typer.Option(
        "--precision", help=f"TFLite precisions to write, comma-separated, from {', '.join(tflite_precisions())} "
                            "(float32 is always written; int8 also writes int8 QDQ ONNX).")]
Int8Opt = Annotated[bool, typer.Option("--int8", help="Same as --precision int8.")]
Fp16Opt = Annotated[bool, typer.Option("--fp16", help="Same as --precision float16 (for GPU delegates).")]
DynamicOpt = Annotated[bool, typer.Option("--dynamic", help="Same as --precision dynamic.")]
Int16x8Opt = Annotated[bool, typer.Option("--int16x8", help="Same as --precision int16x8.")]
WeightsOpt = Annotated[Optional[Path], typer.Option(help="Trained weights: a training folder written by `exporter train` "
                                                         "(or its weights.h5); what your own training code saved (a TF "
                                                         "checkpoint as its prefix, e.g. Lips.ckpt, its .index or its "
                                                         "folder; a weights .h5; a model .h5/.keras; a SavedModel folder; "
                                                         "a TF1 research/deeplab train_logdir: README, 'Convert the model "
                                                         "you trained'); or a Hugging Face SegFormer folder. Without it, the finished run in "
                                                         "OUT/MODEL/training is used, and only when there is none the "
                                                         "model is trained first.")]
IoOpt = Annotated[IO, typer.Option(help="Input/output type of the int8 file.")]
PerTensorOpt = Annotated[bool, typer.Option(
        "--per-tensor", help="Post-training int8/int16x8 weights with one scale per tensor instead of per output "
                             "channel: smaller files for depthwise-heavy models, what some NPU/DSP delegates need; "
                             "may cost accuracy.")]
CalibrationSamplesOpt = Annotated[int, typer.Option(help="Representative training samples for int8 calibration.")]
RangePercentileOpt = Annotated[float, typer.Option(
        help="int8 activation ranges: each tensor's calibrated min/max narrowed to this percentile of its values "
             "(outliers saturate, the rest round finer); 100 keeps TFLite's min/max.")]
OnnxOpt = Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also write a float32 ONNX file.")]
BenchOpt = Annotated[bool, typer.Option("--bench/--no-bench", help="Measure latency.")]
ThreadsOpt = Annotated[str, typer.Option(help="Thread counts to benchmark, comma-separated.")]
ArmOpt = Annotated[Optional[str], typer.Option(
        "--arm", help="ARM cores to emulate each TFLite file on (instructions per inference, agreement with the "
                      f"host; needs `make arm-env`), comma-separated, or 'none' (default: {','.join(_B.arm)}; "
                      "none with --no-bench).", show_default=False)]
NoArmOpt = Annotated[bool, typer.Option("--no-arm", help="Skip the ARM emulation (same as --arm none).")]
GpuRunOpt = Annotated[bool, typer.Option(
        "--gpu-run/--no-gpu-run", help="Run each TFLite file on LiteRT's GPU accelerator (a software Vulkan device "
                                       "here; needs `make gpu-env`) against LiteRT's CPU; on with --bench.")]
RequireGpuCompatibleOpt = Annotated[bool, typer.Option(
        "--require-gpu-compatible", "--gpu",
        help="Fail unless the float TFLite files are fully GPU-delegate compatible (a static check; nothing runs on "
             "a GPU here). --gpu is its old name.")]
StrictOpt = Annotated[bool, typer.Option(help="Exit non-zero when an accuracy check of a shipped file fails (CI gates).")]
QatOpt = Annotated[bool, typer.Option("--qat", help="Also quantisation-aware training from the trained float model: "
                                                     "the better of the QAT and post-training files on held-out data "
                                                     "ships as MODEL_int8.tflite, the other keeps MODEL_int8_qat/_ptq. "
                                                     "Implies int8.")]
QatEpochsOpt = Annotated[int, typer.Option(help="QAT fine-tuning epochs.")]
QatLrOpt = Annotated[Optional[float], typer.Option("--qat-lr", help="QAT learning rate (default: a hundredth of the model's training rate).")]
QatTargetsOpt = Annotated[str, typer.Option(
        "--qat-targets", help="What QAT fits: 'float' (the float model's class probabilities: the int8 model learns to compute "
                              "what the float one does) or 'labels' (the ground-truth masks).")]
KeepFloatOpt = Annotated[Optional[str], typer.Option(
        "--keep-float", help="Also write MODEL_int8_mixed.tflite with these layers in float: 'auto' (fewest of the "
                             "worst-ranked layers that meet --max-miou-drop on held-out data) or LAYER,LAYER "
                             "(names from `exporter inspect --quant`). Implies int8.")]
MaxMiouDropOpt = Annotated[Optional[float], typer.Option(
        help="--keep-float auto target: mIoU drop below float as a fraction, like every threshold "
             "(0.001 = 0.1 point; default: the model's int8 target).")]
KeepFloatTriesOpt = Annotated[int, typer.Option(help="--keep-float auto: at most this many layers kept float.")]
LayerErrorsOpt = Annotated[int, typer.Option(help="Worst layers by int8 error listed in the report (0: skip).")]


ConvertModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Architecture name (see `exporter list-models`); or --from FILE for any model.")]
FromOpt = Annotated[Optional[Path], typer.Option(
    "--from", help="Any segmentation model instead of --model: a .keras/full-model .h5 file, a SavedModel folder, "
                   "a float .tflite or an .onnx. Its files keep its own input and output contract; needs --data "
                   "(plain images are enough).")]
NameOpt = Annotated[Optional[str], typer.Option(help="--from: the run's name (default: the file's stem).")]
OutputKindOpt = Annotated[Optional[str], typer.Option(
    "--output", help="--from: what the mask output holds: logits, probabilities or sigmoid (default: the file's "
                     "metadata, else its last op).")]


PeersOpt = Annotated[bool, typer.Option(
    "--peers/--no-peers", help="With int8 and ARM: AI Edge Quantizer's plain int8 of the same float32 file and "
                               "TFLiteConverter's default full-integer file of the training graph, measured "
                               "beside the recommended file (reported, never recommended).")]

OutputActivationOpt = Annotated[str, typer.Option(
    "--output-activation", help="model: the file ends in the architecture's own output activation (today's files); "
                                "none: it outputs logits and its metadata declares SOFTMAX (SIGMOID for one "
                                "channel), which MediaPipe's ImageSegmenter applies.")]
OutputSizeOpt = Annotated[str, typer.Option(
    "--output-size", help="input: scores at the input resolution; native: the decoder's own resolution (the final "
                          "bilinear resize cut off; MediaPipe's ImageSegmenter upsamples to the image size); "
                          "aligned:R (or aligned:HxW): the decoder's logits resampled in the file to an RxR grid "
                          "whose aligned-corners upsample (MediaPipe's) reproduces the model's own resize. native "
                          "and aligned:R only for architectures that end in such a resize (deeplab, segformer).")]


@app.command()
def convert(
    model: ConvertModelOpt = None,
    from_: FromOpt = None,
    name: NameOpt = None,
    output: OutputKindOpt = None,
    precision: PrecisionOpt = None,
    int8: Int8Opt = False,
    fp16: Fp16Opt = False,
    dynamic: DynamicOpt = False,
    int16x8: Int16x8Opt = False,
    weights: WeightsOpt = None,
    data: DataOpt = _D.source,
    out: OutOpt = Path("runs"),
    io: IoOpt = IO(_Q.io),
    per_tensor: PerTensorOpt = _Q.per_tensor,
    calibration_samples: CalibrationSamplesOpt = _Q.calibration_samples,
    range_percentile: RangePercentileOpt = _Q.range_percentile,
    input_size: SizeOpt = None,
    classes: ClassesOpt = None,
    onnx: OnnxOpt = True,
    bench: BenchOpt = _B.enabled,
    threads: ThreadsOpt = ",".join(map(str, _B.threads)),
    arm: ArmOpt = None,
    no_arm: NoArmOpt = False,
    epochs: EpochsOpt = _S.epochs,
    batch_size: BatchOpt = _S.batch_size,
    lr: LrOpt = None,
    train_samples: TrainSamplesOpt = _D.train_samples,
    val_samples: ValSamplesOpt = _D.val_samples,
    require_gpu_compatible: RequireGpuCompatibleOpt = False,
    gpu_run: GpuRunOpt = True,
    peers: PeersOpt = True,
    strict: StrictOpt = False,
    qat: QatOpt = _Q.qat,
    qat_epochs: QatEpochsOpt = _Q.qat_epochs,
    qat_lr: QatLrOpt = None,
    qat_targets: QatTargetsOpt = _Q.qat_targets,
    keep_float: KeepFloatOpt = None,
    max_miou_drop: MaxMiouDropOpt = None,
    keep_float_tries: KeepFloatTriesOpt = _Q.keep_float_tries,
    ptq_method: PtqMethodOpt = None,
    layer_errors: LayerErrorsOpt = _Q.layer_errors,
    seed: SeedOpt = _S.seed,
    input_norm: InputNormOpt = None,
    labels: LabelsOpt = None,
    output_activation: OutputActivationOpt = "model",
    output_size: OutputSizeOpt = "input",
) -> None:
    """Convert a model to TFLite (and ONNX), validate parity on held-out data, benchmark, report.

    --model NAME: one of our architectures, trained here or loaded from --weights. --from FILE: any
    segmentation model (Keras, SavedModel, float TFLite, ONNX) in its own input and output contract."""
    from exporter.arm.cost_stage import parse_cores
    from exporter.options import parse_labels
    from exporter.pipeline import convert as run_convert

    arm_cores = () if no_arm else parse_cores(arm) if arm is not None else _B.arm if bench else ()
    precisions = parse_precisions(precision, {"int8": int8, "fp16": fp16, "dynamic": dynamic, "int16x8": int16x8})
    bench_spec = BenchSpec(enabled=bench, threads=_thread_counts(threads), arm=arm_cores, gpu=gpu_run, peers=peers)
    if (model is None) == (from_ is None):
        raise ExporterError("give --model NAME (an architecture of `exporter list-models`) or --from FILE (any "
                            "segmentation model), not " + ("both" if model else "neither"))
    if from_ is not None:
        mine = {"--weights": weights is not None, "--qat": qat, "--keep-float": keep_float is not None,
                "--ptq-method": ptq_method is not None, "--input-size": input_size is not None,
                "--classes": classes is not None, "--output-activation": output_activation != "model",
                "--output-size": output_size != "input"}
        if any(mine.values()):
            raise ExporterError(f"{next(k for k, v in mine.items() if v)} is for --model; --from converts the file as it is")
        from exporter.stages.foreign import ForeignOptions, convert_from

        report = convert_from(ForeignOptions(
            source=from_, precisions=("float32", *(p for p in precisions if p != "float32")), data=data, out=out,
            name=name, input_norm=input_norm, labels=parse_labels(labels), output=output,
            calibration_samples=calibration_samples, val_samples=val_samples, onnx=onnx, bench=bench_spec,
            command=_command_line()))
        _print_summary(report, out, strict)
        return
    if name is not None or output is not None:
        raise ExporterError(f"{'--name' if name is not None else '--output'} is for --from")
    report = run_convert(ConvertOptions(
        model=model, onnx=onnx, weights=weights, out=out, command=_command_line(),
        precisions=precisions,
        data=DataSpec(source=data, train_samples=train_samples, val_samples=val_samples, input_size=input_size,
                      classes=classes),
        schedule=Schedule(epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed),
        quant=QuantSpec(io=io.value, per_tensor=per_tensor, calibration_samples=calibration_samples,
                        range_percentile=range_percentile, qat=qat, qat_epochs=qat_epochs, qat_lr=qat_lr,
                        qat_targets=qat_targets, keep_float=keep_float, max_miou_drop=max_miou_drop,
                        keep_float_tries=keep_float_tries, layer_errors=max(layer_errors, 0),
                        ptq_methods=tuple(m.strip() for m in (ptq_method or "").split(",") if m.strip())),
        bench=bench_spec,
        gate=GateSpec(require_gpu_compatible=require_gpu_compatible),
        input_norm=input_norm, labels=parse_labels(labels),
        output_activation=output_activation, output_size=output_size,
    ))
    _print_summary(report, out, strict)


def _print_summary(report: dict, out: Path, strict: bool) -> None:
    from exporter.errors import ParityError
    from exporter.policy import strict_failures
    from exporter.report import recommended_lines, summary_table, verdict

    for check in report["checks"]:
        typer.echo(f"{verdict(check)}  {check['name']}: {check['detail']}")
    for line in filter(None, recommended_lines(report)):
        typer.echo(line.replace("**", "").removeprefix("- "))
    typer.echo(f"report: {out / report['model'] / 'report.md'}\n")
    typer.echo(summary_table(report))  # last: what a user reads first
    failed = strict_failures(report["checks"])
    if strict and failed:
        raise ParityError(f"{len(failed)} accuracy check(s) failed: {failed[0]['name']} ({failed[0]['detail']})")


def _thread_counts(spec: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in spec.split(",") if t.strip())
    except ValueError:
        raise ExporterError(f"--threads {spec!r}: expected comma-separated integers such as 1,2") from None


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A .tflite or .onnx file.")],
    quant: Annotated[bool, typer.Option(
        "--quant", help="Per-layer int8 error of a post-training int8 .tflite written by `exporter convert` "
                        "(its report.json beside it names the float model and data), on held-out samples.")] = False,
    top: Annotated[int, typer.Option(help="--quant: how many of the worst layers to list.")] = 15,
    samples: Annotated[int, typer.Option(help="--quant: held-out samples to measure on.")] = 32,
) -> None:
    """Print a model file's inputs, outputs and op histogram (--quant: its worst layers by int8 error)."""
    from exporter.inspect import describe_file, quant_errors

    typer.echo(quant_errors(path, top=top, samples=samples) if quant else describe_file(path))


@app.command("check-data")
def check_data(
    data: Annotated[str, typer.Argument(help="A data folder (images/+masks/, Oxford-IIIT Pet or PASCAL VOC layout), "
                                             "or folder:DIR / pet:DIR / voc:DIR.")],
    classes: Annotated[Optional[int], typer.Option(
        "--classes", help="Number of classes (default: the layout's or labels.txt's names, else the largest label).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the problems and class table as JSON here.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Decoding threads (default: one per CPU).")] = None,
) -> None:
    """Check a dataset in one pass: every bad file on its own line, then the class table. Exit 0 usable, 1 problems."""
    from calibration.audit import audit, format_table
    from exporter.artifacts import write_json

    if workers is not None and workers < 1:
        raise ExporterError("--workers must be at least 1")
    result = audit(data, classes, workers=workers)
    typer.echo(f"checked {result.source}: {result.images} image(s), {result.masks} mask(s), {result.pairs} pair(s), "
               f"{len(result.labels)} classes (from {result.classes_from}) in {result.seconds:.1f} s")
    for note in result.notes:
        typer.echo(f"note: {note}")
    for problem in result.problems:
        typer.echo(problem.message)
    for line in format_table(result):
        typer.echo(line)
    if json_out is not None:
        write_json(json_out, result.to_json())
    files = len({p.path for p in result.problems})
    typer.echo(f"{len(result.problems)} problem(s) in {files} file(s)" if result.problems else "usable: no problems found")
    if result.problems:
        sys.exit(1)  # not typer.Exit: with standalone_mode=False its code would be returned, not exited with


@app.command("op-bench")
def op_bench(
    op: Annotated[Optional[list[str]], typer.Option("--op", help="Op kinds to time (repeatable; default: all).")] = None,
    size: Annotated[int, typer.Option(help="Feature-map side (pixels).")] = 32,
    channels: Annotated[int, typer.Option(help="Feature channels.")] = 96,
    threads: Annotated[int, typer.Option(help="LiteRT threads.")] = 1,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the rows as JSON here.")] = None,
) -> None:
    """Does int8 pay off on this CPU? float32 vs int8 LiteRT latency per op type, one alternating run."""
    from exporter.artifacts import write_json
    from exporter.op_bench import OPS, check_ops, cpu_features, run

    if size < 4 or channels < 1 or threads < 1:
        raise ExporterError("--size must be at least 4, --channels and --threads at least 1")
    check_ops(op or OPS)  # before the table header: bad input gets its one line and nothing else
    typer.echo(f"CPU SIMD features: {cpu_features()}; {size}x{size}x{channels}, {threads} thread(s), "
               "each op 10 times after a 3x3 stem; ratio > 1: int8 faster")
    typer.echo(f"{'op':16s} {'float32 ms':>10s} {'int8 ms':>9s} {'float32/int8':>13s}")
    rows = run(op or OPS, size=size, channels=channels, threads=threads,
               progress=lambda r: typer.echo(f"{r['op']:16s} {r['float32_ms']:10.3f} {r['int8_ms']:9.3f} "
                                             f"{r['int8_speedup']:12.2f}x"))
    if json_out is not None:
        write_json(json_out, {"cpu_features": cpu_features(), "size": size, "channels": channels,
                              "threads": threads, "rows": rows})


@app.command("benchmark")
def benchmark_cmd(
    files: Annotated[list[Path], typer.Argument(help=".tflite or .onnx files, ours or anyone's.")],
    threads: Annotated[str, typer.Option(help="Thread counts to time, comma-separated.")] = "1,2",
    runs: Annotated[int, typer.Option(help="Timed runs per file and thread count.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs per file and thread count first.")] = 5,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here.")] = None,
    markdown_out: Annotated[Optional[Path], typer.Option("--markdown", help="Also write it as Markdown here.")] = None,
    arm: Annotated[Optional[str], typer.Option(
        "--arm", help="Also count instructions per inference of each .tflite on emulated ARM cores "
                      "(cortex-a76,cortex-a55; needs `make arm-env`).")] = None,
    onnx_mobile: Annotated[bool, typer.Option(
        "--onnx-mobile", help="Also run ONNX Runtime's mobile usability checker on .onnx files (NNAPI/CoreML "
                              "partitions; seconds per file).")] = False,
    gpu: Annotated[bool, typer.Option(
        "--gpu", help="Also run each .tflite on LiteRT's GPU accelerator alone (a software Vulkan device here; "
                      "needs `make gpu-env`): fully accelerated or which ops fell back, agreement with the CPU.")] = False,
) -> None:
    """Time and describe model files side by side: precision, I/O, ops, delegation, latency. Exit 1 if a file failed."""
    from exporter.artifacts import write_json, write_bytes
    from exporter.benchmark_files import (BenchmarkError, benchmark_files, details, markdown, parse_cores,
                                          parse_threads, summary_table)
    from exporter.progress import say

    thread_counts, cores = parse_threads(threads), parse_cores(arm)
    if runs < 1 or warmup < 0:
        raise ExporterError("--runs must be at least 1 and --warmup at least 0")
    report = benchmark_files(files, thread_counts, runs=runs, warmup=warmup, arm_cores=cores,
                             onnx_mobile=onnx_mobile, say=say, gpu=gpu)
    for row in report["files"]:
        for line in details(row):
            typer.echo(line)
    if gpu and report["gpu"].get("status"):
        typer.echo(f"GPU: not measured: {report['gpu']['status']}")
    if cores and report["arm"].get("status"):
        typer.echo(f"ARM: not measured: {report['arm']['status']}")
    elif cores:
        typer.echo(f"ARM ratio baseline: {report['arm']['baseline'] or report['arm']['baseline_note']}")
    typer.echo("")
    for line in summary_table(report):
        typer.echo(line)
    if json_out is not None:
        write_json(json_out, report)
    if markdown_out is not None:
        write_bytes(markdown_out, markdown(report).encode())
    failed = [row for row in report["files"] if row["status"] != "ran"]
    if failed:
        raise BenchmarkError(f"{len(failed)} of {len(report['files'])} file(s) failed: "
                             + "; ".join(f"{row['file']}: {row['reason']}" for row in failed))


@app.command("validate")
def validate_cmd(
    candidate: Annotated[Path, typer.Argument(help="The file to check (.tflite or .onnx), ours or anyone's.")],
    reference: Annotated[Path, typer.Option(
        help="The float file it must agree with: .tflite, .onnx, or Keras weights (.h5) with --model.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Architecture of a Keras --reference; also gives the default gates (its int8 "
                              "targets) when no --fail-below or --gate is given.")] = None,
    data: DataOpt = "synthetic",
    samples: Annotated[int, typer.Option(help="Held-out samples to compare on (at most).")] = 100,
    mean: Annotated[Optional[str], typer.Option(
        help="For a file whose input contract is not declared (no MediaPipe metadata, not ours): the mean "
             "subtracted from 0..255 pixels, one value or one per channel.")] = None,
    std: Annotated[Optional[str], typer.Option(help="... and the std they are divided by (see --mean).")] = None,
    input_norm: InputNormOpt = None,
    fail_below: Annotated[Optional[str], typer.Option(
        "--fail-below", help="Gates, fractions: metric=threshold,... from agreement, miou, miou_delta, "
                             "class_iou_delta, e.g. agreement=0.99,miou_delta=-0.005,class_iou_delta=-0.015.")] = None,
    gate: Annotated[Optional[Path], typer.Option(
        "--gate", help="Gates from a TOML (or YAML) file: a [fail_below] table of metric = threshold.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", help="The candidate's mask output, by index or name (default: the largest 4-D output).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write all metrics and gate results here.")] = None,
    junit_out: Annotated[Optional[Path], typer.Option("--junit", help="Write JUnit XML here (one testcase a gate).")] = None,
) -> None:
    """Parity gate: candidate vs reference on held-out data. Exit 0 gates pass, 1 a gate failed, 2 bad input."""
    from exporter.artifacts import write_bytes, write_json
    from exporter.progress import say
    from exporter.validate import GateError, failures, markdown, parse_values, resolve_gates, validate

    gates, source = resolve_gates(fail_below, gate, model)  # bad gates fail before any work
    mean_std = (parse_values(mean, "mean"), parse_values(std, "std"))
    if input_norm is not None:  # the same (x - mean) / std, named; also the Keras reference's normalisation
        from architectures.input_norm import parse

        if mean is not None or std is not None:
            raise ExporterError("--input-norm and --mean/--std say the same thing: give one of them")
        mean_std = (parse(input_norm).mean, parse(input_norm).std)
    result = validate(candidate, reference, model=model, data=data, samples=samples, mean=mean_std[0],
                      std=mean_std[1], gates=gates, gate_source=source, output=output, say=say, input_norm=input_norm)
    typer.echo(markdown(result), nl=False)
    if json_out is not None:
        write_json(json_out, result)
    if junit_out is not None:
        from exporter.validate import junit

        write_bytes(junit_out, junit(result).encode())
    if failures(result):  # each failing gate is one line of the summary above: metric, value, threshold
        raise GateError(f"{len(failures(result))} gate(s) failed: "
                        + ", ".join(g["metric"] for g in result["gates"] if not g["passed"]))


def _usage_errors() -> tuple[type, ...]:
    """click's UsageError, from typer's own copy of click (recent typer releases vendor it as typer._click)
    and from click itself (older typer): the lock pins one, the range in pyproject admits both."""
    return tuple(_click_class(module, "UsageError") for module in ("typer._click.exceptions", "click.exceptions")
                 if _click_class(module, "UsageError") is not None)


def _exits() -> tuple[type, ...]:
    return tuple(c for c in (typer.Exit, _click_class("click.exceptions", "Exit")) if c is not None)


def _click_class(module: str, name: str) -> type | None:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def main() -> None:
    """Console entry point: the one place errors are turned into a line and an exit code."""
    global _debug
    _debug = "--debug" in sys.argv
    if not (_debug or "--verbose" in sys.argv):  # --verbose and --debug show everything the runtimes print
        from exporter.quiet import filter_native_stderr, quiet_library_warnings

        quiet_library_warnings()
        filter_native_stderr()
    try:
        app(standalone_mode=False)
    except ExporterError as exc:
        if _debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors and anything unexpected
        if isinstance(exc, _usage_errors()):  # exit 2 with the usage line, as click's own main does
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, _exits()):
            sys.exit(exc.exit_code)
        if _debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: {exc.__class__.__name__}: {first} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
