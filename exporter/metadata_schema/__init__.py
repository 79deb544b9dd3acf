"""Generated Python for the TFLite model-metadata flatbuffer schemas. Do not edit by hand.

No PyPI package that installs beside TensorFlow 2.21 ships these: tflite-support pins
protobuf<4 and mediapipe pins absl-py~=2.3 (tfmot pins absl-py~=1.2). So the two modules here
are flatc's output for the schema files that the mediapipe wheel (1.2.3) ships, generated with
Debian 12's flatc 2.0.8 (apt package flatbuffers-compiler) from the repository root:

    flatc --python --gen-object-api --gen-onefile -o exporter/metadata_schema \
      .venv-mediapipe/lib/python3.11/site-packages/mediapipe/tasks/metadata/metadata_schema.fbs \
      .venv-mediapipe/lib/python3.11/site-packages/mediapipe/tasks/metadata/image_segmenter_metadata_schema.fbs

(flatc also writes an empty `__init__.py`; this docstring replaces it.) Schema sha256:
metadata_schema.fbs 54f0cc99a87d56045bc32ad177bf5d02a29836416493cab3e98a06057b60797b
(semantic version 1.5.0, file identifier "M001"; identical tables to tflite-support 0.4.4's),
image_segmenter_metadata_schema.fbs 0f2c570962ed7daef6adc50c1a0b757b22eb14ab1b7f6777d0cd3ed219d1ec84
(file identifier "V001"). The modules import only the `flatbuffers` runtime.
"""
