"""Shared by the seed-import tests: run the user's own code (tests/seed_user_code.py) in its own
process, convert what it saved through the real CLI, and compare with what the user's model computes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import EXPORTER

USER_CODE = Path(__file__).with_name("seed_user_code.py")
CHEAP = ["--no-onnx", "--no-bench", "--no-arm", "--layer-errors", "0", "--train-samples", "8", "--val-samples", "4"]


def scenes(n: int, size: int, seed: int):
    from calibration.synthetic import render_scene

    xs, ys = zip(*(render_scene(i, (size, size), 3, seed=seed) for i in range(n)))
    return np.stack(xs).astype(np.uint8), np.stack(ys).astype(np.uint8)


def train_user_model(folder: Path, kind: str, size: int, train: int, epochs: int, *extra: str,
                     saved: str = "saved") -> Path:
    """The user's model trained and saved in every form by the user's own code into FOLDER/SAVED."""
    tx, ty = scenes(train, size, seed=1)
    ex, _ = scenes(4, size, seed=2)
    np.savez(folder / "images.npz", train_x=tx, train_y=ty, eval_x=ex)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # the script sets its own
    proc = subprocess.run([sys.executable, str(USER_CODE), kind, str(folder / saved), "--classes", "3",
                           "--size", str(size), "--epochs", str(epochs), "--images", str(folder / "images.npz"),
                           *extra], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def pretrained_encoder(folder: Path, size: int) -> Path:
    """A pretrained MobileNetV2 (no top) weights file, the stand-in for the tutorial's
    weights="imagenet" (nothing is downloaded): our own UNet trained briefly on synthetic scenes,
    its encoder layers copied by name into keras.applications' MobileNetV2 and saved as .h5."""
    from architectures import build, resolve_config
    from exporter.keras import keras

    proc = subprocess.run([EXPORTER, "--quiet", "train", "--model", "unet", "--input-size", str(size), "--epochs", "4",
                           "--train-samples", "256", "--val-samples", "16", "--out", str(folder / "encoder_run")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = build(resolve_config("unet", input_size=size, num_classes=3))
    ours.load_weights(str(folder / "encoder_run" / "unet" / "training" / "weights.h5"))
    mobilenet = keras.applications.MobileNetV2(input_shape=[size, size, 3], include_top=False, weights=None)
    names = {layer.name for layer in ours.layers}
    for layer in mobilenet.layers:
        if layer.weights and layer.name in names:
            layer.set_weights(ours.get_layer(layer.name).get_weights())
    mobilenet.save_weights(str(folder / "encoder.h5"))
    return folder / "encoder.h5"


def convert(weights: Path, model: str, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXPORTER, "--quiet", "convert", "--model", model, "--weights", str(weights),
                           "--out", str(out), *options], capture_output=True, text=True, timeout=900)


def assert_computes_the_user_model(tflite: Path, user: Path, logits: bool, saved: str = "saved") -> tuple[float, float]:
    """The file on LiteRT against the user's model fed as it was trained (x / 255): max |Δprob| and
    argmax agreement on the user's evaluation images."""
    from ai_edge_litert.interpreter import Interpreter

    images = np.load(user / "images.npz")["eval_x"].astype(np.float32)
    reference = np.load(user / saved / "reference.npz")["probs"]
    interp = Interpreter(model_path=str(tflite))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for image in images:
        interp.set_tensor(inp["index"], image[None])  # 0..255: the normalisation is inside the file
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"])[0])
    probs = np.stack(outputs)
    if logits:
        probs = np.exp(probs - probs.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
    worst, agreement = float(np.abs(probs - reference).max()), float((probs.argmax(-1) == reference.argmax(-1)).mean())
    assert worst <= 1e-4 and agreement >= 0.999, (worst, agreement)
    return worst, agreement


def report(out: Path, model: str) -> dict:
    return json.loads((out / model / "report.json").read_text())
