"""Recompute a report's checks and recommended files from its own measurements, with today's policy.

    python -m exporter.report_refresh reports/unet reports/selfie --why "ties go to the file that agrees more"

For a change of policy (targets, the accuracy gate, the recommendation rule) that needs no new
measurement: every artifact's figures stay as measured, `checks` and `recommended` are computed by
the same functions `convert` calls (exporter.policy, exporter.recommend), and report.json/.md/.png
are rewritten with a `refreshed` entry saying when and why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path


def load(folder: Path) -> dict:
    """The folder's report.json, or ExporterError (one line) when it cannot be re-judged."""
    from exporter.errors import ExporterError

    path = folder / "report.json"
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExporterError(f"{path}: not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ExporterError(f"{path}: unreadable ({exc})") from None
    if not isinstance(report, dict) or not isinstance(report.get("artifacts"), list) \
            or "weights_after_bn_folding" not in (report.get("reference") or {}):
        raise ExporterError(f"{path}: not a convert report (no artifacts or reference.weights_after_bn_folding)")
    return report


def refresh(folder: Path, report: dict, why: str) -> dict:
    from exporter.recommend import judged
    from exporter.report import write_report

    report.update(judged(report))
    report["refreshed"] = {"date": datetime.date.today().isoformat(), "why": why}
    write_report(report, folder)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="report folders (each with a report.json)")
    parser.add_argument("--why", required=True, help="the policy change, recorded in the report")
    args = parser.parse_args(argv)
    from exporter.errors import ExporterError

    try:  # every report read and checked before any is rewritten: a bad one leaves all as they were
        reports = [load(folder) for folder in args.folders]
    except ExporterError as exc:
        print(f"report_refresh: {exc}", file=sys.stderr)
        return 2
    for folder, report in zip(args.folders, reports):
        report = refresh(folder, report, args.why)
        print(f"{folder}: CPU {report['recommended']['cpu']}, GPU {report['recommended']['gpu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
