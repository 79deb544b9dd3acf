"""A float .tflite for `convert --from` (a file someone shipped, e.g. MediaPipe's selfie segmenter).

Engine: AI Edge Quantizer (`litert-quantizer`, exporter.convert.aeq), after the lossless fixes it
needs (tflite_float: float16 constants folded to float32, MediaPipe custom ops as their builtins,
a signature). Reference: LiteRT on the original file as it is (its Python build runs MediaPipe's
Convolution2DTransposeBias); where LiteRT cannot run it, the fixed float file (each fix is exact).
The contract (normalisation, labels, activation) comes from the file's MediaPipe metadata when
it has some, and every file written keeps that metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from architectures.importers.foreign import (Contract, ForeignModel, check_head, class_names, normalisation,
                                             output_kind)
from architectures.importers.foreign.errors import ForeignModelError


def open_source(path: Path, kind: str, work: Path, *, name: str, input_norm, labels, output) -> ForeignModel:
    from architectures.importers.foreign.tflite_float import fix_float_tflite
    from exporter.errors import ExporterError
    from exporter.modelfile import input_size, open_model, segmentation_head
    from exporter.progress import say

    original = path.read_bytes()
    fixed, fixes = fix_float_tflite(original, path.name)
    float_path = Path(work) / f"{name}_fixed.tflite"
    float_path.write_bytes(fixed)
    try:
        mf = open_model(float_path)
        h, w, c = input_size(mf)
        head = segmentation_head(mf)
    except ExporterError as exc:
        raise ForeignModelError(str(exc).replace(float_path.name, path.name)) from None
    if c != 3:
        raise ForeignModelError(f"{path.name}: input has {c} channels; --from takes RGB image models")
    check_head(mf.outputs[head.index]["shape"], path.name)
    meta = mf.metadata if isinstance(mf.metadata, dict) else {}
    norm = meta.get("normalisation") or {}
    mean, std, norm_from = normalisation(input_norm, (norm["mean"], norm["std"]) if norm.get("mean") else None,
                                         path.name)
    last = "sigmoid" if head.index in mf.sigmoid_outputs else last_op_of(fixed, head.index)
    from_meta = {"SIGMOID": "logits", "SOFTMAX": "logits"}.get(meta.get("activation") or "")
    out, out_from = output_kind(output, from_meta, last, head.channels, path.name)
    names, names_from = class_names(labels, meta.get("labels"), head.channels, path.name)
    contract = Contract(height=h, width=w, channels_first=False, mean=mean, std=std, norm_source=norm_from,
                        head=head.index, channels=head.channels, output=out, output_source=out_from,
                        labels=names, labels_source=names_from)
    say(f"{path.name}: float TFLite; input {contract.describe_input()}, output {head.to_json()['size']} x "
        f"{head.channels} {out} ({out_from})" + "".join(f"; {f}" for f in fixes))

    def quantise(precision: str, calibration: np.ndarray | None) -> bytes:
        from exporter.convert.aeq import quantise_tflite

        return quantise_tflite(fixed, precision, calibration)

    runs_as_is = _runs(original)

    def reference():
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=original if runs_as_is else fixed, num_threads=2)
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[head.index]

        def predict(pixels):
            interp.set_tensor(inp["index"], contract.inputs(pixels).astype(inp["dtype"]))
            interp.invoke()
            return interp.get_tensor(outp["index"]).astype(np.float32)
        return predict

    what = ("LiteRT on the original file" if runs_as_is else
            "LiteRT on the original's graph with the lossless fixes only (" + "; ".join(fixes) + "): LiteRT "
            "cannot run the original as it is")
    return ForeignModel(path=path, kind=kind, name=name, engine=_engine(), reference_description=what,
                        float32=fixed, contract=contract, fixes=fixes,
                        metadata_source=original if mf.metadata else None, _quantise=quantise, _reference=reference)


def _runs(blob: bytes) -> bool:
    """Whether LiteRT's interpreter runs the file as it is (its Python build registers MediaPipe's
    Convolution2DTransposeBias, so MediaPipe's own files do); else the reference is the fixed file."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_content=blob, num_threads=1)
        interp.allocate_tensors()
        return True
    except Exception:  # noqa: BLE001 - an op it lacks: the fixed file is the reference
        return False


def _engine() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"AI Edge Quantizer (litert-quantizer {version('litert-quantizer')})"
    except PackageNotFoundError:
        return "AI Edge Quantizer (litert-quantizer, not installed)"


def last_op_of(blob: bytes, index: int) -> str | None:
    """The op producing output `index` of a TFLite file, past reshapes and (de)quantisation, lower case."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_content=blob)
        ops = interp._get_ops_details()  # noqa: SLF001 - the interpreter's only op listing
        target = interp.get_output_details()[index]["index"]
    except Exception:  # noqa: BLE001 - only a hint for --output
        return None
    producer = {int(t): op for op in ops for t in op["outputs"]}
    for _ in range(8):
        op = producer.get(target)
        if op is None:
            return None
        if op["op_name"] not in ("RESHAPE", "DEQUANTIZE", "QUANTIZE"):
            return op["op_name"].lower()
        target = int(op["inputs"][0])
    return None
