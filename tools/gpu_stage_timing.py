"""The GPU stage's wall time per registry model at a given input size (issue 27's note), without training:
each model built with random weights (BatchNorm statistics from one batch, as tests/test_registry_contracts
does), its float32, float16 and int8 files converted as convert writes them, then exporter.gpu.stage on 3
held-out-like synthetic scenes and the fp16 simulation. Accuracy figures here are on random weights:
GPU-vs-CPU agreement is meaningful (same file), accuracy against ground truth is not measured.

    .venv/bin/python tools/gpu_stage_timing.py [SIZE]      # default 128
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(size: int) -> None:
    from architectures import build, get_spec, list_models, resolve_config
    from calibration.synthetic import render_scene
    from exporter.convert.signature import export_model
    from exporter.convert.tflite import to_tflite
    from exporter.gpu.fp16_sim import simulate
    from exporter.gpu.stage import measure_gpu
    from exporter.keras import keras
    from exporter.metadata import add_segmenter_metadata, segmenter_metadata_for
    from support import SMALL_CLASSES
    from test_registry_contracts import calibrate_batchnorm

    for name in list_models():
        spec = get_spec(name)
        side = -(-max(size, spec.min_input) // spec.input_multiple) * spec.input_multiple
        config = resolve_config(name, input_size=side, num_classes=SMALL_CLASSES)
        keras.utils.set_random_seed(0)
        model = build(config)
        scenes = np.stack([render_scene(i, config.input_size, config.num_classes, seed=3)[0] for i in range(8)])
        calibrate_batchnorm(model, scenes[:4].astype(np.float32))
        fixed = export_model(model, config)
        with TemporaryDirectory() as tmp:
            arts = []
            for precision in ("float32", "float16", "int8"):
                path = Path(tmp) / f"{name}_{precision}.tflite"
                blob = to_tflite(fixed, config, precision, scenes if precision == "int8" else None)
                path.write_bytes(add_segmenter_metadata(blob, **segmenter_metadata_for(config)))
                arts.append({"file": path.name, "format": "tflite", "precision": precision})
            held = np.stack([render_scene(100 + i, config.input_size, config.num_classes, seed=9)[0]
                             for i in range(3)]).astype(np.float32)
            started = time.monotonic()
            per_file, top = measure_gpu(arts, Path(tmp), held)
            stage_s = time.monotonic() - started
            sim_started = time.monotonic()
            sim = simulate(fixed, held)
            sim_s = time.monotonic() - sim_started
        print(json.dumps({"model": name, "size": size, "gpu_stage_seconds": round(stage_s, 1),
                          "fp16_simulation_seconds": round(sim_s, 1), "files": per_file, "top": top,
                          "fp16_simulation": sim}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 128)
