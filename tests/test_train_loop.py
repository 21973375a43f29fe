"""The training loop's bookkeeping: the learning rate it logs is the one the optimizer
applied (also after skipped non-finite steps), and a resumed run continues the data stream
of its checkpoint exactly or stops naming the change."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pointrend_jax.config import load_config
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train import state as state_lib
from pointrend_jax.train.loop import check_data_position, data_position, train
from pointrend_jax.train.step import jit_train_step, make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quadratic_loss(variables, batch, rngs):
    """0.5 * sum((w - target)^2), times `scale` (inf makes the step non-finite)."""
    del rngs
    w = variables["params"]["w"]
    total = 0.5 * jnp.sum((w - batch["target"][0]) ** 2) * batch["scale"][0]
    return total, {"quadratic": total}, variables["batch_stats"]


def test_logged_learning_rate_is_the_applied_one_after_skipped_steps(np_rng):
    opt_cfg = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
        weight_decay_bias=0.0, schedule="poly", poly_power=1.0, decay_steps=(), decay_factor=0.1, warmup_steps=0,
        warmup_factor=1.0, clip_grad_norm=None))
    num_steps = 10
    tx, schedule = optimizer_lib.make_optimizer(opt_cfg, num_steps)
    mesh = state_lib.make_mesh(ml_collections.ConfigDict(dict(fsdp=1, fsdp_min_size=1)))
    w0 = np_rng.normal(size=(2, 3))
    target = np_rng.normal(size=(2, 3))
    params = {"w": jnp.asarray(w0, jnp.float32)}
    state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                                 opt_state=tx.init(params))
    state = jax.device_put(state, state_lib.replicated(mesh))
    step = jit_train_step(make_train_step(_quadratic_loss, tx, schedule), state, mesh)

    w, applied = w0.astype(np.float64), 0
    n = jax.device_count()
    for i, scale in enumerate([1.0, np.inf, np.inf, 1.0, 1.0]):
        batch = state_lib.global_batch(
            {"target": np.repeat(target[None], n, 0).astype(np.float32),
             "scale": np.full((n,), scale, np.float32)}, mesh)
        state, m = step(state, batch, jax.random.key(0))
        # NumPy oracle: plain SGD at the poly rate of the updates applied so far.
        lr = 0.1 * (1.0 - applied / num_steps)
        assert float(m["learning_rate"]) == pytest.approx(lr, rel=1e-6), f"step {i + 1}"
        assert float(m["nonfinite"]) == float(not np.isfinite(scale))
        if np.isfinite(scale):
            w = w - lr * (w - target)
            applied += 1
        np.testing.assert_allclose(np.asarray(state.params["w"]), w, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 5 and applied == 3


def _config(**train):
    c = ml_collections.ConfigDict({"seed": 3, "train": {"batch_size": 8, **train}})
    return c


def test_data_position_check_names_the_changed_key():
    saved = data_position(6, _config())
    check_data_position(saved, 6, _config(), "ckpt")  # the same stream: no error
    check_data_position(None, 6, _config(), "ckpt")  # checkpoints without a position
    with pytest.raises(ValueError, match=r"--config.train.batch_size=8.*--config.train.batch_size=4"):
        check_data_position(saved, 6, _config(batch_size=4), "ckpt")
    other_seed = _config()
    other_seed.seed = 4
    with pytest.raises(ValueError, match=r"--config.seed=3.*--config.seed=4"):
        check_data_position(saved, 6, other_seed, "ckpt")
    with pytest.raises(ValueError, match="batches consumed"):
        check_data_position(data_position(5, _config()), 6, _config(), "ckpt")


@pytest.mark.slow
def test_resume_with_another_batch_size_stops_before_training(tmp_path):
    config = load_config(os.path.join(ROOT, "configs", "synthetic_binary.py:runlocal"))
    config.data.data_dir = str(tmp_path / "tfds")
    config.train.num_steps = 2
    workdir = tmp_path / "run"
    train(config, str(workdir))
    config.train.num_steps = 4
    config.train.batch_size = 8
    with pytest.raises(ValueError, match="--config.train.batch_size=4, this run has "
                                         "--config.train.batch_size=8"):
        train(config, str(workdir))
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2]  # nothing trained, nothing saved
