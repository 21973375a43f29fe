# Two commands for a new user: `make train` and `make test` (both set up .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/synthetic_multiclass
# pytest processes (pytest-xdist; each test file runs whole in one of them): XLA compiles on
# one core, so two keep both cores of a 2-core machine busy.
TEST_WORKERS ?= 2
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
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

train: setup
	$(PY) train.py --config configs/synthetic_multiclass.py --workdir $(WORKDIR)
	$(PY) eval.py --config configs/synthetic_multiclass.py --workdir $(WORKDIR)

bench: setup
	$(PY) benchmarks/ops.py

clean:
	rm -rf $(VENV) .cache runs
