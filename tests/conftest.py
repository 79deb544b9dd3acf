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


# --- the two workers' loads -------------------------------------------------------------------------
# `make test` runs `-n 2 --dist loadfile`: each file goes whole to one worker, in the queue's order, and
# the run lasts as long as the busier worker. xdist's default queue puts files with many tests first,
# which leaves the costliest (a few long tests each) for last, where one of them keeps a worker busy
# for minutes after the other has finished. Instead the files that take minutes go first, costliest
# first (seconds per file on two cores, `--durations 0` summed per file), and the many short files
# fill in behind them. A file not listed keeps its place after these; the order changes no test.
COSTLIEST_FIRST = (
    "test_import_seed_unet.py",
    "test_quant_cli.py",
    "test_distribute.py",
    "test_import_seed_selfie.py",
    "test_training_runs.py",
    "test_registry_contracts.py",
    "test_end_to_end.py",
    "test_convert_from.py",
    "test_ptq_pipeline.py",
    "test_qat.py",
    "test_clean_exit.py",
    "test_training_recipes.py",
    "test_deeplab.py",
    "test_import_seed_unet_finetune.py",
    "test_strict.py",
    "test_tfrecord_data.py",
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's "files with most tests first"
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order
