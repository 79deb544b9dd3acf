"""Export image-segmentation models to small, fast, validated TFLite and ONNX files."""

__version__ = "0.1.0"
