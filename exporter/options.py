"""What `convert` is asked to do, one frozen spec per concern, each checked once where it is made.

A bad value fails with one line naming the option before any slow work (ExporterError). Every
default is declared here (or, for training, in exporter.train.Schedule) and nowhere else: the CLI
reads its defaults from these classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from exporter.arm.cost_stage import DEFAULT_CORES, check_cores
from exporter.convert.ranges import DEFAULT_PERCENTILE, check_percentile
from exporter.errors import ExporterError
from exporter.formats import tflite_precisions
from exporter.train import Schedule

# What QAT fine-tunes toward (exporter.qat); see QuantSpec.qat_targets.
QAT_TARGETS = {
    "float": "the float model's class probabilities on the training images (distillation)",
    "labels": "the ground-truth masks of the training images",
}
IO_TYPES = ("uint8", "int8", "float")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    source: str = "synthetic"  # 'synthetic', a folder, folder:DIR / pet:DIR / voc:DIR
    train_samples: int = 400  # synthetic data only
    val_samples: int = 100
    input_size: int | None = None  # None: the model's (or the training run's)
    classes: int | None = None  # None: the data's

    def __post_init__(self):
        if self.train_samples < 1 or self.val_samples < 1:
            raise ExporterError("--train-samples and --val-samples must be at least 1")
        if self.input_size is not None and self.input_size < 1:
            raise ExporterError(f"--input-size {self.input_size}: must be positive")


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    io: str = "uint8"  # input/output type of the full-integer file
    per_tensor: bool = False  # post-training int8 weights: one scale per tensor, not per channel
    calibration_samples: int = 200
    range_percentile: float = DEFAULT_PERCENTILE  # int8 activation ranges (exporter.convert.ranges); 100: min/max
    # Quantisation-aware training: measured beside post-training int8; the better ships as MODEL_int8.tflite.
    qat: bool = False
    qat_epochs: int = 2
    qat_lr: float | None = None  # None: a hundredth of the architecture's training rate (exporter.qat_stage)
    qat_targets: str = "float"  # a key of QAT_TARGETS
    # Layers kept float in an extra MODEL_int8_mixed.tflite: "auto" or "LAYER,LAYER".
    keep_float: str | None = None
    max_miou_drop: float | None = None  # the auto target, a fraction below float; None: the model's
    keep_float_tries: int = 4  # at most this many layers kept float by "auto"
    # Post-training methods applied to the float graph before int8 conversion (exporter.ptq), or
    # ("auto",): the best on a slice disjoint from the report's held-out samples. Their file is
    # measured beside the plain one; the better ships as MODEL_int8.tflite.
    ptq_methods: tuple[str, ...] = ()
    layer_errors: int = 10  # worst layers (QuantizationDebugger, held-out) in the report; 0: none
    debug_samples: int = 32  # held-out samples the debugger measures on

    def __post_init__(self):
        check_percentile(self.range_percentile)
        self.keep_float_layers  # noqa: B018 - parses, so a bad --keep-float fails here
        if self.io not in IO_TYPES:
            raise ExporterError(f"--io {self.io!r}: choose one of {', '.join(IO_TYPES)}")
        if self.calibration_samples < 1:
            raise ExporterError("--calibration-samples must be at least 1")
        if self.qat and self.qat_epochs < 1:
            raise ExporterError(f"--qat-epochs {self.qat_epochs}: QAT needs at least one epoch "
                                "(weight ranges are only set by a training step)")
        if self.qat_targets not in QAT_TARGETS:
            raise ExporterError(f"--qat-targets {self.qat_targets!r}: choose one of {', '.join(QAT_TARGETS)}")
        if self.qat and self.per_tensor:
            raise ExporterError("--per-tensor applies to post-training int8; tfmot's QAT trains per-channel "
                                "weight ranges (drop one of --qat, --per-tensor)")
        if self.keep_float_layers == ["auto"] and self.keep_float_tries < 1:
            raise ExporterError(f"--keep-float-tries {self.keep_float_tries}: must be at least 1")
        if "auto" in self.ptq_methods and len(self.ptq_methods) > 1:
            raise ExporterError("--ptq-method auto chooses among the methods itself: name no others with it")
        if self.ptq_methods and "auto" not in self.ptq_methods:
            from exporter.ptq import check_methods

            check_methods(self.ptq_methods)
        if self.max_miou_drop is not None and not 0 <= self.max_miou_drop < 0.1:
            # Fractions like every threshold: an old points value (0.1, 0.5) would mean 10 or 50 points.
            raise ExporterError(f"--max-miou-drop {self.max_miou_drop:g}: a fraction of mIoU from 0 to 0.1 "
                                f"(0.001 = 0.1 point; did you mean {self.max_miou_drop / 100:g}?)")

    @property
    def wants_int8(self) -> bool:
        return self.qat or self.keep_float is not None or bool(self.ptq_methods)

    @property
    def int8_rivals(self) -> bool:
        """Whether more than one full-integer file competes for MODEL_int8.tflite (exporter.stages.ship)."""
        return self.qat or bool(self.ptq_methods)

    @property
    def keep_float_layers(self) -> list[str] | None:
        """None: no --keep-float; ["auto"] or the named layers."""
        if self.keep_float is None:
            return None
        spec = self.keep_float.strip()
        if spec == "auto":
            return ["auto"]
        layers = [x.strip() for x in spec.split(",") if x.strip()]
        if not layers:
            raise ExporterError(f"--keep-float {self.keep_float!r}: expected 'auto' or layer names "
                                "separated by commas (see `exporter inspect --quant`)")
        return layers


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    enabled: bool = True  # host latency of every file
    threads: tuple[int, ...] = (1, 2)
    arm: tuple[str, ...] = DEFAULT_CORES  # ARM cores each TFLite file's cost is emulated on; (): none
    gpu: bool = True  # each TFLite file on LiteRT's GPU accelerator (exporter.gpu; needs `make gpu-env`)
    peers: bool = True  # AI Edge Quantizer's plain int8 of the float32 file beside ours (exporter.stages.peers)

    def __post_init__(self):
        if not self.threads or any(t < 1 for t in self.threads):
            raise ExporterError(f"--threads {','.join(map(str, self.threads))}: expected positive integers such as 1,2")
        object.__setattr__(self, "arm", check_cores(self.arm))


@dataclasses.dataclass(frozen=True)
class GateSpec:
    require_gpu_compatible: bool = False  # fail unless every float TFLite file is fully GPU-delegate compatible


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    model: str
    precisions: tuple[str, ...] = ("float32", "int8")  # TFLite precisions (exporter.formats); float32 always
    onnx: bool = True  # float32 ONNX, plus int8 QDQ ONNX when int8 is among the precisions
    weights: Path | None = None
    out: Path = Path("runs")
    data: DataSpec = DataSpec()
    schedule: Schedule = Schedule()
    quant: QuantSpec = QuantSpec()
    bench: BenchSpec = BenchSpec()
    gate: GateSpec = GateSpec()
    command: str = ""  # the command line, for the report
    # What the weights were trained with, when not the architecture's own (--input-norm, --labels).
    input_norm: str | None = None
    labels: tuple[str, ...] | None = None
    # The files' output contract (exporter.output_contract): "model"/"input" is the graph as built.
    output_activation: str = "model"
    output_size: str = "input"

    def __post_init__(self):
        from exporter import output_contract

        output_contract.check(self.output_activation, self.output_size)
        if self.quant.qat and (self.output_activation, self.output_size) != ("model", "input"):
            raise ExporterError("--qat exports the QAT training graph, which keeps the model's output contract; "
                                "drop --qat, or --output-activation/--output-size")
        if self.input_norm is not None:
            from architectures.input_norm import parse

            parse(self.input_norm)  # a bad --input-norm fails here, in one line
        if self.labels is not None:
            check_labels(self.labels)
        known = tflite_precisions()
        for p in self.precisions:
            if p not in known:
                raise ExporterError(f"--precision {p!r}: choose from {', '.join(known)}")
        wanted = {"float32", *self.precisions} | ({"int8"} if self.quant.wants_int8 else set())
        object.__setattr__(self, "precisions", tuple(p for p in known if p in wanted))

    @property
    def int8(self) -> bool:
        return "int8" in self.precisions


def parse_labels(text: str | None) -> tuple[str, ...] | None:
    """--labels: names separated by commas, or a labels file (one name a line, as labels.txt)."""
    if text is None:
        return None
    path = Path(text)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ExporterError(f"--labels {text}: unreadable labels file ({exc.__class__.__name__})") from None
    else:
        names = [name.strip() for name in text.split(",")]
    return check_labels(tuple(names))


def check_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    if len(labels) < 2 or any(not name for name in labels) or len(set(labels)) != len(labels):
        raise ExporterError(f"--labels {','.join(labels)!r}: at least two names, none empty, no repeats "
                            "(names separated by commas, or a file with one name a line)")
    return labels
