# Two commands on a fresh machine: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

# Reinstalls only when the project's declared dependencies change.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/exporter convert --model unet --int8 --input-size 128 --out $(OUT)

test: setup
	$(BIN)/python -m pytest -q --timeout 900

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Regenerates the committed reports/ for the default models (artifacts stay in build/bench).
bench: setup
	$(BIN)/python -m exporter.bench_reports --out build/bench --reports reports

lint: setup
	$(BIN)/python -m pyflakes exporter architectures calibration tests 2>/dev/null || true

clean:
	rm -rf build $(OUT) .pytest_cache
