"""--ptq-method: the int8 file of the float graph after post-training methods (exporter.ptq:
cross-layer equalisation, SmoothQuant, AdaRound, bias correction), measured beside the plain one.

The methods change the float weights only; the converter's own int8 rounding of the result is
what ships. With `auto` each applicable method (and none) is tried on the calibration samples and
scored on a slice of training samples that are neither calibration samples nor the report's
held-out ones; the best is written, or nothing when the plain file wins.
"""

from __future__ import annotations

import time

import numpy as np

from exporter.artifacts import Artifact
from exporter.formats import ALTERNATIVE, artifact_name
from exporter.progress import say
from exporter.stages.export import write_tflite
from exporter.stages.run import Run

AUTO_SLICE = 16  # samples `auto` scores on: enough to rank methods, a fraction of a conversion's time


def method_files(run: Run) -> tuple[list[Artifact], dict]:
    """([the methods' int8 file]; none when auto keeps the plain file), the report's quantisation["ptq_methods"]."""
    from exporter.convert.tflite import to_tflite, weight_scales
    from exporter.ptq import apply_methods

    q = run.opts.quant
    if not q.ptq_methods:
        return [], {}
    t0 = time.time()
    section = {"requested": list(q.ptq_methods)}
    methods = tuple(q.ptq_methods)
    if methods == ("auto",):
        choice = _auto(run)
        methods = tuple(choice["chosen"])
        section["auto"] = {k: v for k, v in choice.items() if k != "chosen"}
        say(f"--ptq-method auto: {'+'.join(methods) or 'the plain file'} scored best "
            f"({', '.join(f'{k} {100 * v:.2f}%' for k, v in choice['scores'].items())})")
        if not methods:
            return [], {**section, "chosen": [], "seconds": round(time.time() - t0, 1)}
    say(f"post-training methods {', '.join(methods)} on the float graph, then int8 ({len(run.calib)} calibration samples)")
    model, recipe = apply_methods(run.fixed, run.config, run.calib.images, methods)
    blob = to_tflite(model, run.config, "int8", run.calib.images, io=q.io, per_tensor=q.per_tensor,
                     range_percentile=q.range_percentile)
    name = artifact_name(run.name, "int8", role="-".join(recipe["methods"]) or "ptq-methods")
    art = write_tflite(run, blob, name, "int8", "ptq", {"io": q.io, "weight_scales": weight_scales(q.per_tensor),
                                                         "ptq_methods": recipe["methods"]}, role=ALTERNATIVE)
    return [art], {**section, "chosen": recipe["methods"], "file": name, "recipe": _jsonable(recipe),
                   "seconds": round(time.time() - t0, 1)}


def _auto(run: Run) -> dict:
    """Each applicable method alone and none, scored by int8-vs-float agreement on training samples
    outside the calibration set (disjoint from the report's held-out samples)."""
    from exporter.ptq import NONE, applicable_methods, choose_method
    from exporter.ptq.auto import agreement_score

    q = run.opts.quant
    spare = np.setdiff1d(np.arange(len(run.splits.train)), np.asarray(run.calib_idx))
    rng = np.random.default_rng(run.opts.schedule.seed)
    pick = np.sort(rng.choice(spare, size=min(AUTO_SLICE, len(spare)), replace=False)) if len(spare) else spare
    if not len(pick):  # every training sample calibrates: nothing disjoint to score on
        return {"chosen": (), "scores": {}, "note": "no training sample outside the calibration set to score on"}
    score = agreement_score(run.fixed, run.config, run.calib.images, run.splits.train.images[pick],
                            io=q.io, per_tensor=q.per_tensor, range_percentile=q.range_percentile)
    candidates = [NONE] + [(m,) for m in applicable_methods(run.fixed)]
    say(f"--ptq-method auto: trying {', '.join('+'.join(c) if isinstance(c, tuple) else c for c in candidates)} "
        f"on {len(pick)} training samples outside the calibration set")
    choice = choose_method(candidates, score)
    return {**choice, "scored_on": f"{len(pick)} training samples outside the calibration set",
            "scored_ids": [run.splits.train.ids[i] for i in pick]}


def _jsonable(value):
    """The recipe as report.json can hold it (numpy scalars and arrays to plain numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
