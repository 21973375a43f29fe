"""The pre-flight memory check (`train/memory.py`): XLA's memory analysis read right, and a
train step that cannot fit stopped before it runs, naming what to change."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pointrend_jax.train import memory


def _config(batch=8, crop=(64, 96)):
    config = ml_collections.ConfigDict()
    config.train = {"batch_size": batch}
    config.augment = {"crop_size": crop}
    return config


def test_step_bytes_counts_arguments_outputs_and_donations(np_rng):
    n = int(np_rng.integers(1000, 5000))
    x = jnp.asarray(np_rng.normal(size=(n,)), jnp.float32)
    plain = memory.step_bytes(jax.jit(lambda a: a * 2.0).lower(x).compile())
    assert plain["arguments"] == 4 * n and plain["outputs"] == 4 * n
    assert plain["aliased"] == 0
    assert plain["total"] == (plain["arguments"] + plain["outputs"] + plain["temporaries"])
    donated = memory.step_bytes(
        jax.jit(lambda a: a * 2.0, donate_argnums=0).lower(x).compile())
    assert donated["aliased"] == 4 * n  # the output reuses the donated argument's buffer
    assert donated["total"] == 4 * n + donated["temporaries"]


def test_device_memory_is_a_positive_share_of_the_host():
    available, what = memory.device_memory()
    assert 0 < available <= memory._host_available_bytes()
    assert "memory" in what


def test_a_step_that_does_not_fit_is_refused_naming_batch_canvas_and_options(monkeypatch,
                                                                             np_rng):
    x = jnp.asarray(np_rng.normal(size=(256, 256)), jnp.float32)
    compiled = jax.jit(lambda a: a @ a.T).lower(x).compile()
    need = memory.step_bytes(compiled)["total"]
    monkeypatch.setattr(memory, "device_memory", lambda: (need - 1, "test memory"))
    with pytest.raises(MemoryError) as error:
        memory.check_fits(compiled, _config(batch=8, crop=(64, 96)))
    message = str(error.value)
    for part in ("--config.train.batch_size=8", "--config.augment.crop_size=(64, 96)",
                 "test memory", "--config.model.backbone.remat=True", "bfloat16"):
        assert part in message, message


def test_a_step_that_fits_runs_and_prints_both_figures(monkeypatch, capsys, np_rng):
    x = jnp.asarray(np_rng.normal(size=(64, 64)), jnp.float32)
    jitted = jax.jit(lambda a: a @ a.T)
    monkeypatch.setattr(memory, "device_memory", lambda: (2**40, "test memory"))
    compiled = memory.compile_checked(jitted, (jax.ShapeDtypeStruct(x.shape, x.dtype),), _config())
    np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(x) @ np.asarray(x).T,
                               rtol=1e-5, atol=1e-4)
    assert "train step memory:" in capsys.readouterr().out
