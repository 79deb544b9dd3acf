"""The report: one JSON document (schema in DESIGN.md), its Markdown rendering and a figure."""

from __future__ import annotations

import math
from pathlib import Path

from exporter.artifacts import atomic_path, write_json


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _latency(entry, threads):
    lat = entry.get("latency_ms", {}).get(str(threads))
    return lat["median"] if lat else None


def summary_table(report: dict) -> str:
    threads = report["benchmark"]["threads"]
    ref = report["artifacts"][0]
    head = ["file", "precision", "method", "size", "agreement", "mIoU", "ΔmIoU"]
    head += [f"ms ({t} thr)" for t in threads] + [f"speed-up vs {report['benchmark']['baseline']} ({threads[-1]} thr)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = next((a for a in report["artifacts"] if a["file"] == report["benchmark"]["baseline"]), ref)
    for a in report["artifacts"]:
        size = f"{a['bytes'] / 1e6:.2f} MB" if a.get("bytes") else "–"
        agreement = f"{100 * a['agreement']:.2f}%" if a.get("agreement") is not None else "–"
        delta = a.get("miou_delta")
        cells = [a["file"], a["precision"], a["method"], size, agreement, _fmt(a.get("miou")),
                 f"{delta:+.4f}" if delta is not None else "–"]
        cells += [_fmt(_latency(a, t), 2) for t in threads]
        mine, theirs = _latency(a, threads[-1]), _latency(base, threads[-1])
        cells.append(f"{theirs / mine:.2f}×" if mine and theirs else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def to_markdown(report: dict, figure: str | None) -> str:
    lines = [f"# {report['model']}: export report", ""]
    lines += [f"Command: `{report['command']}`", ""] if report.get("command") else []
    lines += [
        f"- input: {report['input_shape']} RGB 0..255 ({report['normalisation']} inside the graph)",
        f"- labels: {', '.join(report['labels'])}",
        f"- reference: {report['reference']['description']}",
        f"- held-out data: {report['data']['heldout_samples']} samples of {report['data']['source']} "
        f"(calibration: {report['calibration']['samples']} training samples, never held-out ones)",
        f"- machine: {report['environment']['cpu']}, {report['environment']['cpu_count']} cores",
        "",
        summary_table(report),
        "",
        f"Latency: median of {report['benchmark']['runs_per_variant']} runs per variant and thread count, "
        "variants alternated in blocks in one run. Agreement: pixels whose argmax equals the float Keras "
        "model's. mIoU against the ground truth of the held-out samples.",
        "",
    ]
    if report.get("checks"):
        lines += ["## Checks", ""] + [f"- {c['name']}: **{'pass' if c['passed'] else 'FAIL'}** ({c['detail']})"
                                      for c in report["checks"]] + [""]
    lines += ["## Per-class IoU", "", _per_class_table(report), ""]
    lines += ["## Mobile delegates", "", _delegates_table(report), ""]
    cal = report["calibration"]
    lines += ["## Calibration data", "", f"{cal['samples']} samples, {cal['method']}.", ""]
    lines += ["| class | training pixels | calibration pixels |", "|---|---|---|"]
    for label in report["labels"]:
        lines.append(f"| {label} | {100 * cal['train_coverage'][label]:.2f}% | "
                     f"{100 * cal['coverage'][label]:.2f}% |")
    if cal.get("missing_classes"):
        lines += ["", f"**Warning:** classes absent from calibration: {', '.join(cal['missing_classes'])}"]
    if report.get("training"):
        t = report["training"]
        lines += ["", "## Training", "", f"{t['summary']}", ""]
    if figure:
        lines += ["", f"![latency and accuracy]({figure})", ""]
    return "\n".join(lines) + "\n"


def _delegates_table(report: dict) -> str:
    rows = ["| file | verdict |", "|---|---|"]
    for a in report["artifacts"]:
        if "gpu" in a:
            g = a["gpu"]
            blockers = g["unsupported_ops"] + g["tensors_over_4d"] + g["analyzer_warnings"]
            verdict = "GPU delegate: compatible" if g["compatible"] else f"GPU delegate: falls back for {', '.join(blockers)}"
            if a.get("mediapipe_problems"):
                verdict += f"; MediaPipe: {'; '.join(a['mediapipe_problems'])}"
            else:
                verdict += "; MediaPipe ImageSegmenter metadata: yes"
        elif "mobile" in a:
            parts = []
            for ep, v in a["mobile"].items():
                if isinstance(v, dict):
                    extra = f", unsupported {', '.join(v['unsupported_ops'])}" if v.get("unsupported_ops") else ""
                    parts.append(f"{ep}: {'recommended' if v.get('recommended') else 'not recommended'} "
                                 f"({v.get('partitions', '?')} partition(s){extra})")
            verdict = "; ".join(parts) or str(a["mobile"])
        else:
            continue
        rows.append(f"| {a['file']} | {verdict} |")
    gpu = report.get("gpu_runtime", {})
    rows.append("")
    rows.append("GPU run: " + ("LiteRT GPU accelerator available" if gpu.get("available")
                               else f"{gpu.get('reason', 'not tried')} on this machine; no GPU figures reported."))
    return "\n".join(rows)


def _per_class_table(report: dict) -> str:
    head = ["class"] + [a["file"] for a in report["artifacts"]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in report["labels"]:
        rows.append("| " + " | ".join([label] + [_fmt(a["per_class_iou"].get(label)) for a in report["artifacts"]]) + " |")
    return "\n".join(rows)


def write_figure(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arts = [a for a in report["artifacts"] if a.get("latency_ms")]
    threads = report["benchmark"]["threads"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(threads)
    for k, t in enumerate(threads):
        ax1.bar([i + k * width for i in range(len(arts))], [_latency(a, t) or 0 for a in arts], width,
                label=f"{t} thread{'s' if t > 1 else ''}")
    ax1.set_xticks([i + width * (len(threads) - 1) / 2 for i in range(len(arts))])
    ax1.set_xticklabels([a["file"].split("_", 1)[-1] for a in arts], rotation=20)
    ax1.set_ylabel("median latency (ms)")
    ax1.set_title(f"{report['model']}: latency")
    ax1.legend()
    all_arts = report["artifacts"]
    ax2.bar(range(len(all_arts)), [a.get("miou") or 0 for a in all_arts], color="tab:green")
    ax2.set_xticks(range(len(all_arts)))
    ax2.set_xticklabels([a["file"].split("_", 1)[-1] for a in all_arts], rotation=20)
    lo = min(a.get("miou") or 0 for a in all_arts)
    ax2.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax2.set_ylabel("held-out mIoU")
    ax2.set_title("accuracy")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(report: dict, folder: Path) -> None:
    figure = "report.png"
    write_figure(report, folder / figure)
    write_json(folder / "report.json", report)
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text(to_markdown(report, figure))
