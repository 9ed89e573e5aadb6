# Two commands matter: `make demo` and `make test`. Both create .venv on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: this version is a CPU build; a looser range pulls several GB of CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	# the test suite exercises every part: export, training envs, calibration, Ray, and the dev tools
	$(BIN)/pip install --quiet -e '.[export,train,calib,ray,convert,dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy edge_agent firmware_bridge sitl calib export bench experiments

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m examples.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
