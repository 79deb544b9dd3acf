"""The stages of `convert`, in the order exporter.pipeline runs them.

prepare (data, float model, calibration samples) -> export (TFLite per format-table row, QAT,
ONNX) -> layer_errors (per-layer int8 error, --keep-float) -> measure (held-out accuracy) -> ship
(which int8 file is MODEL_int8.tflite) -> measure (host latency, ARM cost) -> assemble (report,
checks, recommended files). Each stage takes the `Run` and records, and returns new records
(exporter.artifacts.Artifact) or its own section of the report; none reaches back.
"""
