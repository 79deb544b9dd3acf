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


def refresh(folder: Path, why: str) -> dict:
    from exporter.policy import checks
    from exporter.recommend import recommend
    from exporter.report import write_report

    report = json.loads((folder / "report.json").read_text())
    report["checks"] = checks(report, report["reference"]["weights_after_bn_folding"])
    report["recommended"] = recommend(report, report["checks"])
    report["refreshed"] = {"date": datetime.date.today().isoformat(), "why": why}
    write_report(report, folder)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="report folders (each with a report.json)")
    parser.add_argument("--why", required=True, help="the policy change, recorded in the report")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not (folder / "report.json").is_file():
            print(f"report_refresh: {folder}/report.json not found", file=sys.stderr)
            return 2
        report = refresh(folder, args.why)
        print(f"{folder}: CPU {report['recommended']['cpu']}, GPU {report['recommended']['gpu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
