"""The figures in docs/import-deeplab.md: how close the imported DeepLab is to TF1 research/deeplab,
and what each correction of the import is worth.

    .venv/bin/python tools/deeplab_import_measure.py [--images 4] [--seed 0]

Writes a TF1-style `model.ckpt-N` with the seed's variables (tests/deeplab_tf1_reference.py,
random weights, 2 classes), imports it, and compares our Keras graph with TF1's forward pass
(re-derived from research/deeplab's source) on random 0..255 images: the import as it is, then
with one correction undone at a time, and at 513x513, an input other than the training crop
where TF1's image-pooling window is no longer global.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _compare(ours, theirs) -> str:
    po, pt = _softmax(ours.astype(np.float64)), _softmax(theirs.astype(np.float64))
    return (f"max |dlogit| {np.abs(ours - theirs).max():.2e} (logits up to {np.abs(theirs).max():.1f}), "
            f"max |dprob| {np.abs(po - pt).max():.2e}, argmax agreement {(po.argmax(-1) == pt.argmax(-1)).mean():.4%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import deeplab_tf1_reference as tf1

    from architectures import build, resolve_config
    from architectures.importers import deeplab_tf1

    folder = Path(tempfile.mkdtemp())
    prefix = Path(tf1.write_checkpoint(folder, 2, seed=args.seed))
    rng = np.random.default_rng(args.seed)

    def ours(size, undo=None, **options):
        config = resolve_config("deeplab", input_size=size, **{**deeplab_tf1.config_overrides(prefix), **options})
        model = build(config)
        deeplab_tf1.load(model, prefix, config)
        if undo == "epsilon":  # put TF1's aspp0 BatchNorm weights back unrefitted
            import tensorflow as tf

            reader = tf.train.load_checkpoint(str(prefix))
            model.get_layer("aspp0_bn").set_weights(
                [reader.get_tensor(f"aspp0/BatchNorm/{leaf}") for leaf in tf1.BN_LEAVES])
        return model

    images = rng.integers(0, 256, size=(args.images, 257, 257, 3)).astype(np.float32)
    reference = tf1.tf1_logits(str(prefix), images)
    cases = [
        ("import as is (257x257)", ours(257)),
        ("hard sigmoid 1/6 instead of TF1's 0.16667", ours(257, hard_sigmoid="exact")),
        ("aspp0 BatchNorm epsilon not refitted", ours(257, undo="epsilon")),
        ("half-pixel resizes instead of align-corners", ours(257, align_corners=False)),
    ]
    for name, model in cases:
        print(f"{name}: {_compare(model(images, training=False).numpy(), reference)}")

    big = rng.integers(0, 256, size=(max(1, args.images // 2), 513, 513, 3)).astype(np.float32)
    print(f"513x513, TF1's 9x9/stride (4,5) image pooling vs our global pool: "
          f"{_compare(ours(513)(big, training=False).numpy(), tf1.tf1_logits(str(prefix), big, crop=(513, 513)))}")


if __name__ == "__main__":
    main()
