"""What fp16 does to a model's float graph, measured on the host (parent side: TensorFlow).

A phone's GPU runs LiteRT's GPU kernels at fp16 precision by default (GpuOptions(enforce_f32=False)):
weights, activations and most arithmetic in half precision. The software Vulkan device here
(SwiftShader) offers no shader-f16, so the GPU runs here compute in fp32 and cannot show it. This
module simulates it: the batch-1 Keras graph cloned with every layer's dtype policy set to float16
(tf_keras casts each layer's inputs and weights to fp16 and computes in fp16), run on the held-out
samples, and compared with the fp32 graph. It is a simulation on TensorFlow's CPU kernels, not the GPU
kernels: ML Drift may keep some accumulations in fp32, fuse ops differently, or round elsewhere, so
read it as "how sensitive this model is to fp16", not as a phone's exact output.
"""

from __future__ import annotations

import numpy as np

NOTE = ("simulation on the host: the float Keras graph cloned with every layer computing in float16 "
        "(tf_keras dtype policy 'float16'), against the float32 graph on the same held-out samples; not the "
        "GPU's kernels (which may accumulate some ops in fp32), so a measure of the model's fp16 sensitivity")


def fp16_clone(model):
    """The same graph and weights with every layer computing in float16 (the input stays float32 and
    is cast by the first layer; the output is cast back to float32 by the caller)."""
    from exporter.keras import keras

    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = "float16"
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def simulate(model, pixels: np.ndarray, reference_scores: np.ndarray | None = None) -> dict:
    """{"agreement_with_float32", "max_abs_diff", "samples", "note"} or {"error": reason}."""
    try:
        twin = fp16_clone(model)
        ref = reference_scores if reference_scores is not None else np.concatenate(
            [np.asarray(model(pixels[i : i + 1], training=False), np.float32) for i in range(len(pixels))])
        half = np.concatenate([np.asarray(twin(pixels[i : i + 1], training=False), np.float32)
                               for i in range(len(pixels))])
    except Exception as error:  # a layer without a float16 kernel or config: say so, measure nothing
        return {"error": " ".join(str(error).split())[:300] or type(error).__name__}
    ref = ref[: len(half)]
    if not np.isfinite(half).all():
        return {"agreement_with_float32": None, "max_abs_diff": None, "samples": int(len(half)),
                "overflow": True, "note": NOTE + "; float16 overflowed (inf/nan) in this model"}
    from exporter.parity import class_map

    return {"agreement_with_float32": round(float((class_map(half) == class_map(ref)).mean()), 6),
            "max_abs_diff": float(f"{np.abs(half - ref).max():.6g}"), "samples": int(len(half)), "overflow": False,
            "note": NOTE}
