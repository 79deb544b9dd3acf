"""ARM cost of .tflite files: LiteRT's aarch64 kernels under QEMU user-mode emulation (exporter.arm.runner)."""
