"""Measure the post-training methods (exporter.ptq) on a trained model: one int8 file per method.

    PYTHONPATH=. python tools/ptq_measure.py --model deeplab --out /tmp/m18/runs --input-size 128 \
        --json /tmp/m18/deeplab.json

Same calibration samples for every file (training split, `representative_indices`), converted with
exporter.convert.tflite.to_tflite (uint8 I/O, per-channel, DEFAULT_PERCENTILE ranges). The val split
is cut in two: the first `--auto-samples` choose `auto` (choose_method over the rows), the rest are the
report's held-out samples; no row is measured on calibration or auto samples.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = ("none", "cle", "bias_correction", "bias_correction_act", "adaround", "smoothquant",
        "cle+bias_correction", "cle+adaround+bias_correction")


def main() -> None:
    from calibration.sampling import representative_indices
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite
    from exporter.parity import evaluate
    from exporter.options import ConvertOptions, DataSpec
    from exporter.stages.prepare import prepare_model
    from exporter.ptq import METHODS, apply_methods, choose_method
    from exporter.quant_debug import worst_class_delta
    from exporter.runtimes import KerasRunner, LiteRTRunner

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--calibration-samples", type=int, default=64)
    ap.add_argument("--auto-samples", type=int, default=20)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    opts = ConvertOptions(model=args.model, out=args.out, data=DataSpec(input_size=args.input_size))
    spec, config, splits, model, _ = prepare_model(opts)
    fixed = export_model(model, config)
    calib = splits.train.subset(representative_indices(splits.train, args.calibration_samples)[0]).images
    auto = splits.val.subset(np.arange(args.auto_samples))
    held = splits.val.subset(np.arange(args.auto_samples, len(splits.val)))
    n = config.num_classes
    float_held = evaluate(KerasRunner(fixed), held.images, held.masks, n)
    float_auto = evaluate(KerasRunner(fixed), auto.images, auto.masks, n)
    results, blobs = {}, {}
    tmp = Path(tempfile.mkdtemp())
    for row in args.rows.split(","):
        names = tuple(x for x in row.split("+") if x != "none")
        if any(x not in METHODS for x in names):
            continue
        start = time.perf_counter()
        try:
            candidate, recipe = apply_methods(fixed, config, calib, names) if names else (fixed, {})
            method_s = time.perf_counter() - start
            blob = to_tflite(candidate, config, "int8", calib)
        except Exception as exc:  # noqa: BLE001 - a method failing is a measured result
            results[row] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(row, results[row], flush=True)
            continue
        seconds = time.perf_counter() - start
        path = tmp / f"{row}.tflite"
        path.write_bytes(blob)
        blobs[names] = path
        ev = evaluate(LiteRTRunner(path, threads=2), held.images, held.masks, n, reference_preds=float_held["preds"])
        results[row] = {
            "agreement": ev["agreement"], "miou": ev["miou"], "miou_delta": ev["miou"] - float_held["miou"],
            "worst_class_delta": worst_class_delta(ev["per_class_iou"], float_held["per_class_iou"]),
            "seconds": seconds, "method_seconds": method_s,
            "recipe": {k: v for k, v in recipe.items() if k in ("methods", "seconds", "skipped")} if names else {},
        }
        r = results[row]
        print(f"{args.model:9s} {row:32s} agree {100 * r['agreement']:.3f}%  dmIoU {100 * r['miou_delta']:+.2f}  "
              f"worst {100 * (r['worst_class_delta'] or 0):+.2f}  {seconds:.1f}s (methods {method_s:.1f}s)", flush=True)

    def score(names):
        ev = evaluate(LiteRTRunner(blobs[tuple(names)], threads=2), auto.images, auto.masks, n,
                      reference_preds=float_auto["preds"])
        return ev["agreement"]

    choice = choose_method([k for k in blobs], score)
    chosen = "+".join(choice["chosen"]) or "none"
    summary = {"model": args.model, "input_size": args.input_size, "float_miou": float_held["miou"],
               "calibration_samples": len(calib), "held_out": len(held), "auto_samples": len(auto),
               "rows": results, "auto": {"chosen": chosen, "scores": choice["scores"]}}
    print(f"{args.model}: auto chose {chosen} (auto-slice agreement {choice['scores']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
