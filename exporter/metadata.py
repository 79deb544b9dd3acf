"""TFLite model metadata that MediaPipe Tasks' `ImageSegmenter` reads, written and read back.

A `.tflite` carries metadata as a `ModelMetadata` flatbuffer (file identifier "M001") stored in
one of the model's buffers and named "TFLITE_METADATA" in `Model.metadata`; associated files
(here the labels) are a zip archive appended to the flatbuffer. This module writes exactly what
MediaPipe's own `image_segmenter.MetadataWriter` writes (mediapipe 1.2.3,
`mediapipe/tasks/python/metadata/metadata_writers/`), without importing mediapipe: its writer
needs a compiled module its wheel does not ship, and mediapipe's absl-py pin conflicts with
tfmot's. The flatbuffer code comes from `exporter.metadata_schema` (flatc's output for the schema
the mediapipe wheel ships; the exact command is in that package's docstring) and the TFLite model
schema module that `ai-edge-litert` ships.

What MediaPipe reads from it (image_segmenter_graph.cc and image_preprocessing_graph.cc):
- input tensor metadata: `NormalizationOptions` (mean, std). Required for a float32 input:
  MediaPipe feeds (pixel - mean) / std. Our files take 0..255 pixels with normalisation inside the
  graph, so mean 0, std 1. A uint8 input gets the raw pixels.
- the last output tensor's associated file of type TENSOR_AXIS_LABELS: the category names,
  reported by `ImageSegmenter.labels`, one per output channel.
- the subgraph's custom metadata "SEGMENTER_METADATA" (an `ImageSegmenterOptions` flatbuffer,
  file identifier "V001"): the activation MediaPipe *applies* to the output tensor before it makes
  confidence masks. A model that outputs logits wants SOFTMAX (confidence masks become class
  probabilities); one that already ends in a softmax wants NONE. The category mask is the argmax
  either way. Without it MediaPipe logs a warning and uses NONE.
"""

from __future__ import annotations

import io
import zipfile
from typing import Sequence

import numpy as np

METADATA_FIELD_NAME = "TFLITE_METADATA"
METADATA_FILE_IDENTIFIER = b"M001"
SEGMENTER_METADATA_NAME = "SEGMENTER_METADATA"
SEGMENTER_FILE_IDENTIFIER = b"V001"
LABELS_FILE = "labels.txt"
ACTIVATIONS = ("NONE", "SIGMOID", "SOFTMAX")
# The activation MediaPipe should apply, by what an architecture's score tensor holds
# (ArchSpec.output).
ACTIVATION_FOR_OUTPUT = {"logits": "SOFTMAX", "softmax": "NONE", "sigmoid": "NONE"}

# Texts MediaPipe's writer uses for the tensors (metadata_writer.py), so files read the same.
_INPUT_NAME = "image"
_INPUT_DESCRIPTION = "Input image to be processed."
_OUTPUT_NAME = "segmentation_masks"
_OUTPUT_DESCRIPTION = "Masks over the target objects with high accuracy."
_LABELS_DESCRIPTION = "Labels for categories that the model can recognize."
# A segmentation output [1, H, W, N] is N grayscale images: content dims 1..2 (metadata_info.py).
_MASK_DIM_RANGE = (1, 2)
# A fixed zip timestamp makes the file's bytes depend on its content only.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def activation_for(output: str) -> str:
    """The MediaPipe activation for an architecture's `ArchSpec.output` ("logits", "softmax")."""
    try:
        return ACTIVATION_FOR_OUTPUT[output]
    except KeyError:
        raise ValueError(f"unknown output kind {output!r}; one of {sorted(ACTIVATION_FOR_OUTPUT)}") from None


def segmenter_metadata_for(config) -> dict:
    """The metadata arguments for an architecture's exported file (pixels 0..255 in: mean 0, std 1)."""
    import exporter
    from architectures import get_spec

    from architectures.input_norm import of_config

    from exporter.output_contract import client_activation, of

    spec = get_spec(config.name)
    # The model's own normalisation runs inside the graph; the description says which it is.
    description = f"{spec.description}. Input normalisation inside the graph: {of_config(config).describe()}"
    activation, size = of(config)
    if activation == "none":
        description += f". Outputs logits: the client applies {client_activation(config)}"
    if size == "native":
        description += (". Outputs scores at the decoder's resolution, below the input's: the client upsamples "
                        "them (bilinear) to the image size")
    elif size != "input":  # aligned:R (exporter.output_contract.aligned_grid)
        description += (f". Outputs logits on a {size.split(':', 1)[1]} grid below the input's resolution, resampled "
                        "for a client that upsamples them to the image size with aligned corners (bilinear, as "
                        "MediaPipe's ImageSegmenter does)")
    # The activation follows from the export graph's contract (exporter.output_contract).
    return dict(name=config.name, description=description, labels=list(config.labels),
                mean=0.0, std=1.0, output_activation=client_activation(config), version=exporter.__version__)


def add_segmenter_metadata(model_content: bytes, *, name: str, description: str, labels: Sequence[str],
                           mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 1.0,
                           output_activation: str = "NONE", version: str = "",
                           author: str | None = None, license: str | None = None,
                           check: bool = True) -> bytes:
    """Return `model_content` with image-segmenter metadata and its labels file packed in.

    Replaces metadata and associated files the model already had. `mean`/`std` are the
    normalisation an app applies to 0..255 RGB pixels before the model (one value, or one per
    channel); `output_activation` is what MediaPipe applies to the scores (see module doc).
    With `check`, a model MediaPipe would refuse or feed wrongly (`mediapipe_problems`) raises
    ValueError instead of getting metadata that claims otherwise.
    """
    from exporter.metadata_schema import image_segmenter_metadata_schema_generated as seg_fb
    from exporter.metadata_schema import metadata_schema_generated as md_fb

    mean, std = _per_channel("mean", mean), _per_channel("std", std)
    if len(mean) != len(std):
        raise ValueError(f"mean and std differ in length ({len(mean)} vs {len(std)})")
    if any(s == 0 for s in std):
        raise ValueError("std must not be 0")
    activation = output_activation.upper()
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown output activation {output_activation!r}; one of {', '.join(ACTIVATIONS)}")
    labels = [str(label) for label in labels]
    if not labels or any(not label.strip() or "\n" in label or "\r" in label for label in labels):
        raise ValueError("labels must be non-empty single-line names")
    if not name:
        raise ValueError("a model name is required")

    model = _model_object(model_content)
    io_types = _check_segmenter_io(model, len(labels), len(mean))
    problems = _mediapipe_problems(model) if check else []
    if problems:
        raise ValueError("; ".join(problems))

    image, masks = _input_metadata(md_fb, mean, std, io_types["input"]), _output_metadata(md_fb)
    metadata_buffer = _model_metadata(md_fb, seg_fb, image, masks, activation, name, description, version,
                                      author, license)
    return _pack_model(model, metadata_buffer, {LABELS_FILE: "\n".join(labels).encode("utf-8")})


def copy_metadata(source: bytes, target: bytes) -> bytes:
    """`target` with `source`'s metadata buffer and associated files (labels...): a file made from
    another keeps what the original told its runtime. `target` as it is when `source` has none."""
    buffer = _metadata_buffer(source)
    if buffer is None:
        return target
    return _pack_model(_model_object(target), buffer, _packed_files(source))


def _input_metadata(md_fb, mean, std, input_type: str):
    """An RGB image, its normalisation, and the value range the tensor sees."""
    image = md_fb.TensorMetadataT()
    image.name, image.description = _INPUT_NAME, _INPUT_DESCRIPTION
    image.content = md_fb.ContentT()
    image.content.contentPropertiesType = md_fb.ContentProperties.ImageProperties
    image.content.contentProperties = md_fb.ImagePropertiesT()
    image.content.contentProperties.colorSpace = md_fb.ColorSpaceType.RGB
    norm = md_fb.ProcessUnitT()
    norm.optionsType = md_fb.ProcessUnitOptions.NormalizationOptions
    norm.options = md_fb.NormalizationOptionsT()
    norm.options.mean, norm.options.std = list(mean), list(std)
    image.processUnits = [norm]
    image.stats = md_fb.StatsT()
    if input_type == "uint8":
        image.stats.min, image.stats.max = [0.0], [255.0]
    elif input_type == "float32":
        image.stats.min = [(0.0 - m) / s for m, s in zip(mean, std)]
        image.stats.max = [(255.0 - m) / s for m, s in zip(mean, std)]
    return image


def _output_metadata(md_fb):
    """N grayscale masks, one per label, with the labels file attached."""
    masks = md_fb.TensorMetadataT()
    masks.name, masks.description = _OUTPUT_NAME, _OUTPUT_DESCRIPTION
    masks.content = md_fb.ContentT()
    masks.content.contentPropertiesType = md_fb.ContentProperties.ImageProperties
    masks.content.contentProperties = md_fb.ImagePropertiesT()
    masks.content.contentProperties.colorSpace = md_fb.ColorSpaceType.GRAYSCALE
    masks.content.range = md_fb.ValueRangeT()
    masks.content.range.min, masks.content.range.max = _MASK_DIM_RANGE
    masks.stats = md_fb.StatsT()
    labels_file = md_fb.AssociatedFileT()
    labels_file.name, labels_file.description = LABELS_FILE, _LABELS_DESCRIPTION
    labels_file.type = md_fb.AssociatedFileType.TENSOR_AXIS_LABELS
    masks.associatedFiles = [labels_file]
    return masks


def _model_metadata(md_fb, seg_fb, image, masks, activation, name, description, version, author, license) -> bytes:
    # The segmenter options (activation) as a nested flatbuffer in the subgraph's custom metadata.
    options = seg_fb.ImageSegmenterOptionsT()
    options.activation = getattr(seg_fb.Activation, activation)
    builder = _builder()
    builder.Finish(options.Pack(builder), SEGMENTER_FILE_IDENTIFIER)
    custom = md_fb.CustomMetadataT()
    custom.name = SEGMENTER_METADATA_NAME
    custom.data = np.frombuffer(bytes(builder.Output()), dtype=np.uint8)

    subgraph = md_fb.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [masks]
    subgraph.customMetadata = [custom]
    meta = md_fb.ModelMetadataT()
    meta.name, meta.description = name, description
    meta.version = version or None
    meta.author, meta.license = author, license
    meta.subgraphMetadata = [subgraph]
    # What MediaPipe's populator computes (metadata_version.cc): 1.0.0, raised to 1.5.0 by
    # SubGraphMetadata.custom_metadata; nothing else written here postdates 1.0.0.
    meta.minParserVersion = "1.5.0"
    builder = _builder()
    builder.Finish(meta.Pack(builder), METADATA_FILE_IDENTIFIER)
    metadata_buffer = bytes(builder.Output())
    return metadata_buffer


def read_metadata(model_content: bytes) -> dict | None:
    """The segmenter metadata of a .tflite as a plain dict, or None when it has none.

    Keys: name, description, version, author, license, min_parser_version, normalisation
    ({"mean", "std"} or None), input_range ({"min", "max"} or None), color_space, labels (from
    the last output's TENSOR_AXIS_LABELS file, [] without one), labels_file, activation ("NONE"
    when the model does not say), associated_files (names packed into the file).
    """
    from exporter.metadata_schema import image_segmenter_metadata_schema_generated as seg_fb
    from exporter.metadata_schema import metadata_schema_generated as md_fb

    buffer = _metadata_buffer(model_content)
    if buffer is None:
        return None
    if not md_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        raise ValueError(f"metadata buffer has identifier {buffer[4:8]!r}, expected {METADATA_FILE_IDENTIFIER!r}")
    meta = md_fb.ModelMetadataT.InitFromObj(md_fb.ModelMetadata.GetRootAs(buffer, 0))
    files = _packed_files(model_content)
    out = {
        "name": _text(meta.name), "description": _text(meta.description), "version": _text(meta.version),
        "author": _text(meta.author), "license": _text(meta.license),
        "min_parser_version": _text(meta.minParserVersion),
        "normalisation": None, "input_range": None, "color_space": None,
        "labels": [], "labels_file": None, "activation": "NONE",
        "associated_files": sorted(files),
    }
    subgraph = (meta.subgraphMetadata or [None])[0]
    if subgraph is None:
        return out
    inputs = subgraph.inputTensorMetadata or []
    if inputs:
        image = inputs[0]
        for unit in image.processUnits or []:
            if unit.optionsType == md_fb.ProcessUnitOptions.NormalizationOptions:
                out["normalisation"] = {"mean": _floats(unit.options.mean), "std": _floats(unit.options.std)}
        if image.stats is not None and image.stats.min is not None and image.stats.max is not None:
            out["input_range"] = {"min": _floats(image.stats.min), "max": _floats(image.stats.max)}
        content = image.content
        if content is not None and content.contentPropertiesType == md_fb.ContentProperties.ImageProperties:
            out["color_space"] = _enum_name(md_fb.ColorSpaceType, content.contentProperties.colorSpace)
    outputs = subgraph.outputTensorMetadata or []
    if outputs:  # MediaPipe takes the labels of the last output (image_segmenter_graph.cc)
        for f in outputs[-1].associatedFiles or []:
            if f.type == md_fb.AssociatedFileType.TENSOR_AXIS_LABELS and f.name:
                out["labels_file"] = _text(f.name)
                data = files.get(out["labels_file"])
                if data is not None:
                    out["labels"] = [line for line in data.decode("utf-8").splitlines() if line]
                break
    for custom in subgraph.customMetadata or []:
        if _text(custom.name) == SEGMENTER_METADATA_NAME and custom.data is not None:
            data = bytes(bytearray(custom.data))
            options = seg_fb.ImageSegmenterOptions.GetRootAs(data, 0)
            out["activation"] = _enum_name(seg_fb.Activation, options.Activation())
    return out


def mediapipe_problems(model_content: bytes) -> list[str]:
    """Why MediaPipe's ImageSegmenter would refuse this file or feed it the wrong values ([] if none)."""
    return _mediapipe_problems(_model_object(model_content))


def describe_metadata(model_content: bytes) -> list[str]:
    """Lines for `exporter inspect`: what an app's MediaPipe ImageSegmenter will read."""
    meta = read_metadata(model_content)
    if meta is None:
        return ["metadata: none (MediaPipe's ImageSegmenter refuses a float input without NormalizationOptions)"]
    norm = meta["normalisation"]
    lines = [f"metadata: {meta['name']}" + (f" v{meta['version']}" if meta["version"] else "")
             + f" (parser >= {meta['min_parser_version']})"]
    if meta["description"]:
        lines.append(f"  description: {meta['description']}")
    lines.append(f"  input: {meta['color_space'] or 'unknown colour space'}, normalisation "
                 + (f"mean {norm['mean']} std {norm['std']}" if norm else "none"))
    lines.append(f"  labels ({meta['labels_file'] or 'no labels file'}): {', '.join(meta['labels']) or '-'}")
    lines.append(f"  output activation applied by MediaPipe: {meta['activation']}")
    problems = mediapipe_problems(model_content)
    lines.append("  MediaPipe ImageSegmenter: " + ("; ".join(problems) if problems else "ready"))
    return lines


# --- the TFLite model flatbuffer ------------------------------------------------------------

def _schema():
    # ai-edge-litert's generated TFLite schema: a superset of the one TF 2.21's converter writes
    # (TF round-trips its own output through its copy when it adds conversion metadata).
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _model_object(model_content: bytes):
    schema = _schema()
    buf = bytearray(model_content)
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError("not a TFLite flatbuffer (missing the TFL3 identifier)")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(buf, 0))


def _check_segmenter_io(model, num_labels: int, channels_of_norm: int) -> dict:
    """What MediaPipe's ImageSegmenter requires of the graph; returns the I/O dtypes."""
    schema = _schema()
    if len(model.subgraphs or []) != 1:
        raise ValueError(f"a segmenter has one subgraph, this model has {len(model.subgraphs or [])}")
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"a segmenter has one input and one output, this model has "
                         f"{len(graph.inputs)} and {len(graph.outputs)}")
    inp, out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    in_shape, out_shape = list(inp.shape), list(out.shape)
    if len(in_shape) != 4 or in_shape[3] not in (3, 4):
        raise ValueError(f"input {in_shape} is not an image batch [1, H, W, 3]")
    if channels_of_norm not in (1, in_shape[3]):
        raise ValueError(f"normalisation has {channels_of_norm} values for {in_shape[3]} channels")
    if not out_shape or out_shape[-1] != num_labels:
        raise ValueError(f"output {out_shape} has {out_shape[-1] if out_shape else 0} channels "
                         f"for {num_labels} labels")
    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return {"input": names.get(inp.type, str(inp.type)), "output": names.get(out.type, str(out.type))}


def _mediapipe_problems(model) -> list[str]:
    schema = _schema()
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    problems = []
    if tensor.type not in (schema.TensorType.UINT8, schema.TensorType.FLOAT32):
        # "Type mismatch for input tensor ...: Requested one of these types: uint8/float32, got INT8."
        problems.append(f"MediaPipe takes a uint8 or float32 input, this model's is "
                        f"{_enum_name(schema.TensorType, tensor.type).lower()}")
    elif tensor.type == schema.TensorType.UINT8:
        q = tensor.quantization
        scale = [] if q is None or q.scale is None else [float(v) for v in q.scale]
        zero = [] if q is None or q.zeroPoint is None else [int(v) for v in q.zeroPoint]
        if scale and (abs(scale[0] - 1.0) > 1e-6 or (zero and zero[0] != 0)):
            # MediaPipe (like a camera app) hands the raw 0..255 bytes in; the graph reads them as
            # (byte - zero_point) * scale, i.e. not the pixels it was calibrated for.
            problems.append(f"the uint8 input is quantised with scale {scale[0]:.6g}, zero point "
                            f"{zero[0] if zero else 0}, not 1 and 0: MediaPipe feeds raw pixels, so the "
                            f"model would see them rescaled (calibrate over the full 0..255 range, or "
                            f"set the input tensor's quantisation to scale 1, zero point 0)")
    return problems


def _pack_model(model, metadata_buffer: bytes, files: dict[str, bytes]) -> bytes:
    """Serialise `model` with the metadata buffer in place, then append `files` as a zip.

    Mirrors MediaPipe's MetadataPopulator: the buffer is referenced by name from Model.metadata
    (an existing TFLITE_METADATA entry is overwritten), and associated files are a zip archive
    appended after the flatbuffer, its offsets absolute within the whole file.
    """
    schema = _schema()
    data = schema.BufferT()
    data.data = np.frombuffer(metadata_buffer, dtype=np.uint8)
    model.metadata = list(model.metadata or [])
    model.buffers = list(model.buffers or [])
    for entry in model.metadata:
        if _text(entry.name) == METADATA_FIELD_NAME:
            model.buffers[entry.buffer] = data
            break
    else:
        model.buffers.append(data)
        entry = schema.MetadataT()
        entry.name = METADATA_FIELD_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = _builder()
    builder.Finish(model.Pack(builder), b"TFL3")
    out = io.BytesIO()
    out.write(bytes(builder.Output()))
    with zipfile.ZipFile(out, "a") as zf:  # appends after the flatbuffer, as the populator does
        for name, content in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), content)
    return out.getvalue()


def _metadata_buffer(model_content: bytes) -> bytes | None:
    schema = _schema()
    buf = bytearray(model_content)
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError("not a TFLite flatbuffer (missing the TFL3 identifier)")
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_FIELD_NAME:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def _packed_files(model_content: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(model_content)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        return {}


# --- small helpers ---------------------------------------------------------------------------

def _builder():
    import flatbuffers

    return flatbuffers.Builder(1024)


def _per_channel(what: str, value) -> list[float]:
    values = [float(value)] if np.isscalar(value) else [float(v) for v in value]
    if len(values) not in (1, 3, 4):
        raise ValueError(f"{what} needs 1 value or one per channel, got {len(values)}")
    return values


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _floats(values) -> list[float]:
    return [] if values is None else [float(v) for v in values]


def _enum_name(enum, value) -> str:
    for key, v in vars(enum).items():
        if not key.startswith("_") and v == value:
            return key
    return str(value)
