"""Runs in .venv-hf-tf (transformers 4.x, which still has TensorFlow models), never in the product.

    python hf_tf_reference.py OUT CONFIG_JSON IMAGES_NPY

Builds Hugging Face's `TFSegformerForSemanticSegmentation` from CONFIG_JSON (a tiny
SegformerConfig; weights seeded, BatchNorm statistics made non-trivial so they matter), saves it
the ways the seed's users do, and writes that model's own logits for IMAGES_NPY (RGB 0..255,
[N, H, W, 3]) fed as the seed's pipeline feeds it (SegformerImageProcessor: x/255, ImageNet
mean/std, NCHW):

    OUT/ckpt/Lips.ckpt.*  + OUT/ckpt/checkpoint   save_weights("Lips.ckpt"): TF checkpoint
    OUT/tf_model.h5                                save_weights("tf_model.h5"): Keras HDF5
    OUT/pretrained/{config.json,tf_model.h5}       save_pretrained
    OUT/logits.npy                                 [N, classes, H/4, W/4] (NCHW, as the model returns)
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from transformers import SegformerConfig, TFSegformerForSemanticSegmentation  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def main(out: Path, config_path: Path, images_path: Path) -> None:
    tf.keras.utils.set_random_seed(0)
    config = SegformerConfig(**json.loads(config_path.read_text()))
    model = TFSegformerForSemanticSegmentation(config)
    images = np.load(images_path).astype(np.float32)
    pixel_values = ((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)
    model(pixel_values[:1])  # builds the variables
    rng = np.random.default_rng(1)
    for weight in model.weights:  # fresh BatchNorm statistics are (0, 1): make them count
        if "moving_mean" in weight.name:
            weight.assign(rng.normal(0, 0.2, weight.shape).astype(np.float32))
        elif "moving_variance" in weight.name:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ckpt").mkdir(exist_ok=True)
    model.save_weights(str(out / "ckpt" / "Lips.ckpt"))
    model.save_weights(str(out / "tf_model.h5"))
    model.save_pretrained(str(out / "pretrained"))  # config.json (with id2label) + tf_model.h5
    logits = model(pixel_values, training=False).logits.numpy()
    np.save(out / "logits.npy", logits)
    print(json.dumps({"logits": list(logits.shape), "weights": len(model.weights)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
