"""Shared test set-up: persistent compilation cache and a per-run random seed.

Every run draws fresh random inputs; the seed is printed in pytest's header and a
failing run is reproduced with ``POINTREND_TEST_SEED=<seed> make test``.
"""
import os
import pathlib
import random

import jax
import numpy as np
import pytest

_CACHE = os.environ.get(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax"),
)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE  # for the train.py/eval.py subprocesses too
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

SEED = int(os.environ.get("POINTREND_TEST_SEED", random.SystemRandom().randrange(2**31)))
os.environ["POINTREND_TEST_SEED"] = str(SEED)  # pytest-xdist's workers draw the same seed


def pytest_report_header(config):
    return f"POINTREND_TEST_SEED={SEED}"


@pytest.fixture
def np_rng(request):
    """A NumPy generator seeded from the run seed and the test's name."""
    name_hash = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid))
    return np.random.default_rng([SEED, name_hash])
