# Two commands on a fresh machine: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs
# Every package of every venv at the versions CI last passed with (`make lock` regenerates them).
LOCK := locks/venv.txt
# onnx2tf and what it imports, installed after LOCK with --no-deps (its metadata's pins conflict; see the file).
NODEPS_LOCK := locks/venv-nodeps.txt
MP_LOCK := locks/venv-mediapipe.txt

MP_VENV := .venv-mediapipe
MP_STAMP := $(MP_VENV)/.installed
# Test-only: transformers 4.x with its TensorFlow models (dropped in transformers 5), which writes
# the Hugging Face TF SegFormer checkpoints and reference logits tests/test_import_segformer_tf.py
# imports. The product never imports it; without it those tests skip, saying why.
HF_TF_LOCK := locks/venv-hf-tf.txt
HF_TF_VENV := .venv-hf-tf
HF_TF_STAMP := $(HF_TF_VENV)/.installed

.PHONY: setup mediapipe-env mediapipe-models hf-tf-env arm-env gpu-env demo test test-fast bench lint lock clean

setup: $(STAMP) $(MP_STAMP)

mediapipe-env: $(MP_STAMP)

# Installs the lock, then the project itself without touching a dependency (its build backend,
# setuptools, is in the lock too). Reinstalls only when the lock or pyproject.toml changes.
$(STAMP): pyproject.toml $(LOCK) $(NODEPS_LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -r $(NODEPS_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# MediaPipe Tasks, the real mobile client the tests load every exported .tflite with
# (tests/mediapipe_client.py), in its own environment: mediapipe pins absl-py~=2.3 and tfmot
# (in .venv) absl-py~=1.2. Reinstalls only when requirements-mediapipe.txt changes.
$(MP_STAMP): requirements-mediapipe.txt $(MP_LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(MP_VENV)/bin/python || $(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install --quiet -r $(MP_LOCK)
	touch $(MP_STAMP)

hf-tf-env: $(HF_TF_STAMP)

$(HF_TF_STAMP): requirements-hf-tf.txt $(HF_TF_LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(HF_TF_VENV)/bin/python || $(PYTHON) -m venv $(HF_TF_VENV)
	$(HF_TF_VENV)/bin/python -m pip install --quiet -r $(HF_TF_LOCK)
	touch $(HF_TF_STAMP)

# QEMU user-mode emulation of aarch64 LiteRT with an instruction-counting plugin (exporter/arm/):
# needs root on Debian/Ubuntu the first time; everything but the apt packages goes under
# $SEGEXPORT_ARM_CACHE (default .cache/arm). Idempotent: a second run only checks its stamps.
arm-env: setup
	@HOST_PYTHON=$(BIN)/python bash exporter/arm/setup_env.sh

# LiteRT's GPU accelerator on a software Vulkan device (exporter/gpu/): the Vulkan loader (apt, root the
# first time where libvulkan1 is missing) and SwiftShader's ICD extracted from Debian's chromium-common
# under $SEGEXPORT_GPU_CACHE (default .cache/gpu). Idempotent: a second run only checks its stamps.
gpu-env:
	@bash exporter/gpu/setup_env.sh

# MediaPipe's float selfie segmenter from the pinned mediapipe 0.10.21 wheel (tools/mediapipe_models.sh):
# the real third-party model tests/test_convert_from.py converts; under .cache/mediapipe-models.
mediapipe-models: setup
	@bash tools/mediapipe_models.sh

# arm-env is attempted as in `make test`, so the summary ends with the Cortex-A76 ratio; where it
# cannot be built, the report says why in one line and the demo goes on without ARM figures.
demo: setup
	-@$(MAKE) --no-print-directory arm-env
	-@$(MAKE) --no-print-directory gpu-env
	$(BIN)/exporter convert --model unet --int8 --input-size 128 --epochs 5 --out $(OUT)

# arm-env, gpu-env, hf-tf-env and mediapipe-models are attempted, not required: where one cannot be
# built, the tests that need it skip, saying why.
test: setup
	-@$(MAKE) --no-print-directory arm-env
	-@$(MAKE) --no-print-directory gpu-env
	-@$(MAKE) --no-print-directory hf-tf-env
	-@$(MAKE) --no-print-directory mediapipe-models
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --timeout 900 --durations 15

# The edit-test loop: everything but the tests marked slow (over ~10 s each on two cores), under 3 minutes.
test-fast: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --timeout 300 -m "not slow"

# Regenerates the committed reports/ for the default models (artifacts stay in build/bench).
bench: setup
	$(BIN)/python -m exporter.bench_reports --out build/bench --reports reports

# Resolves pyproject.toml's ranges and requirements-mediapipe.txt afresh and rewrites locks/ (then
# `make setup test`, and commit locks/ when the tests pass).
lock:
	PYTHON=$(PYTHON) bash tools/lock.sh

lint: setup
	$(BIN)/python -m ruff check exporter architectures calibration tests

clean:
	rm -rf build $(OUT) .pytest_cache
