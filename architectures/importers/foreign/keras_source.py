"""A Keras model file (.keras, full-model .h5) or a SavedModel folder, for `convert --from`.

Engine: TFLiteConverter, with the format table's recipe per precision (exporter.formats), from a
batch-1 concrete function of the model (the converter's own Keras path serialises the whole model
first, much slower). Float input and output at every precision: the original's contract.
Reference: the model itself, in Keras (or TensorFlow for a SavedModel).

A `.keras` file is read with Keras 3 (what `model.save` writes in TensorFlow 2.16+), an .h5 with
tf_keras (Keras 2) first, each falling back to the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from architectures.importers.foreign import (Contract, ForeignModel, check_head, class_names, normalisation,
                                             output_kind)
from architectures.importers.foreign.errors import ForeignModelError
from exporter.errors import first_line


def open_source(path: Path, kind: str, work: Path, *, name: str, input_norm, labels, output) -> ForeignModel:
    from architectures.importers.foreign.tflite_float import fix_float_tflite
    from exporter.keras import tf
    from exporter.progress import say

    fn, trackable, what, last_op = _load(path, kind)
    in_shape = [int(d) if d is not None else None for d in fn.inputs[0].shape]
    channels_first = len(in_shape) == 4 and in_shape[1] == 3 and in_shape[3] not in (1, 3, 4)
    out_shape = list(fn.structured_outputs.shape)
    if channels_first and len(out_shape) == 4:
        out_shape = [out_shape[0], out_shape[2], out_shape[3], out_shape[1]]
    h, w, c = check_head(out_shape, path.name)

    def convert(precision: str, calibration: np.ndarray | None) -> bytes:
        from exporter.formats import variant

        row = variant("tflite", precision)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], trackable)
        row.configure(converter, tf, "float")  # the original's float input and output
        if row.calibrated:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        try:
            return row.convert(converter, calibration, "float", 100.0) if row.convert else converter.convert()
        except Exception as exc:  # the converter's messages run to pages
            raise ForeignModelError(f"{path.name}: TFLiteConverter failed at {precision}: {first_line(exc)}") from None

    # A signature (what AI Edge Quantizer needs for the int8 search's candidates); nothing else changes.
    float32, _ = fix_float_tflite(convert("float32", None), path.name)
    if last_op is None:  # a SavedModel's signature calls a function: its last op is read from the TFLite file
        from architectures.importers.foreign.tflite_source import last_op_of

        last_op = last_op_of(float32, 0)
    mean, std, norm_from = normalisation(input_norm, None, path.name)
    out, out_from = output_kind(output, None, last_op, c, path.name)
    names, names_from = class_names(labels, None, c, path.name)
    ih, iw = (in_shape[2], in_shape[3]) if channels_first else (in_shape[1], in_shape[2])
    contract = Contract(height=ih, width=iw, channels_first=channels_first, mean=mean, std=std, norm_source=norm_from,
                        head=0, channels=c, output=out, output_source=out_from, labels=names, labels_source=names_from)
    say(f"{path.name}: {what}; input {contract.describe_input()}, output [1, {h}, {w}, {c}] {out} ({out_from})")

    def reference():
        def predict(pixels):
            y = np.asarray(fn(tf.constant(contract.inputs(pixels))), np.float32)
            return y.transpose(0, 2, 3, 1) if channels_first else y
        return predict

    return ForeignModel(path=path, kind=kind, name=name, engine=f"TFLiteConverter (TensorFlow {tf.__version__})",
                        reference_description=f"the original model in TensorFlow {tf.__version__} ({what})",
                        float32=float32, contract=contract, fixes=[], metadata_source=None,
                        _quantise=convert, _reference=reference)


def _load(path: Path, kind: str):
    """(batch-1 concrete function of the mask output, trackable, what was read, last op name)."""
    from exporter.keras import tf

    if kind == "savedmodel":
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ForeignModelError(f"{path}: not a readable SavedModel: {first_line(exc)}") from None
        sig = getattr(loaded, "signatures", {}).get("serving_default")
        if sig is None:
            raise ForeignModelError(f"{path}: SavedModel without a serving_default signature")
        specs = list(sig.structured_input_signature[1].values())
        if len(specs) != 1:
            raise ForeignModelError(f"{path}: {len(specs)} inputs; one image input is supported")
        keys = list(sig.structured_outputs)
        key = _mask_output(keys, [sig.structured_outputs[k].shape for k in keys], path)
        arg = list(sig.structured_input_signature[1])[0]
        call, shape, last_op = (lambda x: sig(**{arg: x})[key]), specs[0].shape, _last_op_of_graph(sig, key)
        trackable, what = loaded, f"SavedModel, signature serving_default, output {key!r}"
    else:
        model, what = _keras_model(path)
        outs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
        index = _mask_output(list(range(len(outs))), [o.shape for o in outs], path)
        if len(model.inputs) != 1:
            raise ForeignModelError(f"{path}: {len(model.inputs)} inputs; one image input is supported")

        def call(x, model=model, index=index):
            y = model(x, training=False)
            return y[index] if isinstance(y, (list, tuple)) else y
        shape, last_op, trackable = model.inputs[0].shape, _last_activation(model, outs[index]), tf.Module()
    shape = [None if d is None else int(d) for d in shape]
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ForeignModelError(f"{path}: input {shape} is not a fixed-size image batch; give a model with a "
                                "fixed input size")
    if 3 not in (shape[1], shape[3]):
        raise ForeignModelError(f"{path}: input {shape} has no 3-channel (RGB) axis")
    try:
        fn = tf.function(call).get_concrete_function(tf.TensorSpec([1, *shape[1:]], tf.float32))
    except Exception as exc:
        raise ForeignModelError(f"{path}: cannot trace the model at batch 1: {first_line(exc)}") from None
    return fn, trackable, what, last_op


def _keras_model(path: Path):
    """The Keras model in the file, by Keras 3 or tf_keras (whichever reads it)."""
    import h5py

    if path.suffix.lower() in (".h5", ".hdf5"):
        try:
            with h5py.File(path, "r") as f:
                if "model_config" not in f.attrs:
                    raise ForeignModelError(f"{path}: an .h5 of weights only (save_weights); --from needs the whole "
                                            "model (model.save), or use --model with --weights")
        except OSError:
            raise ForeignModelError(f"{path}: not an HDF5 file (truncated or another format)") from None
    loaders = [("Keras 3", _keras3), ("tf_keras (Keras 2)", _tf_keras)]
    if path.suffix.lower() != ".keras":
        loaders.reverse()
    errors = []
    for label, load in loaders:
        try:
            return load(path), f"a Keras model read by {label}"
        except ForeignModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - each reader's own first line is reported
            errors.append(f"{label}: {first_line(exc)}")
    raise ForeignModelError(f"{path}: not a Keras model either reader can load ({errors[0]})")


def _keras3(path: Path):
    import keras

    if not str(keras.__version__).startswith("3"):
        raise RuntimeError(f"Keras 3 not installed (keras {keras.__version__})")
    return keras.saving.load_model(str(path), compile=False, safe_mode=True)


def _tf_keras(path: Path):
    from exporter.keras import keras

    return keras.models.load_model(str(path), compile=False)


def _mask_output(keys: list, shapes: list, path: Path):
    """The 4-D output of the largest spatial size; one line when none is 4-D (a classifier)."""
    four = [(k, s) for k, s in zip(keys, shapes) if len(s) == 4]
    if not four:
        s = list(shapes[0])
        raise ForeignModelError(f"{path.name}: output is {len(s)}-D {[d if d is not None else 1 for d in s]}: not a "
                                "segmentation model (expected [1, H, W, classes])")
    return max(four, key=lambda ks: (ks[1][1] or 0) * (ks[1][2] or 0))[0]


def _last_activation(model, output) -> str | None:
    """softmax / sigmoid when the output's last layer applies one."""
    layer = output._keras_history[0] if hasattr(output, "_keras_history") else model.layers[-1]
    name = layer.__class__.__name__.lower()
    if name in ("softmax", "sigmoid"):
        return name
    act = getattr(layer, "activation", None)
    act_name = getattr(act, "__name__", None) or (act if isinstance(act, str) else None)
    return act_name.lower() if act_name else name


def _last_op_of_graph(fn, key) -> str | None:
    """The op that produces a SavedModel signature's output, past Identity ops."""
    graph = fn.graph
    tensor = fn.structured_outputs[key]
    op = graph.get_operation_by_name(tensor.op.name) if hasattr(tensor, "op") else None
    for _ in range(8):
        if op is None or op.type not in ("Identity", "IdentityN", "StatefulPartitionedCall", "PartitionedCall"):
            break
        if op.type in ("StatefulPartitionedCall", "PartitionedCall"):
            return None  # the body is a function: read as logits unless --output says otherwise
        op = op.inputs[0].op if op.inputs else None
    return op.type.lower() if op is not None else None
