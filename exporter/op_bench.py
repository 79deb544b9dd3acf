"""Does int8 pay off on this CPU? float32 vs int8 LiteRT latency of the ops our models are made of.

Whether a full-integer file runs faster than float32 depends less on the model than on the CPU's
int8 kernels: XNNPACK's int8 GEMMs gain on ARM (dot-product instructions) and on x86 with
AVX-VNNI, and may not on plain AVX2/FMA, where its float32 kernels are as fast. Each row here is
a tiny model, pixels -> a 3x3 stem conv to C channels -> the same op ten times, converted by the
toolchain's own float32 and int8 recipes and timed in one alternating run (exporter.bench), so
the ratio says what int8 gains per op type on the machine it runs on. The stem is in both files
and dilutes every ratio toward 1.
"""

from __future__ import annotations

import dataclasses
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError

REPEATS = 10


@dataclasses.dataclass(frozen=True)
class OpBenchConfig:
    """What the converter's signature needs: a name and the input size (batch 1, RGB)."""

    name: str
    input_size: tuple[int, int]


def _op(kind: str, channels: int):
    """One instance of `kind` as a function of a Keras tensor (fresh weights each call)."""
    from architectures.layers import HardSigmoid, HardSwish
    from exporter.keras import keras

    L = keras.layers

    def squeeze_excite(x):
        s = L.GlobalAveragePooling2D(keepdims=True)(x)
        s = L.Conv2D(max(8, channels // 4), 1, activation="relu")(s)
        s = HardSigmoid()(L.Conv2D(channels, 1)(s))
        return L.Multiply()([x, s])

    ops = {
        "conv3x3": lambda x: L.Conv2D(channels, 3, padding="same", activation="relu")(x),
        "conv1x1": lambda x: L.Conv2D(channels, 1, activation="relu")(x),
        "depthwise3x3": lambda x: L.DepthwiseConv2D(3, padding="same", activation="relu")(x),
        "depthwise5x5": lambda x: L.DepthwiseConv2D(5, padding="same", activation="relu")(x),
        "hard_swish": lambda x: HardSwish()(x),
        "squeeze_excite": squeeze_excite,
        "add": lambda x: L.Add()([x, x]),
    }
    return ops[kind]


OPS = ("conv3x3", "conv1x1", "depthwise3x3", "depthwise5x5", "hard_swish", "squeeze_excite", "add")


def check_ops(kinds) -> None:
    unknown = [k for k in kinds if k not in OPS]
    if unknown:
        raise ExporterError(f"unknown op {unknown[0]!r}; choose from {', '.join(OPS)}")


def op_model(kind: str, size: int, channels: int):
    from exporter.keras import keras

    config = OpBenchConfig(name=f"op_{kind}", input_size=(size, size))
    inputs = keras.Input((size, size, 3), batch_size=1, name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(inputs)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="stem")(x)
    for _ in range(REPEATS):
        x = _op(kind, channels)(x)
    return keras.Model(inputs, x, name=config.name), config


def run(kinds=OPS, size: int = 32, channels: int = 96, threads: int = 1, blocks: int = 6,
        calibration: int = 8, seed: int = 0, progress=None) -> list[dict]:
    """One row per op kind: float32 and int8 medians (ms) and their ratio (> 1: int8 faster)."""
    from exporter.bench import benchmark
    from exporter.convert.tflite import to_tflite

    check_ops(kinds)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(calibration, size, size, 3)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            model, config = op_model(kind, size, channels)
            paths = {}
            for precision in ("float32", "int8"):
                paths[precision] = Path(tmp) / f"{kind}_{precision}.tflite"
                with warnings.catch_warnings():  # the converter warns on every int8 model's float input
                    warnings.simplefilter("ignore", UserWarning)
                    paths[precision].write_bytes(to_tflite(model, config, precision, images))
            timed = benchmark(paths, images[:1], threads=(threads,), blocks=blocks)
            f32, i8 = timed["float32"][threads]["median"], timed["int8"][threads]["median"]
            rows.append({"op": kind, "float32_ms": f32, "int8_ms": i8, "int8_speedup": round(f32 / i8, 3)})
            if progress:
                progress(rows[-1])
    return rows


def cpu_features() -> str:
    """The CPU's SIMD features that decide XNNPACK's int8 kernels (Linux; else the platform)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
        return " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)
    except OSError:
        return platform.processor() or platform.machine()
