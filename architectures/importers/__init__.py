"""Where a model comes from when we did not build it: the checkpoints users' own training code
writes, loaded into our graphs by structure (DESIGN.md, "model source").

An importer is a module here with three functions, found through `for_architecture`:

    claims(path) -> bool                  is this file/folder of the kind this importer reads (cheap)
    config_overrides(path) -> dict        resolve_config overrides the file implies (labels, classes, ...)
    load(model, path, config) -> Imported moves the weights into `model` (our graph, built from those
                                          overrides); refuses with `refuse(...)`: one line, no values

Each architecture lists its importers in `IMPORTERS`; the first that claims a path reads it.
What an importer mapped is said to the user (`Imported.describe`) and recorded in report.json.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from exporter.errors import WeightsError

# Architecture -> importer modules (architectures.importers.<module>), tried in order.
IMPORTERS: dict[str, tuple[str, ...]] = {
    "unet": ("unet_tutorial",),  # TensorFlow's segmentation tutorial, as the seed builds it
    "selfie": ("selfie_seed",),  # the seed's "modified ViT"
    "segformer": ("segformer_tf",),  # Hugging Face's TFSegformerForSemanticSegmentation
    "deeplab": ("deeplab_tf1",),  # TF1 research/deeplab, mobilenet_v3_small_seg
}


@dataclasses.dataclass(frozen=True)
class Imported:
    """What an importer read and moved: `source` names the form (e.g. "TF checkpoint written by
    tf.keras save_weights"), `mapped` the tensors now in our graph, `notes` anything the user should know."""

    source: str
    mapped: int
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.source}: {self.mapped} tensors mapped" + "".join(f"; {n}" for n in self.notes)

    def to_json(self) -> dict:
        return {"source": self.source, "mapped": self.mapped, "notes": list(self.notes)}


def for_architecture(name: str, path: Path):
    """The importer module that claims `path` for architecture `name`, or None."""
    for module in IMPORTERS.get(name, ()):
        importer = importlib.import_module(f"architectures.importers.{module}")
        if importer.claims(Path(path)):
            return importer
    return None


def exists(path: Path) -> bool:
    """A weights source is there: a file, a folder, or a TF checkpoint named by its prefix."""
    from architectures.importers.tf_checkpoint import prefix_of

    return Path(path).exists() or prefix_of(path) is not None


def shape_text(shape) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def refuse(path: Path, what: str, missing: dict | None = None, leftover: dict | None = None,
           limit: int = 4) -> WeightsError:
    """One line: what does not fit, with names and shapes of at most `limit` tensors each way."""
    def listed(label: str, tensors: dict | None) -> str:
        if not tensors:
            return ""
        items = [f"{name} {shape_text(shape)}" for name, shape in list(tensors.items())[:limit]]
        more = f" and {len(tensors) - limit} more" if len(tensors) > limit else ""
        return f"; {label} ({len(tensors)}): {', '.join(items)}{more}"

    return WeightsError(f"{path}: {what}{listed('missing', missing)}{listed('left over', leftover)}")


def config_overrides(name: str, path: Path) -> dict:
    """resolve_config overrides a weights source implies: the claiming importer's, else the
    architecture's own hook (`ArchSpec.config_from_weights`), else none (our own Keras weights)."""
    from architectures import get_spec

    importer = for_architecture(name, path)
    if importer is not None:
        return importer.config_overrides(Path(path))
    _refuse_foreign(name, Path(path))
    spec = get_spec(name)
    return spec.config_from_weights(Path(path)) if spec.config_from_weights is not None else {}


def load(name: str, model, path: Path, config):
    """Weights into our graph: the claiming importer moves them and the user is told what it mapped
    (returns its Imported); else the architecture's own loader (`ArchSpec.load_weights`), whose
    multi-line errors are cut to one; returns None when neither applies (plain Keras weights)."""
    from architectures import get_spec

    importer = for_architecture(name, path)
    if importer is None:
        _refuse_foreign(name, Path(path))
        spec = get_spec(name)
        if spec.load_weights is None:
            return None
        try:
            return spec.load_weights(model, path, config)
        except WeightsError as error:
            raise one_line(error) from None
    from exporter.progress import say

    imported = importer.load(model, Path(path), config)
    say(f"imported {path}: {imported.describe()}")
    return imported


def one_line(error: WeightsError) -> WeightsError:
    """Keras' loaders put every unrestored variable, values and all, in their message (issue 25:
    5,544 lines): keep the first line and say how much was left out."""
    lines = str(error).splitlines()
    if len(lines) <= 1:
        return error
    return WeightsError(f"{lines[0].rstrip(': ')} ({len(lines) - 1} more lines of the loader's message left out)")


def _refuse_foreign(name: str, path: Path) -> None:
    """A checkpoint another architecture's importer reads is the wrong architecture for `name`:
    say so in one line, rather than let Keras' loader list every variable it could not place."""
    for other in IMPORTERS:
        if other != name and for_architecture(other, path) is not None:
            raise refuse(path, f"a {other} checkpoint, not a {name} one; use --model {other}")
