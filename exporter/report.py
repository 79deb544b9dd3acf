"""The report: one JSON document (schema in DESIGN.md), its Markdown rendering and a figure."""

from __future__ import annotations

import math
from pathlib import Path

from exporter.artifacts import atomic_path, write_json
from exporter.delegates import gpu_runtime, static_verdict
from exporter.formats import recipe_name
from exporter.policy import rival_label


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
        method = rival_label(a) + (" (per-tensor)" if a.get("weight_scales") == "per-tensor" else "")
        cells = [a["file"], a["precision"], method, size, agreement, _fmt(a.get("miou")),
                 f"{delta:+.4f}" if delta is not None else "–"]
        cells += [_fmt(_latency(a, t), 2) for t in threads]
        mine, theirs = _latency(a, threads[-1]), _latency(base, threads[-1])
        cells.append(f"{theirs / mine:.2f}×" if mine and theirs else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def verdict(check: dict) -> str:
    """pass / FAIL / not evaluated / info: how a check reads in the report and on the console."""
    if check["kind"] == "info":
        return "info"
    if check["passed"] is None:
        return "not evaluated"
    return "pass" if check["passed"] else "FAIL"


def recommended_lines(report: dict) -> list[str]:
    """The report's first lines: the files to ship, why, and whether ARM was measured."""
    lines = []
    rec = report.get("recommended")
    if rec and rec.get("cpu"):
        gpu = f"`{rec['gpu']}`" if rec.get("gpu") else "none"
        lines += [f"**Recommended:** CPU `{rec['cpu']}`, GPU {gpu}.", "",
                  f"- CPU: {rec['cpu_basis']}.", f"- GPU: {rec['gpu_basis']}."]
        lines += [f"- GPU static analyser vs run: {d}." for d in rec.get("gpu_disagreements", [])]
    if (report.get("int8_search") or {}).get("summary"):
        lines += [f"- int8: {report['int8_search']['summary']}."]
    if report.get("shipped_int8"):
        lines += [f"- int8: {_shipped_line(report)}"]
    if report.get("arm_status"):
        lines += [f"- ARM: not measured ({report['arm_status']})."]
    return lines


def arm_table(report: dict) -> list[str]:
    """File x core: instructions per inference, dot-product instructions, ratio to float32, agreement with host."""
    run = report.get("arm_run")
    arts = [a for a in report["artifacts"] if a.get("arm")]
    if not run or not arts:
        return []
    samples = run["samples"]
    lines = ["## ARM cost (emulated)", "",
             "| file | core | instructions (M) | dot instr. (M) | FMA instr. (M) | ratio to float32 | "
             "agreement with host |", "|---|---|---|---|---|---|---|"]
    for a in arts:
        for core, e in a["arm"].items():
            if "error" in e:
                lines.append(f"| {a['file']} | {core} | – | – | – | – | failed: {e['error']} |")
                continue
            ratio = f"{e['ratio_to_float32']:.2f}×" if e.get("ratio_to_float32") else "–"
            lines.append(f"| {a['file']} | {core} | {e['instructions'] / 1e6:.2f} | {e['dot_instructions'] / 1e6:.3f} | "
                         f"{e['fma_instructions'] / 1e6:.3f} | {ratio} | {100 * e['agreement_with_host']:.3f}% "
                         f"({e['samples']} sample{'s' if e['samples'] > 1 else ''}) |")
    cores = ", ".join(f"{core} (QEMU -cpu {c['qemu_cpu']}, {c['cpuinfo']} /proc/cpuinfo)"
                      for core, c in run["cores"].items())
    lines += ["", f"Guest instructions per inference (steady state, after {samples['warmup_invokes']} warm-up invoke) "
              f"of LiteRT {run['litert_version']}'s aarch64 kernels (default XNNPACK delegate, {run['threads']} "
              f"thread) under QEMU user-mode emulation: {cores}. Instruction counts are a relative cost (the "
              "files against each other on the same core), not cycles: per-instruction throughput and memory "
              "traffic are not modelled, and the Cortex-A55's kernels are in-order, so instructions there are not "
              "time. QEMU 7.2 has no Cortex-A55 model: that column runs `-cpu cortex-a76` with the A55's "
              "/proc/cpuinfo, which is what picks XNNPACK's kernels. Dot instr.: SDOT/UDOT (16 int8 multiply-adds "
              "each); FMA: FMLA (4 float multiply-adds each in the .4s form). Agreement with host: pixels whose "
              "argmax on the ARM kernels equals the host LiteRT's on the same file and held-out samples "
              f"({samples['float']} for float files, {samples['quantised']} for the others); "
              f"{run['seconds']:.0f} s of emulation, {run['parallel']} at a time.", ""]
    return lines


def to_markdown(report: dict, figure: str | None) -> str:
    lines = [f"# {report['model']}: export report", ""]
    first = recommended_lines(report)
    lines += first + [""] if first else []
    contract = report.get("output_contract") or {}
    if contract and (contract.get("size") != "input" or contract.get("activation") != "model"):
        h, w = contract["output_shape"][:2]
        lines += [f"Output contract: {contract['output']} at {h}×{w} (`--output-activation {contract['activation']} "
                  f"--output-size {contract['size']}`); the client {contract['client']}. Agreement is measured "
                  f"{contract['agreement_measured']}."]
        from exporter.policy import speed_baseline

        base, why = speed_baseline(report)
        lines += [f"Speed baseline: `{base}`, {why}.", ""]
    lines += [f"Command: `{report['command']}`", ""] if report.get("command") else []
    if report.get("refreshed"):
        lines += [f"Checks and recommendation recomputed from these measurements on {report['refreshed']['date']} "
                  f"(`python -m exporter.report_refresh`, {report['refreshed']['why']}).", ""]
    source = report.get("source")
    lines += _source_lines(report) if source else [
        f"- input: {report['input_shape']} RGB 0..255 ({report['normalisation']} inside the graph)"]
    lines += [
        f"- labels: {', '.join(report['labels'])}",
        f"- reference: {report['reference']['description']}",
        f"- held-out data: {report['data']['heldout_samples']} samples of {report['data']['source']} "
        f"(calibration: {report['calibration']['samples']} training samples, never held-out ones)",
        f"- machine: {report['environment']['cpu']}, {report['environment']['cpu_count']} cores",
        "",
        summary_table(report),
        "",
        f"Latency: median of {report['benchmark']['runs_per_variant']} runs per variant and thread count, "
        "variants alternated in blocks in one run, on this machine's CPU (information: the speed check uses "
        "the ARM instruction counts). Agreement: pixels whose class equals the reference's ("
        + ("the original model" if source else "the float Keras model") + "). "
        + ("mIoU against the ground truth of the held-out samples." if report["data"].get("masks", True) else
           "No ground truth was given: mIoU is not measured; per-class IoU is against the reference's classes."),
        "",
    ]
    if report.get("checks"):
        lines += ["## Checks", ""] + [f"- {c['name']}: **{verdict(c)}** ({c['detail']})"
                                      for c in report["checks"]] + [""]
    lines += arm_table(report)
    from exporter.stages.peers import markdown as peers_markdown

    lines += peers_markdown(report)
    if report["data"].get("masks", True):
        lines += ["## Per-class IoU", "", _per_class_table(report), ""]
    else:
        lines += ["## Per-class IoU against the reference's classes (no ground truth given)", "",
                  _per_class_table(report, "iou_vs_reference"), ""]
    if report.get("quantisation"):
        lines += _quantisation_sections(report)
    if report.get("int8_search"):
        lines += _int8_search_section(report["int8_search"])
    lines += ["## Mobile delegates", "", _delegates_table(report), ""]
    cal = report["calibration"]
    if "coverage" not in cal:  # a foreign model's data: no class coverage to show
        lines += ["## Calibration data", "", f"{cal['samples']} samples, {cal['method']}.", ""]
        if figure:
            lines += ["", f"![latency and accuracy]({figure})", ""]
        return "\n".join(lines) + "\n"
    pct = cal.get("range_percentile", 100.0)
    ranges = ("TFLite's min/max over them" if pct >= 100 else
              f"each tensor's min/max narrowed to the {pct:g}th percentile of its values on them (outliers "
              "saturate, the rest round finer; `--range-percentile 100` keeps min/max)")
    onnx_int8 = next((a for a in report["artifacts"] if a["format"] == "onnx" and a["precision"] == "int8"), None)
    onnx_note = (f" The int8 ONNX file has the same activation ranges and its weights in a "
                 f"{onnx_int8['weight_bits']}-bit range: ONNX Runtime's uint8 x int8 kernels saturate on x86 "
                 "CPUs without VNNI otherwise." if onnx_int8 and onnx_int8.get("weight_bits") else "")
    lines += ["## Calibration data", "", f"{cal['samples']} samples, {cal['method']}. "
              f"int8 activation ranges: {ranges}.{onnx_note}", ""]
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


def _shipped_line(report: dict) -> str:
    shipped = report.get("shipped_int8")
    if not shipped:
        return ""
    return (f"`{shipped['file']}` is the {shipped['method']} file (chosen: {shipped['why']}); "
            f"{', '.join(f'`{f}`' for f in shipped['others'])} is kept for this comparison.")


def _by_role(report: dict) -> dict:
    """The int8 TFLite files by role: "ptq" (post-training), "qat", "selective" (layers kept float)."""
    out = {}
    for a in report["artifacts"]:
        if a["format"] == "tflite" and a["precision"] == "int8":
            role = "selective" if a.get("role") == "selective" else a["method"]
            out.setdefault(role, a)
    return out


def _quantisation_sections(report: dict) -> list[str]:
    lines: list[str] = []
    for section in (_qat_comparison, _ptq_methods_section, _qat_section, _unquantised_section, _layer_error_section,
                    _keep_float_section):
        lines += section(report, report["quantisation"], report["benchmark"]["threads"], _by_role(report))
    return lines


def _qat_comparison(report: dict, q: dict, threads: list, files: dict) -> list[str]:
    lines: list[str] = []
    if not ("qat" in files and "ptq" in files):
        return lines
    ptq, qat = files["ptq"], files["qat"]
    lines += ["## Post-training vs quantisation-aware int8", "",
              f"Both from the same trained float model and the same {report['calibration']['samples']} "
              "calibration samples, measured on the same held-out samples. "
              + _shipped_line(report), "",
              f"| | {ptq['file']} (ptq) | {qat['file']} (qat) |", "|---|---|---|",
              f"| mIoU | {_fmt(ptq['miou'])} | {_fmt(qat['miou'])} |",
              f"| ΔmIoU vs float | {ptq['miou_delta']:+.4f} | {qat['miou_delta']:+.4f} |",
              f"| agreement with float | {100 * ptq['agreement']:.2f}% | {100 * qat['agreement']:.2f}% |",
              f"| size | {ptq['bytes'] / 1e6:.2f} MB | {qat['bytes'] / 1e6:.2f} MB |"]
    for t in threads:
        lines.append(f"| median latency, {t} thread(s) | {_fmt(_latency(ptq, t), 2)} ms | "
                     f"{_fmt(_latency(qat, t), 2)} ms |")
    ref = report["reference"]["per_class_iou"]
    for label in report["labels"]:
        deltas = []
        for a in (ptq, qat):
            v, r = a["per_class_iou"].get(label), ref.get(label)
            deltas.append(f"{v - r:+.4f}" if v is not None and r is not None else "–")
        lines.append(f"| IoU Δ {label} | {deltas[0]} | {deltas[1]} |")
    lines.append("")
    return lines


def _ptq_methods_section(report: dict, q: dict, threads: list, files: dict) -> list[str]:
    m = q.get("ptq_methods")
    if not m:
        return []
    lines = ["## Post-training methods (--ptq-method)", "",
             f"Asked for: {', '.join(m['requested'])}; applied: {', '.join(m['chosen']) or 'none (the plain file won)'}"
             + (f", file `{m['file']}`" if m.get("file") else "") + f" ({m['seconds']:.0f} s)."]
    auto = m.get("auto")
    if auto:
        lines += [f"`auto` scored each candidate's int8 agreement with float on {auto.get('scored_on', '-')}: "
                  + ", ".join(f"{k} {100 * v:.2f}%" for k, v in auto["scores"].items()) + "."]
    for name in (m.get("recipe") or {}).get("skipped", {}):
        lines.append(f"- {name} skipped: {m['recipe']['skipped'][name]}")
    lines += [f"- {name}: {m['recipe']['seconds'][name]} s" for name in (m.get("recipe") or {}).get("methods", [])]
    return lines + [""]


def _qat_section(report: dict, q: dict, threads: list, files: dict) -> list[str]:
    lines: list[str] = []
    if not (q.get("qat")):
        return lines
    t = q["qat"]
    lines += ["## Quantisation-aware training", "",
              "tfmot QAT from the trained float model"
              + (" on its export graph (the post-training file's graph rewrites)" if t.get("graph") == "export" else "")
              + f": {t['epochs']} epoch(s) at learning rate "
              f"{t['learning_rate']:g}, batch {t['batch_size']}, {t['training_samples']} training samples "
              f"fitted to {t.get('targets', 'the ground-truth masks')} "
              f"(loss per epoch: {', '.join(f'{x:.4f}' for x in t['losses'])}); activation ranges started "
              f"from the float model's on {t['ranges_calibrated_on']} calibration samples; "
              f"{len(t['folded_batchnorms'])} BatchNorm(s) folded into transposed convolutions first"
              + (f", {t['frozen_batchnorms']} BatchNorm(s) held in inference mode (moving statistics) "
                 "while fine-tuning" if t.get("frozen_batchnorms") else "") + ". "
              f"QAT ONNX: {t['onnx']}.", ""]
    return lines


def _unquantised_section(report: dict, q: dict, threads: list, files: dict) -> list[str]:
    lines: list[str] = []
    if not (q.get("unquantised") is not None):
        return lines
    lines += ["## Layers left unquantised", ""]
    for f, rows in q["unquantised"].items():
        if not rows:
            lines += [f"- `{f}`: none (every op computes in int8)"]
            continue
        what = ("layers with no fake-quant point of their own in the QAT model (the int8 file has "
                "no float op: " + ("none" if not _art(report, f)["float_ops"] else
                                   ", ".join(sorted(set(_art(report, f)["float_ops"])))) + ")"
                if _art(report, f)["method"] == "qat" else "kept in float")
        lines += [f"- `{f}`: {len(rows)} {what}:"]
        lines += [f"  - {r['layer']}" + (f" ({r['cls']})" if r["cls"] else "") + f": {r['reason']}"
                  for r in rows]
    lines.append("")
    return lines


def _layer_error_section(report: dict, q: dict, threads: list, files: dict) -> list[str]:
    lines: list[str] = []
    if not (q.get("layer_errors")):
        return lines
    le = q["layer_errors"]
    lines += ["## Per-layer int8 error", "",
              f"The {len(le['worst'])} worst of {le['tensors']} quantised tensors, {le['metric']} "
              f"(rounding alone: {le['rounding_only']:.2f}), on {le['samples']} held-out samples "
              f"(never calibration samples). {le['method']}.", "",
              "| # | layer | op | RMSE/scale | RMSE | max abs error | scale |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(le["worst"], 1):
        lines.append(f"| {i} | {r['layer']} | {r['op']} | {r['rmse_over_scale']:.3f} | {r['rmse']:.4g} | "
                     f"{r['max_abs_error']:.4g} | {r['scale']:.4g} |")
    lines.append("")
    return lines


def _keep_float_section(report: dict, q: dict, threads: list, files: dict) -> list[str]:
    lines: list[str] = []
    if not (q.get("keep_float")):
        return lines
    k = q["keep_float"]
    lines += ["## Layers kept float", ""]
    recipe = recipe_name(report["model"])
    kept = ", ".join(k["keep_float"]) or "none"
    lines.append(f"Mode: {k['mode']}; kept float: {kept} (recipe: `{recipe}`).")
    if k["mode"] == "auto":
        per_class = (f" and no class more than {100 * k['max_class_drop']:g} IoU points below float"
                     if k.get("max_class_drop") is not None else "")
        lines.append(f"Target: held-out mIoU ≥ {k['target_miou']:.4f} (float {k['reference_miou']:.4f} − "
                     f"{100 * k['max_miou_drop']:g} point){per_class}, at most {k['max_tries']} layers: "
                     f"**{'met' if k['met'] else 'not met'}**.")
    if k.get("note"):
        lines.append(k["note"] + ".")
    lines.append("")
    if k["mode"] == "auto":
        lines += ["| try | kept float | mIoU | ΔmIoU | worst class (points) | agreement | float ops |",
                  "|---|---|---|---|---|---|---|"]
        for i, t in enumerate(k["trials"]):
            worst = f"{100 * t['worst_class_delta']:+.2f}" if "worst_class_delta" in t else "-"
            lines.append(f"| {i} | {', '.join(t['keep_float']) or 'none'} | {t['miou']:.4f} | "
                         f"{t['miou_delta']:+.4f} | {worst} | {100 * t['agreement']:.2f}% | {t['float_ops']} |")
        lines.append("")
    sel, full = files.get("selective"), files.get("ptq")
    if sel and full:
        for t in threads:
            mine, theirs = _latency(sel, t), _latency(full, t)
            if mine and theirs:
                lines.append(f"- latency cost, {t} thread(s): {mine:.2f} ms vs {theirs:.2f} ms for "
                             f"`{full['file']}` ({mine / theirs:.2f}×, same run)")
        lines += [f"- size: {sel['bytes'] / 1e6:.2f} MB vs {full['bytes'] / 1e6:.2f} MB",
                  f"- float ops inside: {', '.join(sorted(set(sel['float_ops']))) or 'none'}", ""]
    return lines

def _art(report: dict, name: str) -> dict:
    return next(a for a in report["artifacts"] if a["file"] == name)


def _delegates_table(report: dict) -> str:
    from exporter.gpu.stage import describe as gpu_describe

    rows = ["| file | verdict |", "|---|---|"]
    for a in report["artifacts"]:
        if (g := static_verdict(a)) is not None:
            blockers = g["unsupported_ops"] + g["tensors_over_4d"] + g["analyzer_warnings"]
            verdict = "GPU delegate: compatible" if g["compatible"] else f"GPU delegate: falls back for {', '.join(blockers)}"
            if (run := gpu_runtime(a)) is not None:
                verdict += "; GPU run: " + gpu_describe(run, brief=True).replace("|", "\\|")  # a table cell
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
    rows.append("")
    if report.get("gpu_run"):
        g = report["gpu_run"]
        rows.append(f"GPU run: LiteRT's GPU accelerator on {', '.join(g['devices'])}, {g['samples']} held-out "
                    f"sample(s) per file, {g['seconds']:.0f} s. {g['note']}")
        sim = g.get("fp16_simulation") or {}
        if sim.get("agreement_with_float32") is not None:
            rows.append(f"\nfp16 (simulated, {sim['samples']} sample(s)): argmax agreement with float32 "
                        f"{100 * sim['agreement_with_float32']:.3f}%, max |Δ| {sim['max_abs_diff']:.3g}: {sim['note']}.")
        elif sim:
            rows.append(f"\nfp16 simulation: {sim.get('error') or sim.get('note')}")
    elif report.get("gpu_status"):
        rows.append(f"GPU run: not measured: {report['gpu_status']}")
    else:
        gpu = report.get("gpu_runtime", {})
        rows.append("GPU run: " + ("LiteRT GPU accelerator available" if gpu.get("available")
                                   else f"{gpu.get('reason', 'not tried')} on this machine; no GPU figures reported."))
    return "\n".join(rows)


def _per_class_table(report: dict, key: str = "per_class_iou") -> str:
    head = ["class"] + [a["file"] for a in report["artifacts"]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in report["labels"]:
        rows.append("| " + " | ".join([label] + [_fmt((a.get(key) or {}).get(label)) for a in report["artifacts"]])
                    + " |")
    return "\n".join(rows)


def _source_lines(report: dict) -> list[str]:
    """A foreign model's (`convert --from`) header: what was read, by which engine, its contract."""
    s = report["source"]
    c = s["contract"]
    lines = [f"- source: `{s['file']}` ({s['kind']}); quantised by {s['engine']}",
             f"- input (kept from the original): {c['description']}",
             f"- output (kept): output {c['output_index']}, {c['output_channels']} channel(s), {c['output']} "
             f"(from {c['output_from']}); MediaPipe activation {c['activation']}; labels from {c['labels_from']}"]
    lines += [f"- fix before conversion: {fix}" for fix in s.get("fixes", [])]
    return lines


def _int8_search_section(search: dict) -> list[str]:
    """`convert --from`'s search for an int8 file that pays (exporter.stages.foreign_search)."""
    lines = ["## Where int8 pays", "", search.get("summary", ""), "",
             "| candidate | what changes | A76 instructions | vs float32 | agreement | verdict |", "|---|---|---|---|---|---|"]
    for row in search.get("candidates", []):
        inst = row.get("a76_instructions")
        ratio = row.get("ratio_to_float32")
        lines.append(f"| {row['file']} | {row['what']} | {inst / 1e6:.2f} M |" if inst else f"| {row['file']} | {row['what']} | – |")
        lines[-1] += (f" {ratio:.2f}× |" if ratio else " – |") + \
            (f" {100 * row['agreement']:.2f}% |" if row.get("agreement") is not None else " – |") + f" {row.get('verdict', '')} |"
    errors = search.get("layer_errors") or {}
    if errors.get("worst"):
        lines += ["", f"Per-layer error of `{errors['file']}` against the float file on {errors['samples']} held-out "
                  "sample(s), worst first (relative RMS error of each op output):", "",
                  "| op output | relative RMS error |", "|---|---|"]
        lines += [f"| {r['tensor']} | {r['relative_rms_error']:.4f} |" for r in errors["worst"]]
    return lines + [""]


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
