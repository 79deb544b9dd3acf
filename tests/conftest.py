"""Shared fixtures. Tests run at small sizes (64x64) to keep `make test` quick on 2 cores."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPORTER = str(Path(sys.executable).parent / "exporter")
SMALL = 64


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


@pytest.fixture
def folder_dataset(tmp_path):
    """A real images/ + masks/ folder written from synthetic scenes (3 classes, 80x72 pixels)."""
    from calibration.synthetic import render_scene

    root = tmp_path / "data"
    for i in range(10):
        image, mask = render_scene(i, (72, 80), 3, seed=5)
        write_png(root / "images" / f"img{i:02d}.png", image)
        write_png(root / "masks" / f"img{i:02d}.png", mask)
    return root


@pytest.fixture
def run_cli(tmp_path):
    """Run the installed `exporter` console script as a user would."""
    import subprocess

    def run(*args, cwd=None):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        return subprocess.run([EXPORTER, *args], capture_output=True, text=True, cwd=cwd or tmp_path,
                              env=env, timeout=600)

    return run
