"""Weight decay as detectron2's get_default_optimizer_params applies it: `weight_decay` on
kernels, `weight_decay_bias` on conv/dense biases, nothing on norm parameters; checked on the
update of a zero gradient, where the decay is all there is."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pointrend_jax import config as config_lib
from pointrend_jax.train import optimizer as optimizer_lib


def _params(rng):
    draw = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    return {"net": {"backbone": {"conv1": {"kernel": draw(3, 3, 3, 4)},
                                 "layer1_0": {"conv1": {"kernel": draw(1, 1, 4, 4)}}},
                    "fpn": {"fpn_lateral2": {"kernel": draw(1, 1, 4, 4), "bias": draw(4)}},
                    "sem_seg_head": {"norm": {"scale": draw(4), "bias": draw(4)}}},
            "point_head": {"fc1": {"kernel": draw(6, 4), "bias": draw(4)}}}


@pytest.mark.parametrize("name", ["sgd", "adamw"])
@pytest.mark.parametrize("freeze_at", [0, 1])
def test_decay_reaches_kernels_and_conv_biases_never_norms(np_rng, name, freeze_at):
    opt = config_lib.base_config().optimizer
    opt.update(name=name, learning_rate=float(np_rng.uniform(0.01, 0.1)), momentum=0.0,
               schedule="constant", warmup_steps=0, weight_decay=1e-2, weight_decay_bias=3e-2)
    params = _params(np_rng)
    tx, _ = optimizer_lib.make_optimizer(opt, 10, freeze_at=freeze_at)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    lr = opt.learning_rate

    def check(path, want_rate):
        got, p = updates, params
        for key in path:
            got, p = got[key], p[key]
        np.testing.assert_allclose(np.asarray(got), -lr * want_rate * np.asarray(p), rtol=1e-5,
                                   err_msg="/".join(path))

    check(("net", "backbone", "conv1", "kernel"), 0.0 if freeze_at else 1e-2)
    check(("net", "backbone", "layer1_0", "conv1", "kernel"), 1e-2)
    check(("net", "fpn", "fpn_lateral2", "kernel"), 1e-2)
    check(("net", "fpn", "fpn_lateral2", "bias"), 3e-2)
    check(("point_head", "fc1", "bias"), 3e-2)
    check(("net", "sem_seg_head", "norm", "scale"), 0.0)
    check(("net", "sem_seg_head", "norm", "bias"), 0.0)


def test_negative_weight_decay_is_refused_naming_the_key():
    c = config_lib.base_config()
    c.optimizer.weight_decay_bias = -1e-4
    with pytest.raises(ValueError, match=r"--config.optimizer.weight_decay_bias must be >= 0"):
        config_lib.validate_shared(c)
