"""Architecture registry: name -> spec. Tests and the CLI iterate over `list_models()`.

Each architecture module registers one `ArchSpec` with `register`. A spec carries everything the
pipeline needs to know about a model (labels, default input size, how pixels are normalised, how
to load weights) so no stage special-cases a model by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from exporter.errors import UnknownModelError


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    name: str
    description: str
    # builder(config) -> keras.Model taking RGB float pixels 0..255, returning per-class scores
    # [batch, H, W, classes] at input resolution.
    builder: Callable[["ModelConfig"], Any]
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    input_norm: str  # what the graph does to 0..255 pixels by default (architectures.input_norm; --input-norm)
    output: str = "logits"  # "logits" or "softmax": what the score tensor holds
    # Smallest input the network accepts (stride constraints), used by tests at small sizes.
    min_input: int = 32
    input_multiple: int = 32
    # Extra builder options with their defaults (e.g. freeze_encoder); overridable by name.
    options: dict = dataclasses.field(default_factory=dict)
    # Optional: read overrides (labels, options) from a weights source before building,
    # config_from_weights(path) -> dict of resolve_config keyword arguments.
    config_from_weights: Callable | None = None
    # Optional custom weight loader(model, path, config); default: a Keras weights file.
    load_weights: Callable | None = None
    # Optional: what the exported (batch 1) graph differs in, and how weights move into it, for
    # a graph that computes the same function faster (exporter.convert.signature.export_model).
    # Default: the same options, weights copied as they are.
    export_options: dict = dataclasses.field(default_factory=dict)
    export_weights: Callable | None = None
    # Optional: export options for one TFLite precision's file only ({precision: options}), on top of
    # `export_options`: a form of the same function that precision's kernels need (SegFormer's int16x8).
    precision_export_options: dict = dataclasses.field(default_factory=dict)
    # Training defaults that suit this architecture on the synthetic data.
    learning_rate: float = 1e-3
    # Optional: encoder_layers(model) -> the layers of a (pretrained) encoder, which
    # `exporter train --freeze-epochs N` keeps frozen for the first N epochs.
    encoder_layers: Callable | None = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A spec resolved with the user's overrides: what one concrete model is built from."""

    name: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    batch_size: int | None = None  # None: any batch (training); 1: static export graph
    options: dict = dataclasses.field(default_factory=dict)
    # The exported file's output contract (exporter.output_contract; convert --output-activation,
    # --output-size): "model"/"input" is the graph as built. Only the export graph reads them.
    output_activation: str = "model"
    output_size: str = "input"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "labels": list(self.labels),
            "input_size": list(self.input_size),
            "options": dict(self.options),
        }


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ArchSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}"
        ) from None


def resolve_config(
    name: str,
    *,
    num_classes: int | None = None,
    labels: tuple[str, ...] | list[str] | None = None,
    input_size: int | tuple[int, int] | None = None,
    batch_size: int | None = None,
    input_norm: str | None = None,
    **options: Any,
) -> ModelConfig:
    """Apply overrides to a spec's defaults. Labels win over a class count. `input_norm` (any
    architecture): the pixel normalisation the weights were trained with, if not the architecture's."""
    spec = get_spec(name)
    if labels is None:
        if num_classes is None or num_classes == len(spec.labels):
            labels = spec.labels
        else:
            labels = tuple(
                spec.labels[i] if i < len(spec.labels) else f"class_{i}" for i in range(num_classes)
            )
    labels = tuple(labels)
    if len(labels) < 2:
        raise ValueError("a segmentation model needs at least 2 classes")
    if input_size is None:
        size = spec.input_size
    elif isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        size = tuple(input_size)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise ValueError(f"{name} has no option(s) {sorted(unknown)}; known: {sorted(spec.options)}")
    merged = {**spec.options, **{k: v for k, v in options.items() if v is not None}}
    if input_norm is not None:
        from architectures.input_norm import parse

        merged["input_norm"] = parse(input_norm).spec
    return ModelConfig(name=name, labels=labels, input_size=size, batch_size=batch_size, options=merged)


def create_model(name: str, **overrides: Any):
    """Build a model by registry name, e.g. create_model("unet", input_size=64, num_classes=3)."""
    config = resolve_config(name, **overrides)
    return get_spec(name).builder(config)


def build(config: ModelConfig):
    return get_spec(config.name).builder(config)


# Modules of this package that hold shared code rather than an architecture.
_NOT_ARCHITECTURES = {"layers", "subpixel", "input_norm", "segformer_hf", "importers"}


def _load_all() -> None:
    # Import every architecture module for its register() side effect, so a new file in this
    # package is picked up (and tested) without touching a list. The modules import TensorFlow
    # only inside their builders, so listing models stays fast.
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_") and module.name not in _NOT_ARCHITECTURES:
            importlib.import_module(f"architectures.{module.name}")
