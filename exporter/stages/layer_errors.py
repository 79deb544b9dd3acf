"""Per-layer int8 error (TFLite's QuantizationDebugger, on held-out samples) and --keep-float.

Returns the report's quantisation["layer_errors"] and ["keep_float"] sections, and the selective
file MODEL_int8_mixed.tflite (layers kept float) when one is asked for and needed.
"""

from __future__ import annotations

import numpy as np

from exporter.artifacts import Artifact, write_json
from exporter.convert.tflite import weight_scales
from exporter.errors import ExporterError
from exporter.formats import SELECTIVE, artifact_name, recipe_name
from exporter.policy import targets_for
from exporter.progress import say
from exporter.stages.export import write_tflite
from exporter.stages.run import Run


def layer_errors_and_keep_float(run: Run, ref: dict) -> tuple[dict, list[Artifact]]:
    """({"layer_errors": ..., "keep_float": ...}, [the selective file]) for an int8 run."""
    from exporter.quant_debug import ROUNDING_RMSE_OVER_SCALE, QuantDebugSession

    q = run.opts.quant
    if not run.opts.int8 or not (q.layer_errors or q.keep_float_layers):
        return {}, []
    debug_n = min(q.debug_samples, len(run.val))
    say(f"per-layer int8 error (TFLite QuantizationDebugger) on {debug_n} held-out samples")
    session = QuantDebugSession(run.fixed, run.config, run.calib.images, run.val.images[:debug_n],
                                per_tensor=q.per_tensor, range_percentile=q.range_percentile)
    ranking = session.layer_stats()
    out = {"layer_errors": {
        "method": "TFLite QuantizationDebugger: each int8 op against the float op on the same "
                  "(dequantised) input, post-training int8 calibrated on the run's calibration samples",
        "metric": "RMSE / scale: the op's output error in int8 steps",
        "rounding_only": round(ROUNDING_RMSE_OVER_SCALE, 4),
        "split": "held-out",
        "samples": debug_n,
        "heldout_ids": list(run.val.ids[:debug_n]),
        "tensors": len(ranking),
        "worst": [_round_row(r) for r in ranking[:q.layer_errors or len(ranking)]],
    }}
    if not q.keep_float_layers:
        return out, []
    recipe, selective = _keep_float(run, session, ref, ranking)
    out["keep_float"] = recipe
    recipe_file = recipe_name(run.name)
    files = []
    if selective is not None:
        files.append(write_tflite(run, selective.blob, recipe["file"], "int8", "ptq", {
            "io": q.io, "weight_scales": weight_scales(q.per_tensor), "keep_float": recipe["keep_float"],
            "recipe": recipe_file}, role=SELECTIVE))
        files[0] = files[0].measured(full_integer=not files[0].facts["float_ops"])
    write_json(run.staging / recipe_file, recipe)
    say(f"wrote {recipe_file} (kept float: {', '.join(recipe['keep_float']) or 'nothing'})")
    return out, files


def _round_row(row: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else v) for k, v in row.items()}


def _keep_float(run: Run, session, ref: dict, ranking: list[dict]) -> tuple[dict, object]:
    """The recipe (what stays float, why, what it cost) and the selective file (None: not needed)."""
    from exporter.quant_debug import keep_float_auto

    opts, keep_float, fixed, config, val = run.opts.quant, run.opts.quant.keep_float_layers, run.fixed, run.config, run.val

    rank_of = {}
    for row in ranking:
        rank_of.setdefault(row["layer"], (len(rank_of) + 1, row["rmse_over_scale"]))
    recipe = {"model": config.name, "file": artifact_name(config.name, "int8", role="mixed"),
              "base": f"post-training int8 (TFLite converter), calibrated on the run's {len(run.calib)} "
                      "stratified training samples", "io": opts.io}
    if keep_float == ["auto"]:
        max_drop = opts.max_miou_drop if opts.max_miou_drop is not None else targets_for(config.name).max_miou_drop
        class_drop = targets_for(config.name).max_class_iou_drop
        say(f"--keep-float auto: keeping the worst layers float until held-out mIoU is within "
            f"{100 * max_drop:g} point(s) of float and no class loses more than {100 * class_drop:g} "
            f"(at most {opts.keep_float_tries} layers)")
        found = keep_float_auto(fixed, config, None, val, max_miou_drop=max_drop, max_class_drop=class_drop,
                                max_tries=opts.keep_float_tries, io=opts.io, session=session, reference=ref)
        chosen, selective = found["keep_float"], found["selective"]
        recipe.update(mode="auto", max_miou_drop=max_drop, max_class_drop=class_drop, max_tries=opts.keep_float_tries,
                      reference_miou=round(found["reference_miou"], 6), target_miou=round(found["target_miou"], 6),
                      met=found["met"], skipped=found["skipped"],
                      trials=[_round_row(t) for t in found["trials"]],
                      measured_on=f"{len(val)} held-out samples")
        if not found["met"]:
            say(f"warning: --keep-float auto: the target was not met with {len(chosen)} layer(s) kept float")
        if not chosen:
            recipe["file"] = None
            recipe["note"] = "The full-integer file already meets the target: no layer kept float, no extra file"
            selective = None
    else:
        chosen = list(keep_float)
        say(f"--keep-float: keeping {', '.join(chosen)} float")
        selective = session.quantize(chosen, io=opts.io)
        recipe["mode"] = "manual"
    recipe["keep_float"] = list(chosen)
    recipe["layers"] = [{"layer": layer, "reason": (
        ("auto: " if recipe["mode"] == "auto" else "asked for (--keep-float); ")
        + (f"ranked #{rank_of[layer][0]} by RMSE/scale ({rank_of[layer][1]:.3f}) on held-out samples"
           if layer in rank_of else "no quantised op of its own"))} for layer in chosen]
    if selective is not None:
        recipe.update(denylisted_nodes=selective.denylisted_nodes, not_honoured=selective.not_honoured,
                      float_ops=sorted(set(selective.float_ops)), full_integer=selective.full_integer)
        if selective.not_honoured:
            say(f"warning: --keep-float: the quantiser kept {len(selective.not_honoured)} denylisted tensor(s) "
                f"int8 anyway: {', '.join(selective.not_honoured[:3])}")
    return recipe, selective


def check_layer_names(names: list[str] | None, model) -> None:
    """Fail early (before any conversion) on a --keep-float name that is no layer of the model."""
    import difflib

    if not names or names == ["auto"]:
        return
    layers = [layer.name for layer in model.layers]
    for name in names:
        if name not in layers and ";" not in name and "/" not in name:  # TFLite tensor names pass through
            close = difflib.get_close_matches(name, layers, n=3)
            raise ExporterError(f"--keep-float: {model.name} has no layer {name!r}"
                                + (f" (did you mean {', '.join(close)}?)" if close else "")
                                + "; `exporter inspect --quant FILE` lists the layers by int8 error")
