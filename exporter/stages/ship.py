"""Which int8 file ships as MODEL_int8.tflite when QAT and post-training int8 were both measured.

The better held-out result under the model's gate ships (exporter.policy.better_int8); the other
keeps its suffixed name (MODEL_int8_qat.tflite or MODEL_int8_ptq.tflite) and is reported, not
gated. Runs after accuracy and before latency/ARM, so those are recorded under the final names.
"""

from __future__ import annotations

import os

from exporter.artifacts import Artifact
from exporter.formats import ALTERNATIVE, artifact_name
from exporter.policy import better_int8, rival_label
from exporter.progress import say
from exporter.stages.run import Run


def choose_int8(run: Run, artifacts: list[Artifact], ref_iou: dict) -> tuple[list[Artifact], dict | None]:
    """(records with the shipped file renamed, the report's "shipped_int8" decision; None: no choice)."""
    rivals = [a for a in artifacts if a.format == "tflite" and a.precision == "int8" and a.role == ALTERNATIVE]
    if not rivals:
        return artifacts, None
    shipped = artifact_name(run.name, "int8")
    if len(rivals) == 1:  # e.g. --ptq-method auto kept the plain file: nothing to choose between
        os.replace(run.staging / rivals[0].file, run.staging / shipped)
        return [a.renamed(shipped, None) if a is rivals[0] else a for a in artifacts], None
    best, why = better_int8(run.name, ref_iou, [a.to_json() for a in rivals])
    winner = next(a for a in rivals if a.file == best["file"])
    os.replace(run.staging / winner.file, run.staging / shipped)
    say(f"{shipped} is the {rival_label(best)} file: {why}")
    decision = {"file": shipped, "method": rival_label(best), "from": winner.file, "why": why,
                "others": {a.file: rival_label(a.to_json()) for a in rivals if a is not winner}}
    return [a.renamed(shipped, None) if a is winner else a for a in artifacts], decision
