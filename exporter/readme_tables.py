"""The README's per-model table, rendered from the committed reports (reports/*/report.json).

    python -m exporter.readme_tables                  # print the table
    python -m exporter.readme_tables --write README.md  # replace the block between the markers

Figures come from the reports, never typed by hand: tests/test_readme_tables.py fails when the
README's block differs from what this renders from the committed reports, so a `make bench` that
changes a figure also asks for `--write README.md`. What a report does not hold (an older report
has no `arm` figures and no `recommended` files) is shown as "–" and said under the table, never
guessed. No TensorFlow import.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exporter.formats import artifact_name
from exporter.policy import ARM_CORE, rival_label, speed_ratio  # numpy only, no TensorFlow

BEGIN = "<!-- reports-table -->"
END = "<!-- /reports-table -->"
ABSENT = "–"
ROOT = Path(__file__).resolve().parents[1]


def load_reports(folder: Path | str = ROOT / "reports") -> list[dict]:
    """Every report.json one level under `folder`, ordered by model name."""
    reports = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*/report.json"))]
    return sorted(reports, key=lambda r: r.get("model", ""))


def _pct(x) -> str:
    return ABSENT if x is None else f"{100 * x:.2f} %"


def _points(x) -> str:
    return ABSENT if x is None else f"{100 * x:+.2f}".replace("-", "−")


def _mb(n) -> str:
    return ABSENT if n is None else f"{n / 1e6:.2f}"


def _file(report: dict, name: str) -> dict | None:
    return next((a for a in report.get("artifacts", []) if a.get("file") == name), None)


def _files(report: dict) -> str:
    """'TFLite float32, int8_ptq, int8; ONNX float32, int8': what the run wrote, by file name."""
    model = report.get("model", "")
    parts = {}
    for art in report.get("artifacts", []):
        stem = art["file"].rsplit(".", 1)[0].removeprefix(f"{model}_")
        parts.setdefault(art.get("format", "?"), []).append(stem)
    names = {"tflite": "TFLite", "onnx": "ONNX"}
    return "; ".join(f"{names.get(fmt, fmt)} {', '.join(labels)}" for fmt, labels in parts.items())


def _accuracy_checks(report: dict, name: str) -> str:
    """The report's own verdict on a file's accuracy checks: "pass", or the failed checks' names."""
    mine = [c for c in report.get("checks", []) if c.get("kind") == "accuracy"
            and (c.get("file") == name or c.get("name", "").startswith(f"{name}: "))]
    if not mine:
        return ABSENT
    failed = [c["name"].removeprefix(f"{name}: ") for c in mine if c.get("passed") is False]
    return "fail: " + "; ".join(failed) if failed else "pass"


def _row(report: dict) -> list[str]:
    model = report.get("model", "?")
    shape = report.get("input_shape") or []
    size = f"{shape[1]}×{shape[2]}" if len(shape) >= 3 else ABSENT
    heldout = (report.get("data") or {}).get("heldout_samples")
    float32 = _file(report, artifact_name(model, "float32")) or {}
    int8 = _file(report, artifact_name(model, "int8"))
    recommended = (report.get("recommended") or {}).get("cpu")
    # The speed check's ratio: float32 (exporter.policy.speed_baseline: the model as trained) over the
    # recommended CPU file (an int8 or a dynamic-range file).
    ratio = speed_ratio(report, recommended) if recommended else None
    return [
        f"`{model}`",
        f"{size}, {heldout if heldout is not None else ABSENT}",
        _files(report),
        rival_label(int8) if int8 and "method" in int8 else ABSENT,
        _pct((int8 or {}).get("agreement")),
        _points((int8 or {}).get("miou_delta")),
        _accuracy_checks(report, int8["file"]) if int8 else ABSENT,
        f"{_mb((int8 or {}).get('bytes'))} / {_mb(float32.get('bytes'))}",
        f"`{recommended}`" if recommended else ABSENT,
        ABSENT if ratio is None else f"{ratio:.2f}×",
    ]


HEADER = ["model", "input, held-out", "files", "`MODEL_int8` method", "agreement", "ΔmIoU (pt)", "accuracy checks",
          "MB: int8 / float32", "recommended CPU file", "A76: float32 / recommended"]


def _notes(reports: list[dict]) -> list[str]:
    """One line per kind of absence, naming the models: what "–" stands for in each column."""
    no_rec = [r["model"] for r in reports if not (r.get("recommended") or {}).get("cpu")]
    no_arm: dict[str, list[str]] = {}  # reason -> models
    for r in reports:
        if not any("instructions" in (a.get("arm") or {}).get(ARM_CORE, {}) for a in r.get("artifacts", [])):
            reason = r.get("arm_status") or ("no ARM stage in that run (the report predates it)"
                                             if "arm_run" not in r else "no count for any file")
            no_arm.setdefault(reason, []).append(r["model"])
    no_int8 = [r["model"] for r in reports if _file(r, artifact_name(r["model"], "int8")) is None]
    notes = []
    if no_rec:
        notes.append(f"- recommended CPU file: not in the report of {', '.join(no_rec)} (the report predates "
                     "the ARM stage, which added `recommended`).")
    for reason, models in no_arm.items():
        notes.append(f"- {ARM_CORE} instruction counts: not in the report of {', '.join(models)}: {reason}.")
    if no_int8:
        notes.append(f"- int8 columns: no `MODEL_int8.tflite` in the report of {', '.join(no_int8)}.")
    return notes


def render(reports: list[dict]) -> str:
    """The Markdown block: the table, then what its "–" stand for, then where it came from."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in reports]
    notes = _notes(reports)
    if notes:
        lines += ["", f"{ABSENT}: the report does not hold it:"] + notes
    lines += ["", "Agreement: held-out pixels whose argmax equals the float Keras model's; ΔmIoU: change against "
              "it in mIoU points; A76: instructions per inference of the float32 file over the recommended CPU "
              "file's on an emulated Cortex-A76 (the speed check); accuracy checks: the report's verdict against the model's targets. Rendered from `reports/*/report.json` by "
              "`python -m exporter.readme_tables --write README.md`; not edited by hand."]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with everything between the markers replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text[: start + len(BEGIN)] + "\n" + block + text[end:]


def current_block(text: str) -> str:
    """The text between the markers (without them)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text[start + len(BEGIN): end].removeprefix("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.readme_tables", description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="folder of MODEL/report.json")
    parser.add_argument("--write", type=Path, help="replace the reports-table block of this file (README.md)")
    args = parser.parse_args(argv)
    reports = load_reports(args.reports)
    if not reports:
        print(f"error: no */report.json under {args.reports}", file=sys.stderr)
        return 2
    block = render(reports)
    if args.write is None:
        sys.stdout.write(block)
        return 0
    try:
        args.write.write_text(replace_block(args.write.read_text(), block))
    except (OSError, ValueError) as error:
        print(f"error: {args.write}: {error}", file=sys.stderr)
        return 2
    print(f"wrote the table of {len(reports)} report(s) into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
