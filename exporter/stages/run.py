"""What every stage of one `convert` reads: the options, the float model and the data splits."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

from exporter.options import ConvertOptions


@dataclasses.dataclass(frozen=True)
class Run:
    opts: ConvertOptions
    spec: object  # architectures.ArchitectureSpec
    config: object  # architectures.ModelConfig
    splits: object  # calibration.dataset.Splits
    model: object  # the float Keras model as trained
    fixed: object  # its batch-1 export graph (exporter.convert.signature.export_model): what is converted
    calib: object  # the calibration samples (a Split of the training data)
    calib_idx: object  # their indices in the training split
    missing_classes: list  # class names absent from the calibration samples
    training: dict  # where the weights came from (the report's "training")
    staging: Path  # files are written here and published only when the whole run succeeded

    @property
    def val(self):
        return self.splits.val

    @property
    def name(self) -> str:
        return self.config.name


@contextlib.contextmanager
def staging_folder(out: Path, model: str):
    """A private folder under OUT for this run's files; removed whatever happens (published files
    have been moved out of it by then)."""
    staging = Path(out) / f".{model}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, final_dir: Path) -> None:
    """Move every staged file into place (after the whole run succeeded). Only files this run made
    are in staging, so only those names are replaced in OUT/MODEL."""
    final_dir.mkdir(parents=True, exist_ok=True)
    for path in staging.iterdir():
        os.replace(path, final_dir / path.name)
