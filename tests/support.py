"""Shared by the tests: small registry configs, random pixels, and the MediaPipe client runner."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from architectures import get_spec, resolve_config

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "tests" / "mediapipe_client.py"
MEDIAPIPE_PYTHON = Path(os.environ.get("MEDIAPIPE_PYTHON", ROOT / ".venv-mediapipe" / "bin" / "python"))
SMALL_CLASSES = 3

needs_mediapipe = pytest.mark.skipif(
    not MEDIAPIPE_PYTHON.exists(),
    reason=f"MediaPipe client environment missing ({MEDIAPIPE_PYTHON}); create it with `make mediapipe-env`")


def small_config(name: str, batch_size: int | None = None):
    """The architecture at the smallest input it accepts from 64x64 up, with 3 classes."""
    spec = get_spec(name)
    size = max(spec.min_input, 64)
    size = -(-size // spec.input_multiple) * spec.input_multiple
    return resolve_config(name, input_size=size, num_classes=SMALL_CLASSES, batch_size=batch_size)


def pixels(config, n: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *config.input_size, 3)).astype(np.float32)


def run_client(model: Path, images: np.ndarray, out_dir: Path) -> subprocess.CompletedProcess:
    """tests/mediapipe_client.py on `model` in the MediaPipe environment (see its docstring)."""
    images_path = out_dir / "images.npy"
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(images_path, images)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([str(MEDIAPIPE_PYTHON), str(CLIENT), str(model), str(images_path), str(out_dir)],
                          capture_output=True, text=True, timeout=300, env=env)


def litert_scores(model: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dequantised float scores [N, H, W, C], raw output tensors) from LiteRT, one image at a time."""
    from exporter.runtimes import LiteRTRunner

    runner = LiteRTRunner(model, threads=1)
    scores, raw = [], []
    for image in images:
        scores.append(runner.predict(image[None])[0])
        raw.append(runner.interpreter.get_tensor(runner.output["index"])[0].copy())
    return np.stack(scores), np.stack(raw)


def top_class_agreement(category: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of pixels whose `category` is a top-scoring class of `scores`.

    Quantised outputs tie (two classes on the same uint8 step); any of the tied classes is a
    correct argmax, and which one a client picks is its own business.
    """
    chosen = np.take_along_axis(scores, category[..., None].astype(np.int64), axis=-1)[..., 0]
    return float((chosen >= scores.max(-1)).mean())
