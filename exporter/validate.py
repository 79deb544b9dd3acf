"""`exporter validate CANDIDATE --reference REFERENCE`: the parity gate, for files that already exist.

REFERENCE is a float .tflite or .onnx, or Keras weights with --model; CANDIDATE any file of the
same model (int8, float16, ONNX...), ours or anyone's. Both run on the held-out split of --data
(exporter.parity, the metrics `convert` reports), each fed through its own input contract
(exporter.modelfile: MediaPipe metadata, our 0..255 contract, else --mean/--std). Data without
masks (a folder of plain images) gives the reference-vs-candidate metrics only.

Gates: metric=threshold pairs, each failing when the metric is below its threshold (fractions:
0.99 = 99 %, -0.005 = half an mIoU point lost), from --fail-below, a TOML/YAML --gate file, or
the model's int8 targets (exporter.targets) when --model is given and no gate is.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from exporter.errors import DataError, ExporterError

GATE_METRICS = {
    "agreement": "pixel agreement with the reference",
    "miou": "the candidate's mIoU against the ground truth",
    "miou_delta": "the candidate's mIoU minus the reference's",
    "class_iou_delta": "the worst class's IoU change, candidate minus reference",
}
MASK_METRICS = {"miou", "miou_delta", "class_iou_delta"}
KERAS_SUFFIXES = (".h5", ".keras", ".hdf5")


class GateError(ExporterError):
    """A gate failed: the metric, its value and the threshold were printed one per line."""

    exit_code = 1


# --- gates --------------------------------------------------------------------------------------

def parse_fail_below(spec: str) -> dict[str, float]:
    """"agreement=0.99,miou_delta=-0.005" -> {"agreement": 0.99, "miou_delta": -0.005}."""
    gates = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ExporterError(f"--fail-below {spec!r}: expected metric=value pairs such as agreement=0.99")
        gates[name.strip()] = _threshold(value, f"--fail-below {name.strip()}")
    if not gates:
        raise ExporterError(f"--fail-below {spec!r}: no metric=value pair")
    return check_gates(gates, "--fail-below")


def read_gate_file(path: Path) -> dict[str, float]:
    """A TOML (or YAML) file: `fail_below` (or `fail-below`) as a table of metric = threshold, or
    the metric = threshold pairs at the top level."""
    path = Path(path)
    if not path.is_file():
        raise ExporterError(f"{path}: gate file not found")
    text = path.read_text(errors="replace")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ExporterError(f"{path}: reading YAML needs PyYAML; write the gate as TOML instead") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ExporterError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ExporterError(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise ExporterError(f"{path}: expected metric = threshold pairs (e.g. agreement = 0.99)")
    table = data.get("fail_below", data.get("fail-below", data))
    if not isinstance(table, dict) or not table:
        raise ExporterError(f"{path}: expected a [fail_below] table of metric = threshold pairs")
    gates = {str(k): _threshold(v, f"{path}: {k}") for k, v in table.items()}
    return check_gates(gates, str(path))


def check_gates(gates: dict[str, float], where: str) -> dict[str, float]:
    unknown = sorted(set(gates) - set(GATE_METRICS))
    if unknown:
        raise ExporterError(f"{where}: unknown gate metric {unknown[0]!r}; known: {', '.join(GATE_METRICS)}")
    return gates


def resolve_gates(fail_below: str | None, gate_file: Path | None, model: str | None) -> tuple[dict, str]:
    """(gates, where they came from): the gate file, overridden metric by metric by --fail-below;
    the model's targets when neither is given; none otherwise."""
    from exporter.policy import model_gates

    gates, sources = {}, []
    if gate_file is not None:
        gates.update(read_gate_file(gate_file))
        sources.append(str(gate_file))
    if fail_below is not None:
        gates.update(parse_fail_below(fail_below))
        sources.append("--fail-below")
    if not sources and model:
        return model_gates(model), f"{model}'s int8 targets (exporter/policy.py)"
    return gates, " + ".join(sources) or "none (pass --fail-below, --gate, or --model for its targets)"


def _threshold(value, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExporterError(f"{where}: threshold {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ExporterError(f"{where}: threshold {value!r} is not a finite number")
    return number


def parse_values(spec: str | None, what: str) -> tuple[float, ...] | None:
    """--mean/--std: one value or one per channel, comma-separated."""
    if spec is None:
        return None
    try:
        values = tuple(float(v) for v in spec.split(",") if v.strip())
    except ValueError:
        raise ExporterError(f"--{what} {spec!r}: expected a number or one per channel, e.g. 127.5 or "
                            "123.7,116.3,103.5") from None
    if len(values) not in (1, 3, 4) or (what == "std" and any(v == 0 for v in values)):
        raise ExporterError(f"--{what} {spec!r}: one value or one per channel" + (", none 0" if what == "std" else ""))
    return values


# --- the two sides -----------------------------------------------------------------------------

class _Side:
    """One file (or Keras model) to run: its runner, facts for the report, how to read its classes."""

    def __init__(self, role, runner, facts, size, channels, head_rule, logits):
        self.role, self.runner, self.facts = role, runner, facts
        self.size, self.channels, self.rule, self.logits = size, channels, head_rule, logits

    def classes_of(self, scores):
        from exporter.parity import class_map

        return class_map(scores, logits=self.logits)


def _file_side(role: str, path: Path, mean, std, output, threads) -> _Side:
    from exporter.modelfile import input_contract, input_size, open_model, runner_options, segmentation_head
    from exporter.runtimes import open_runner

    mf = open_model(path)
    h, w, c = input_size(mf)
    if c != 3:
        raise ExporterError(f"{mf.name}: input has {c} channels; validate feeds RGB images")
    head = segmentation_head(mf, output)
    contract = input_contract(mf, mean, std)
    runner = open_runner(path, threads, **runner_options(contract, head))
    facts = {"file": str(path), "format": mf.format, "precision": mf.precision, "bytes": mf.bytes,
             "input": mf.inputs[0], "input_contract": contract.to_json(), "head": head.to_json()}
    labels = (mf.metadata or {}).get("labels") if mf.format == "tflite" else None
    if labels:
        facts["labels"] = labels
    return _Side(role, runner, facts, (h, w, head.height, head.width), head.channels, head.rule, head.logits)


def _keras_side(path: Path, model: str | None, like: _Side, input_norm: str | None = None) -> _Side:
    """The float Keras reference: `model` from the registry at the candidate's size and classes, its
    weights from any source `convert --weights` takes (architectures.importers)."""
    from architectures import build, get_spec, importers, resolve_config
    from exporter.pipeline import load_weights
    from exporter.runtimes import KerasRunner

    if not model:
        raise ExporterError(f"--reference {path}: a Keras weights file needs --model (see `exporter list-models`)")
    get_spec(model)  # an unknown model: one line
    if not importers.exists(path):
        raise ExporterError(f"{path}: weights file not found")
    h, w = like.size[:2]
    overrides = importers.config_overrides(model, path)
    overrides.setdefault("num_classes", like.channels)
    overrides["input_size"] = (h, w)
    overrides["input_norm"] = input_norm
    config = resolve_config(model, **overrides)
    keras_model = build(config)
    load_weights(keras_model, path, config)
    facts = {"file": str(path), "format": "keras", "precision": "float32", "model": model,
             "input_contract": {"source": "ours", "description": "RGB pixels 0..255, from this toolchain's contract"},
             "head": {"channels": config.num_classes, "classes": config.num_classes, "rule": "argmax"},
             "labels": list(config.labels)}
    return _Side("reference", KerasRunner(keras_model), facts, (h, w, h, w), config.num_classes, "argmax", False)


def _is_keras(path: Path) -> bool:
    from architectures.importers.tf_checkpoint import prefix_of

    return path.suffix in KERAS_SUFFIXES or path.is_dir() or prefix_of(path) is not None


def _check_pair(cand: _Side, ref: _Side) -> None:
    cn, rn = Path(cand.facts["file"]).name, Path(ref.facts["file"]).name
    if cand.size[:2] != ref.size[:2]:
        raise ExporterError(f"{cn} takes {cand.size[0]}x{cand.size[1]} images, the reference {rn} "
                            f"{ref.size[0]}x{ref.size[1]}: not the same model")
    if cand.channels != ref.channels:
        raise ExporterError(f"{cn} has {cand.channels} output channel(s), the reference {rn} {ref.channels}: "
                            "not the same model")
    if cand.size[2:] != ref.size[2:]:
        raise ExporterError(f"{cn} outputs {cand.size[2]}x{cand.size[3]} masks, the reference {rn} "
                            f"{ref.size[2]}x{ref.size[3]}")


# --- data ---------------------------------------------------------------------------------------

def load_heldout(spec: str, size: tuple[int, int], num_classes: int, samples: int) -> dict:
    """The held-out split of --data at `size`: {"images", "masks" (None for plain images), "labels",
    "ids", "source"}. A folder of plain images (or `plain:DIR`) is split like a dataset would be."""
    from calibration.checks import check_labels
    from calibration.sources import load_splits

    root = Path(spec[6:]) if spec.startswith("plain:") else Path(spec)
    if spec.startswith("plain:") or (spec != "synthetic" and ":" not in spec and _plain_folder(root)):
        return _plain_images(root, size, samples)
    splits = load_splits(spec, size, num_classes, train_samples=1, val_samples=samples)
    if len(splits.labels) != num_classes:
        raise DataError(f"data {spec}: {len(splits.labels)} classes ({', '.join(splits.labels)}), the files "
                        f"{num_classes}: not data for this model")
    val = splits.val.subset(np.arange(min(samples, len(splits.val))))
    check_labels(val.masks, num_classes, f"data {spec} vs a {num_classes}-class model")
    return {"images": val.images, "masks": val.masks, "labels": list(val.labels), "ids": list(val.ids),
            "source": val.source}


def _plain_folder(root: Path) -> bool:
    from calibration.sources import IMAGE_SUFFIXES, detect_layout

    if not root.is_dir():
        return False
    try:
        detect_layout(root)
        return False
    except DataError:
        pass
    folder = root / "images" if (root / "images").is_dir() else root
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _plain_images(root: Path, size, samples: int, held_out: bool = True) -> dict:
    from PIL import Image

    from calibration.dataset import SegData, split_by_id
    from calibration.sources import read_image, scan_stems

    folder = root / "images" if (root / "images").is_dir() else root
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    files, _ = scan_stems(folder)
    if len(files) < 2:
        raise DataError(f"{folder}: {len(files)} image(s); at least 2 are needed to hold some out")
    stems = sorted(files)
    # The split a folder dataset of these images would hold out (calibration.dataset.split_by_id).
    stub = SegData(np.zeros((len(stems), 1, 1, 3), np.uint8), np.zeros((len(stems), 1, 1), np.uint8), ("image",),
                   stems, str(folder))
    parts = split_by_id(stub, 0.2)
    held = (parts.val if held_out else parts.train).ids[:samples]
    h, w = size
    images = np.stack([np.asarray(read_image(files[s]).convert("RGB").resize((w, h), Image.BILINEAR), np.uint8)
                       for s in held])
    return {"images": images, "masks": None, "labels": None, "ids": list(held),
            "source": f"plain images in {folder} (no masks: reference-vs-candidate metrics only)",
            "of": len(stems)}


def load_splits_any(spec: str, size: tuple[int, int], num_classes: int, calibration: int, samples: int) -> dict:
    """`convert --from`'s data: {"train": part, "val": part, "source"}, each part {"images", "masks" (None
    for plain images), "ids"}; the held-out part is the one `validate` holds out of the same data."""
    root = Path(spec[6:]) if spec.startswith("plain:") else Path(spec)
    if spec.startswith("plain:") or (":" not in spec and _plain_folder(root)):
        held = _plain_images(root, size, samples)
        rest = _plain_images(root, size, calibration, held_out=False)
        return {"train": rest, "val": held, "source": held["source"]}
    from calibration.checks import check_labels
    from calibration.sources import load_splits

    if ":" not in spec and not root.exists():
        raise DataError(f"{spec}: data folder not found")
    splits = load_splits(spec, size, num_classes, train_samples=calibration, val_samples=samples)
    if len(splits.labels) != num_classes:
        raise DataError(f"data {spec}: {len(splits.labels)} classes ({', '.join(splits.labels)}), the model "
                        f"{num_classes}: masks of another label set (give plain images for agreement only)")
    parts = {}
    for key, part in (("train", splits.train), ("val", splits.val)):
        check_labels(part.masks, num_classes, f"data {spec} vs a {num_classes}-class model")
        parts[key] = {"images": part.images, "masks": part.masks, "ids": list(part.ids)}
    return {**parts, "source": splits.val.source}


# --- the gate -----------------------------------------------------------------------------------

def validate(candidate, reference, *, model: str | None = None, data: str = "synthetic", samples: int = 100,
             mean=None, std=None, gates: dict | None = None, gate_source: str = "none", output: str | None = None,
             threads: int = 2, say=None, input_norm: str | None = None) -> dict:
    """Run both sides on the held-out samples; the metrics and each gate's verdict (nothing raised for a
    failing gate: `result["passed"]`)."""
    from exporter import environment
    from exporter.parity import evaluate

    say = say or (lambda message: None)
    started = time.monotonic()
    gates = dict(gates or {})
    if samples < 1:
        raise ExporterError("--samples must be at least 1")
    candidate, reference = Path(candidate), Path(reference)
    cand = _file_side("candidate", candidate, mean, std, output, threads)
    if _is_keras(reference):
        ref = _keras_side(reference, model, cand, input_norm)
    else:
        ref = _file_side("reference", reference, mean, std, None, threads)
    _check_pair(cand, ref)
    num_classes = 2 if cand.channels == 1 else cand.channels
    data_set = load_heldout(data, cand.size[:2], num_classes, samples)
    has_masks = data_set["masks"] is not None
    needs = sorted(set(gates) & MASK_METRICS)
    if needs and not has_masks:
        raise ExporterError(f"gate {needs[0]} needs ground-truth masks; {data} has images only "
                            "(gate on agreement, or give data with masks)")
    images = data_set["images"]
    masks = data_set["masks"] if has_masks else np.full(images.shape[:3], 255, np.uint8)  # IGNORE_LABEL
    masks = _at_output_size(masks, cand.size[2:])
    labels = _labels(cand, ref, data_set, num_classes)

    say(f"validating {candidate.name} against {reference.name} on {len(images)} held-out sample(s)")
    r = evaluate(ref.runner, images, masks, num_classes, classes_of=ref.classes_of)
    c = evaluate(cand.runner, images, masks, num_classes, reference_preds=r["preds"], reference_scores=r["scores"],
                 classes_of=cand.classes_of)
    metrics = {"agreement": round(float(c["agreement"]), 6), "agreement_rule": cand.rule,
               "max_abs_diff": float(f"{c['max_abs_diff']:.6g}")}
    per_class = {}
    if has_masks:
        deltas = {}
        for k, name in enumerate(labels):
            a, b = float(r["per_class_iou"][k]), float(c["per_class_iou"][k])
            d = b - a if math.isfinite(a) and math.isfinite(b) else None
            per_class[name] = {"reference": _round(a), "candidate": _round(b), "delta": _round(d)}
            if d is not None:
                deltas[name] = d
        worst = min(deltas, key=deltas.get) if deltas else None
        metrics.update(miou_reference=_round(r["miou"]), miou=_round(c["miou"]),
                       miou_delta=_round(c["miou"] - r["miou"]),
                       class_iou_delta=_round(deltas[worst]) if worst else None, worst_class=worst)
    results = []
    for metric, threshold in gates.items():
        value = metrics.get(metric)
        passed = value is not None and value >= threshold
        results.append({"metric": metric, "value": value, "threshold": threshold, "passed": passed,
                        "description": GATE_METRICS[metric]})
    ids = data_set["ids"]
    return {
        "candidate": cand.facts,
        "reference": ref.facts,
        "data": {"spec": data, "source": data_set["source"], "split": "held-out", "samples": len(images),
                 "masks": has_masks, "heldout_ids": ids if len(ids) <= 50 else ids[:50] + ["..."],
                 **({"images_in_folder": data_set["of"]} if "of" in data_set else {})},
        "labels": labels,
        "metrics": metrics,
        "per_class_iou": per_class,
        "gate_source": gate_source,
        "gates": results,
        "passed": all(g["passed"] for g in results),
        "wall_s": round(time.monotonic() - started, 2),
        "environment": environment.describe(),
    }


def _at_output_size(masks: np.ndarray, size) -> np.ndarray:
    from PIL import Image

    h, w = size
    if masks.shape[1:] == (h, w):
        return masks
    return np.stack([np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)) for m in masks])


def _labels(cand: _Side, ref: _Side, data_set: dict, num_classes: int) -> list[str]:
    """Class names: the files' own (MediaPipe labels), else the data's, else class_K."""
    for side in (cand, ref):
        names = side.facts.get("labels")
        if names and len(names) == num_classes:
            return list(names)
        if names and num_classes == 2 and len(names) == 1:
            return ["background", names[0]]
    if data_set["labels"] and len(data_set["labels"]) == num_classes:
        return list(data_set["labels"])
    return [f"class_{k}" for k in range(num_classes)]


def _round(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


# --- what a person and a CI system read ------------------------------------------------------------

def failures(result: dict) -> list[str]:
    """One line per failing gate: the metric, its value and the threshold."""
    lines = []
    for g in result["gates"]:
        if not g["passed"]:
            value = "not measured" if g["value"] is None else f"{g['value']:.6g}"
            lines.append(f"FAIL {g['metric']} = {value}, below the gate {g['threshold']:g} ({g['description']})")
    return lines


def markdown(result: dict) -> str:
    cand, ref, d, m = result["candidate"], result["reference"], result["data"], result["metrics"]
    cn, rn = Path(cand["file"]).name, Path(ref["file"]).name
    verdict = "no gates" if not result["gates"] else ("pass" if result["passed"] else "FAIL")
    lines = [f"## exporter validate: `{cn}` against `{rn}`: {verdict}", "",
             f"- candidate: {cand['format']} {cand['precision']}; input {cand['input_contract']['description']}",
             f"- reference: {ref['format']} {ref['precision']}; input {ref['input_contract']['description']}",
             f"- data: {d['source']}; {d['samples']} held-out sample(s)"
             + (f" of {d['images_in_folder']} images" if "images_in_folder" in d else ""),
             f"- gates: {result['gate_source']}", "",
             "| metric | value | gate | result |", "|---|---|---|---|"]
    gates = {g["metric"]: g for g in result["gates"]}

    def row(label, metric, text, points=False):
        g = gates.get(metric)
        gate = "" if g is None else f">= {_pct(g['threshold'], points)}"
        verdict = "" if g is None else ("pass" if g["passed"] else "**FAIL**")
        lines.append(f"| {label} | {text} | {gate} | {verdict} |")

    row(f"pixel agreement ({m['agreement_rule']})", "agreement", _pct(m["agreement"]))
    if d["masks"]:
        row("mIoU reference / candidate", "miou", f"{_fmt(m['miou_reference'])} / {_fmt(m['miou'])}")
        row("mIoU change", "miou_delta", _pct(m["miou_delta"], True), points=True)
        worst = f" ({m['worst_class']})" if m.get("worst_class") else ""
        row("worst class IoU change", "class_iou_delta", _pct(m["class_iou_delta"], True) + worst, points=True)
    lines.append(f"| largest output difference | {m['max_abs_diff']:.4g} | | |")
    for metric in gates:
        if metric not in ("agreement", "miou", "miou_delta", "class_iou_delta"):
            row(metric, metric, str(m.get(metric)))
    if result["per_class_iou"]:
        lines += ["", "| class | reference IoU | candidate IoU | change (points) |", "|---|---|---|---|"]
        for name, v in result["per_class_iou"].items():
            change = "-" if v["delta"] is None else f"{100 * v['delta']:+.2f}"
            lines.append(f"| {name} | {_fmt(v['reference'])} | {_fmt(v['candidate'])} | {change} |")
    fails = failures(result)
    if fails:
        lines += [""] + [f"- {line}" for line in fails]
    return "\n".join(lines) + "\n"


def junit(result: dict) -> str:
    """JUnit XML: one testcase a gate (what CI systems show as test results)."""
    import xml.etree.ElementTree as ET

    cn = Path(result["candidate"]["file"]).name
    suite_name = f"exporter validate {cn} vs {Path(result['reference']['file']).name}"
    failed = [g for g in result["gates"] if not g["passed"]]
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(result["gates"])),
                          failures=str(len(failed)), errors="0", time=f"{result['wall_s']:.2f}")
    for g in result["gates"]:
        case = ET.SubElement(suite, "testcase", classname=f"validate.{cn}",
                             name=f"{g['metric']} >= {g['threshold']:g}", time="0")
        value = "not measured" if g["value"] is None else f"{g['value']:.6g}"
        ET.SubElement(case, "system-out").text = f"{g['metric']} = {value} ({g['description']})"
        if not g["passed"]:
            ET.SubElement(case, "failure", message=f"{g['metric']} = {value}, below {g['threshold']:g}",
                          type="GateFailed").text = f"{g['description']}: {value} < {g['threshold']:g}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _pct(v, points=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.2f} points" if points else f"{100 * v:.2f} %"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
