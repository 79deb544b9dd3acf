"""`convert --from FILE`: a model we did not build, through the same stages as a registry model.

source (architectures.importers.foreign: the float32 TFLite, the engine, the reference) ->
files per precision (the original's input and output contract, its MediaPipe metadata kept or
written) -> int8 candidates when plain int8 does not pay (exporter.stages.foreign_search) ->
held-out parity against the ORIGINAL model -> host latency -> ARM cost -> GPU accelerator -> report.

Every stage after the source is fed the model's own input tensors ((pixels - mean) / std, in its
layout): the files are the original's contract, not ours. Data without masks (a folder of plain
images) gives agreement, probability error and per-class IoU against the reference's classes;
the report says no ground truth was given.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from exporter.artifacts import Artifact
from exporter.errors import ExporterError
from exporter.formats import artifact_name, variant
from exporter.progress import say
from exporter.stages.export import write_artifact
from exporter.stages.measure import arm_files, gpu_files, per_class, time_files
from exporter.stages.run import publish, staging_folder

POLICY = "--from"  # exporter.policy's targets for foreign models


@dataclasses.dataclass(frozen=True)
class ForeignOptions:
    source: Path
    precisions: tuple[str, ...]
    data: str
    out: Path = Path("runs")
    name: str | None = None
    input_norm: str | None = None
    labels: tuple[str, ...] | None = None
    output: str | None = None
    calibration_samples: int = 64
    val_samples: int = 50
    onnx: bool = True
    bench: object = None  # exporter.options.BenchSpec
    keep_float_auto: bool = True  # search int8 variants when plain int8 misses the gate (foreign_search)
    command: str = ""


@dataclasses.dataclass
class Samples:
    """Images (uint8 RGB NHWC), their masks (None: plain images) and ids; `inputs` the model's own tensors."""

    images: np.ndarray
    masks: np.ndarray | None
    ids: list
    inputs: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


class _AsModelInputs:
    """What the ARM stage reads (`images`, `ids`): the model's own input tensors, fed as they are."""

    def __init__(self, s: Samples):
        self.images, self.ids = s.inputs, s.ids

    def __len__(self):
        return len(self.images)


def convert_from(opts: ForeignOptions) -> dict:
    from architectures.importers.foreign import kind_of, open_foreign

    started = time.time()
    kind_of(Path(opts.source))  # a missing or unreadable path fails before any work
    if opts.data in (None, "", "synthetic"):
        raise ExporterError("--from needs --data DIR: images like those the model will see (plain images, or "
                            "images/ and masks/), for calibration and held-out parity; the synthetic scenes are "
                            "not this model's domain")
    with tempfile.TemporaryDirectory(prefix="segexport-from-") as work:
        fm = open_foreign(Path(opts.source), Path(work), input_norm=opts.input_norm, labels=opts.labels,
                          output=opts.output, name=opts.name)
        calib, val, data_info = load_data(opts, fm.contract)
        with staging_folder(opts.out, fm.name) as staging:
            arts = write_files(fm, opts, calib, staging)
            ref = reference(fm, val)
            arts = accuracy(fm, arts, val, ref, staging)
            search = {}
            if "int8" in opts.precisions and opts.keep_float_auto:
                from exporter.stages.foreign_search import int8_candidates

                extra, search = int8_candidates(fm, arts, calib, val, staging, writer=_tflite_writer(fm, staging),
                                                measure=lambda a: accuracy(fm, a, val, ref, staging))
                arts += extra
            arts, bench = latency(opts, fm.contract, arts, val, staging)
            arts, arm = arm_cost(opts, arts, val, staging)
            arts, gpu = gpu_files(opts.bench.enabled and opts.bench.gpu, arts, staging, val.inputs)
            report = assemble(fm, opts, arts, ref, calib, val, data_info, staging,
                              {"benchmark": bench, "arm": arm, "gpu": gpu, "search": search}, started)
            from exporter.report import write_report

            write_report(report, staging)
            publish(staging, Path(opts.out) / fm.name)
    return report


# --- data ---------------------------------------------------------------------------------------

def load_data(opts: ForeignOptions, contract) -> tuple[Samples, Samples, dict]:
    """Calibration samples from the training part, held-out samples never calibrated on."""
    from exporter.validate import load_splits_any

    size = (contract.height, contract.width)
    parts = load_splits_any(opts.data, size, contract.num_classes, opts.calibration_samples, opts.val_samples)
    calib, val = (Samples(p["images"], p["masks"], p["ids"], contract.inputs(p["images"]))
                  for p in (parts["train"], parts["val"]))
    if len(val) < 1 or len(calib) < 1:
        raise ExporterError(f"--data {opts.data}: {len(calib)} calibration and {len(val)} held-out images; "
                            "at least one of each is needed")
    info = {"spec": opts.data, "source": parts["source"], "masks": val.masks is not None,
            "heldout_samples": len(val), "heldout_ids": list(val.ids)[:50],
            "ground_truth": "masks given" if val.masks is not None else
            "none given: agreement, probability error and per-class IoU against the reference's classes"}
    say(f"data: {len(calib)} calibration and {len(val)} held-out images from {parts['source']}")
    return calib, val, info


# --- files --------------------------------------------------------------------------------------

def with_metadata(fm, blob: bytes) -> bytes:
    """The original's MediaPipe metadata kept, else ours written (labels, normalisation, activation)."""
    import exporter
    from exporter.metadata import add_segmenter_metadata, copy_metadata

    if fm.metadata_source is not None:
        return copy_metadata(fm.metadata_source, blob)
    c = fm.contract
    if c.channels_first:
        return blob  # MediaPipe feeds NHWC images only: no segmenter metadata for an NCHW input
    labels = c.labels if c.channels > 1 else c.labels[1:]
    try:
        return add_segmenter_metadata(blob, name=fm.name, description=f"{fm.name}, converted from {fm.path.name}",
                                      labels=list(labels) if len(labels) > 1 or c.channels == 1 else list(c.labels),
                                      mean=list(c.mean), std=list(c.std), output_activation=c.activation,
                                      version=exporter.__version__, check=False)
    except ValueError as exc:
        say(f"warning: {fm.name}: no MediaPipe metadata written ({exc})")
        return blob


def _tflite_writer(fm, staging: Path):
    def write(blob: bytes, name: str, precision: str, method: str, facts: dict, role: str | None = None) -> Artifact:
        from exporter.metadata import mediapipe_problems
        from exporter.stages.export import tflite_facts

        blob = with_metadata(fm, blob)
        facts = {**tflite_facts(blob, mediapipe_problems(blob)), "io": "float", **facts}
        return write_artifact(staging, blob, name, "tflite", precision, method, facts, role)
    return write


def write_files(fm, opts: ForeignOptions, calib: Samples, staging: Path) -> list[Artifact]:
    write = _tflite_writer(fm, staging)
    out = []
    for precision in opts.precisions:
        row = variant("tflite", precision)
        say(f"{fm.engine}: TFLite {precision}" + (f" ({len(calib)} calibration samples)" if row.calibrated else ""))
        blob = fm.quantise(precision, calib.inputs if row.calibrated else None)
        facts = {"engine": "none (the float file)" if precision == "float32" else fm.engine}
        if precision == "int8" and fm.kind in ("tflite", "onnx"):  # the plain recipe on the same float file
            from exporter.stages.peers import AEQ_WHAT

            facts["peer"] = AEQ_WHAT
        out.append(write(blob, artifact_name(fm.name, precision), precision, row.method, facts))
    if opts.onnx and fm.onnx_path is not None:
        out += _onnx_files(fm, opts, calib, staging)
    elif opts.onnx:
        say(f"ONNX: not written ({fm.kind} source; ONNX files are written for --from .onnx)")
    return out


def _onnx_files(fm, opts, calib: Samples, staging: Path) -> list[Artifact]:
    from architectures.importers.foreign.onnx_source import quantise_foreign_onnx
    from exporter.delegates import onnx_mobile_usability

    name = artifact_name(fm.name, "float32", "onnx")
    out = [write_artifact(staging, fm.onnx_path.read_bytes(), name, "onnx", "float32", "none",
                  {"engine": "none (the original ONNX file)"})]
    if "int8" in opts.precisions:
        say(f"ONNX Runtime quantize_static: int8 QDQ ({len(calib)} calibration samples)")
        blob = quantise_foreign_onnx(fm.onnx_path, calib.inputs)
        out.append(write_artifact(staging, blob, artifact_name(fm.name, "int8", "onnx"), "onnx", "int8", "ptq",
                          {"engine": "ONNX Runtime quantize_static (QDQ)"}))
    return [a.measured(mobile=onnx_mobile_usability(staging / a.file)) for a in out]


# --- parity -------------------------------------------------------------------------------------

class FileRunner:
    """A written file on the model's own input tensors; scores NHWC from the mask output."""

    def __init__(self, path: Path, contract, threads: int = 2):
        from exporter.runtimes import open_runner

        self.contract, self.onnx = contract, path.suffix == ".onnx"
        self.runner = open_runner(path, threads, output=contract.head)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        x = self.contract.inputs(pixels)
        if self.onnx and self.contract.channels_first:
            x = x.transpose(0, 2, 3, 1)  # OnnxRunner lays an NCHW input out itself, and reads its output back as NHWC
            return self.runner.predict(x)
        y = self.runner.predict(x)
        return y.transpose(0, 2, 3, 1) if self.contract.channels_first and y.ndim == 4 and \
            y.shape[1] == self.contract.channels and y.shape[-1] != self.contract.channels else y


def _classes_of(contract):
    from exporter.parity import class_map

    return lambda scores: class_map(scores, logits=contract.logits)


def _masks(val: Samples) -> np.ndarray:
    return val.masks if val.masks is not None else np.full(val.images.shape[:3], 255, np.uint8)


def reference(fm, val: Samples) -> dict:
    from exporter.parity import evaluate

    say(f"reference: {fm.reference_description}, on {len(val)} held-out samples")
    c = fm.contract
    return evaluate(fm.reference(), val.images, _masks(val), c.num_classes, classes_of=_classes_of(c))


def accuracy(fm, artifacts: list[Artifact], val: Samples, ref: dict, staging: Path) -> list[Artifact]:
    """Held-out agreement with the original, largest probability difference, per-class IoU (against the
    masks, or against the reference's classes when there are none)."""
    from exporter.parity import evaluate
    c = fm.contract
    truth = val.masks if val.masks is not None else ref["preds"]
    out = []
    for art in artifacts:
        r = evaluate(FileRunner(staging / art.file, c), val.images, truth, c.num_classes, reference_preds=ref["preds"],
                     reference_scores=ref["scores"], classes_of=_classes_of(c))
        extra = {}
        if val.masks is not None:
            extra = {"miou": round(r["miou"], 6), "miou_delta": round(r["miou"] - ref["miou"], 6),
                     "per_class_iou": per_class(c.labels, r["per_class_iou"])}
        else:
            extra = {"miou": None, "miou_delta": None, "per_class_iou": {},
                     "iou_vs_reference": per_class(c.labels, r["per_class_iou"])}
        say(f"{art.file}: agreement with the original {100 * r['agreement']:.3f}%, "
            f"largest probability difference {r['max_abs_diff']:.3g}")
        out.append(art.measured(agreement=round(r["agreement"], 6), max_abs_diff=float(f"{r['max_abs_diff']:.6g}"),
                                **extra))
    return out


# --- speed ----------------------------------------------------------------------------------------

def latency(opts: ForeignOptions, contract, arts: list[Artifact], val: Samples, staging: Path):
    # ONNX Runtime's runner lays an NCHW input out itself (exporter.runtimes.OnnxRunner): NHWC for it.
    nhwc = val.inputs[:1].transpose(0, 2, 3, 1) if contract.channels_first else val.inputs[:1]
    return time_files(opts.bench, arts, staging, {a.file: (nhwc if a.format == "onnx" else val.inputs[:1]) for a in arts})


def arm_cost(opts: ForeignOptions, arts: list[Artifact], val: Samples, staging: Path):
    return arm_files(opts.bench.arm if opts.bench.enabled else (), arts, staging, _AsModelInputs(val))


# --- report ---------------------------------------------------------------------------------------

def assemble(fm, opts: ForeignOptions, arts: list[Artifact], ref: dict, calib: Samples, val: Samples, data: dict,
             staging: Path, sections: dict, started: float) -> dict:
    from exporter import environment
    from exporter.gpu.runner import gpu_runtime_check
    from exporter.recommend import judged
    c = fm.contract
    records = [a.to_json() for a in arts]
    has_masks = val.masks is not None
    shape = [1, 3, c.height, c.width] if c.channels_first else [1, c.height, c.width, 3]
    out = {
        "model": fm.name,
        "policy": POLICY,
        "command": opts.command,
        "source": fm.to_json(),
        "input_shape": shape,
        "input_dtype": {a["file"]: "float32" for a in records},
        "normalisation": c.describe_input(),
        "input_norm": {"mean": list(c.mean), "std": list(c.std), "description": c.describe_input()},
        "output": c.output,
        "labels": list(c.labels),
        "reference": {
            "description": fm.reference_description,
            "miou": round(ref["miou"], 6) if has_masks else None,
            "per_class_iou": per_class(c.labels, ref["per_class_iou"]) if has_masks else {},
        },
        "weights": None,
        "data": data,
        "calibration": {"samples": len(calib), "requested": opts.calibration_samples,
                        "method": "the first images of the training part (never held-out ones)",
                        "ids": list(calib.ids)[:50]},
        "environment": environment.describe(),
        "benchmark": sections["benchmark"],
        **sections["arm"],
        **sections["gpu"],
        "artifacts": records,
        "seconds": round(time.time() - started, 1),
    }
    if "gpu_run" not in sections["gpu"] and records:
        out["gpu_runtime"] = gpu_runtime_check(staging / records[0]["file"])
    if sections.get("search"):
        out["int8_search"] = sections["search"]
    out.update(judged(out))
    if sections.get("search"):
        from exporter.stages.foreign_search import summarise

        out["int8_search"] = summarise(out)
    from exporter.stages.peers import section

    if (peer_section := section(out)) is not None:
        out["peers"] = peer_section
    return out
