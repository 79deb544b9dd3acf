"""Reading and writing a .tflite file as LiteRT's flatbuffer object tree, for the graph rewrites
(edges.py, hybrid.py, ranges.py, tflite.py): one place that knows the schema module and the
file identifier."""

from __future__ import annotations


def schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read_model(model_content: bytes):
    """The file as a mutable `ModelT`."""
    fb = schema()
    return fb.ModelT.InitFromObj(fb.Model.GetRootAs(bytearray(model_content), 0))


def write_model(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def op_name(model, op) -> str:
    """An operator's builtin name (e.g. "QUANTIZE")."""
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    return names.get(value, str(value))
