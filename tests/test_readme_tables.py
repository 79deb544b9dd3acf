"""The README's reports table is what exporter.readme_tables renders from the committed reports.

When `make bench` changes a figure in reports/, this fails until `python -m exporter.readme_tables
--write README.md` is run: the README cannot go stale silently. Standard library only (fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import readme_tables as rt

ROOT = Path(__file__).resolve().parents[1]


def test_readme_block_is_what_the_committed_reports_render():
    reports = rt.load_reports(ROOT / "reports")
    assert reports, "no reports/*/report.json"
    readme = (ROOT / "README.md").read_text()
    assert rt.current_block(readme) == rt.render(reports), (
        "README.md's reports table is stale: run `python -m exporter.readme_tables --write README.md`")


def test_every_committed_report_has_a_row_with_its_figures():
    reports = rt.load_reports(ROOT / "reports")
    table = rt.render(reports)
    for report in reports:
        model = report["model"]
        int8 = next(a for a in report["artifacts"] if a["file"] == f"{model}_int8.tflite")
        row = next(line for line in table.splitlines() if line.startswith(f"| `{model}` |"))
        assert f"{100 * int8['agreement']:.2f} %" in row and f"{int8['bytes'] / 1e6:.2f}" in row


def _report(arm: bool) -> dict:
    """A small report in the committed reports' shape, with or without the ARM stage's keys."""
    art = {"format": "tflite", "method": "ptq", "per_class_iou": {}}
    report = {
        "model": "toy", "input_shape": [1, 64, 64, 3], "data": {"heldout_samples": 7},
        "artifacts": [
            {**art, "file": "toy_float32.tflite", "precision": "float32", "method": "none", "bytes": 4_000_000,
             "agreement": 1.0, "miou_delta": 0.0},
            {**art, "file": "toy_int8.tflite", "precision": "int8", "bytes": 1_000_000, "agreement": 0.9912,
             "miou_delta": -0.0034},
            {**art, "file": "toy_float32.onnx", "format": "onnx", "precision": "float32", "method": "none",
             "bytes": 4_100_000, "agreement": 1.0, "miou_delta": 0.0},
        ],
    }
    report["checks"] = [
        {"name": "toy_int8.tflite: agreement >= 99.8%", "kind": "accuracy", "passed": arm, "detail": ""},
        {"name": "toy_int8.tflite: no float op inside", "kind": "accuracy", "passed": True, "detail": ""},
        {"name": "toy_int8.tflite: at most 1.2× one byte per weight", "kind": "size", "passed": False, "detail": ""},
    ]
    if arm:
        report["artifacts"][0]["arm"] = {"cortex-a76": {"instructions": 300_000_000, "ratio_to_float32": 1.0}}
        report["artifacts"][1]["arm"] = {"cortex-a76": {"instructions": 100_000_000, "ratio_to_float32": 3.0}}
        report["arm_run"] = {"cores": {"cortex-a76": {}}}
        report["recommended"] = {"cpu": "toy_int8.tflite", "gpu": "toy_float32.tflite"}
    return report


def test_a_report_without_arm_figures_renders_dashes_and_says_why():
    table = rt.render([_report(arm=False)])
    row = next(line for line in table.splitlines() if line.startswith("| `toy` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == ["`toy`", "64×64, 7", "TFLite float32, int8; ONNX float32", "ptq", "99.12 %", "−0.34",
                     "fail: agreement >= 99.8%", "1.00 / 4.00", rt.ABSENT, rt.ABSENT]
    assert "recommended CPU file: not in the report of toy" in table
    assert "cortex-a76 instruction counts: not in the report of toy" in table


def test_a_report_with_arm_figures_shows_the_ratio_and_the_recommended_file():
    table = rt.render([_report(arm=True)])
    row = next(line for line in table.splitlines() if line.startswith("| `toy` |"))
    assert row.endswith("| pass | 1.00 / 4.00 | `toy_int8.tflite` | 3.00× |")
    assert "not in the report" not in table
    # The ratio is the recommended file's (the speed check's), whichever file that is.
    report = _report(arm=True)
    report["recommended"]["cpu"] = "toy_float32.tflite"
    row = next(line for line in rt.render([report]).splitlines() if line.startswith("| `toy` |"))
    assert row.endswith("| `toy_float32.tflite` | 1.00× |")


def test_an_arm_status_is_quoted_as_the_reason():
    report = _report(arm=False)
    report["arm_status"] = "qemu-aarch64 not found (make arm-env)"
    assert "toy: qemu-aarch64 not found (make arm-env)." in rt.render([report])


def test_write_replaces_only_the_block(tmp_path):
    reports = tmp_path / "reports" / "toy"
    reports.mkdir(parents=True)
    (reports / "report.json").write_text(json.dumps(_report(arm=False)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\nbefore\n{rt.BEGIN}\nold figures\n{rt.END}\nafter\n")
    assert rt.main(["--reports", str(tmp_path / "reports"), "--write", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\nbefore\n") and text.endswith(f"{rt.END}\nafter\n")
    assert "old figures" not in text and rt.current_block(text) == rt.render([_report(arm=False)])
    assert rt.main(["--reports", str(tmp_path / "reports"), "--write", str(readme)]) == 0
    assert readme.read_text() == text  # idempotent


def test_missing_markers_are_an_error_not_a_rewrite(tmp_path):
    with pytest.raises(ValueError, match="reports-table"):
        rt.replace_block("no markers here", "x")
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert rt.main(["--reports", str(ROOT / "reports"), "--write", str(readme)]) == 2
    assert readme.read_text() == "no markers\n"
    assert rt.load_reports(tmp_path / "none") == []
