# Two commands for a new user: `make train` and `make test` (both set up .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/synthetic_multiclass
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax

.PHONY: setup test train bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

train: setup
	$(PY) train.py --config configs/synthetic_multiclass.py --workdir $(WORKDIR)
	$(PY) eval.py --config configs/synthetic_multiclass.py --workdir $(WORKDIR)

bench: setup
	$(PY) benchmarks/ops.py

clean:
	rm -rf $(VENV) .cache runs
