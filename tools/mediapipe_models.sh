#!/usr/bin/env bash
# `make mediapipe-models`: MediaPipe's float selfie segmenter (selfie_segmentation.tflite and its
# landscape twin), the real third-party model `convert --from` is tested and documented on. They
# ship inside the mediapipe 0.10.21 wheel (later wheels, like the 1.2.3 in .venv-mediapipe, no
# longer carry them): the pinned wheel is downloaded once (checked against its sha256), the two
# files extracted to $SEGEXPORT_MEDIAPIPE_MODELS (default .cache/mediapipe-models), the wheel
# deleted. Idempotent: a second run only checks the files. Nothing downloads at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${SEGEXPORT_MEDIAPIPE_MODELS:-.cache/mediapipe-models}"
WHEEL=mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
SHA256=05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3
PIP="${PIP:-.venv/bin/python -m pip}"
if [[ -s "$DEST/selfie_segmentation.tflite" && -s "$DEST/selfie_segmentation_landscape.tflite" ]]; then
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "mediapipe-models: downloading $WHEEL (its selfie segmenters only are kept)"
# The .tflite files are the same in every platform's wheel: the x86_64 one is named on any host.
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 mediapipe==0.10.21 -d "$work"
echo "$SHA256  $work/$WHEEL" | sha256sum --check --quiet
mkdir -p "$DEST"
python3 - "$work/$WHEEL" "$DEST" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, dest = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as zf:
    for name in ("selfie_segmentation.tflite", "selfie_segmentation_landscape.tflite"):
        (dest / name).write_bytes(zf.read(f"mediapipe/modules/selfie_segmentation/{name}"))
PY
echo "mediapipe-models: wrote $DEST/selfie_segmentation.tflite, $DEST/selfie_segmentation_landscape.tflite"
