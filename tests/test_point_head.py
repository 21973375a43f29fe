"""PointHead against a torch re-statement of detectron2's StandardPointHead."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pointrend_jax import PointHead
from torch_reference import TorchPointHead


@pytest.mark.parametrize("num_fc, each_layer, activation", [(3, True, "relu"), (2, False, "elu"), (0, True, "relu")])
def test_point_head_equals_detectron2_point_head(np_rng, num_fc, each_layer, activation):
    n, p, c, k, fc_dim = 2, 33, 7, 5, 16
    head = PointHead(k, num_fc=num_fc, fc_dim=fc_dim, coarse_pred_each_layer=each_layer,
                     activation=activation)
    fine = np_rng.normal(size=(n, p, c)).astype(np.float32)
    coarse = np_rng.normal(size=(n, p, k)).astype(np.float32)
    params = head.init(jax.random.key(int(np_rng.integers(2**31))), fine, coarse)["params"]
    # Random biases and a larger predictor so the comparison is not dominated by zeros.
    params = jax.tree.map(lambda a: jnp.asarray(np_rng.normal(size=a.shape), a.dtype) * 0.3, params)
    got = head.apply({"params": params}, fine, coarse)
    chex.assert_shape(got, (n, p, k))
    ref = TorchPointHead(c, k, num_fc, fc_dim, each_layer, activation).load_flax(params)
    with torch.no_grad():
        want = ref(torch.tensor(fine, dtype=torch.float64).transpose(1, 2),
                   torch.tensor(coarse, dtype=torch.float64).transpose(1, 2)).transpose(1, 2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_point_head_initialisation_follows_detectron2():
    fc_dim = 256
    head = PointHead(19, fc_dim=fc_dim)
    params = head.init(jax.random.key(0), jnp.ones((1, 4, 256)), jnp.ones((1, 4, 19)))["params"]
    assert params["fc1"]["kernel"].shape == (256 + 19, fc_dim)
    assert params["fc2"]["kernel"].shape == (fc_dim + 19, fc_dim)
    assert params["predictor"]["kernel"].shape == (fc_dim + 19, 19)
    for name in ("fc1", "fc2", "fc3"):
        # He-normal over fan_out with ReLU gain: std = sqrt(2 / fc_dim).
        np.testing.assert_allclose(np.std(params[name]["kernel"]), np.sqrt(2 / fc_dim), rtol=0.05)
        np.testing.assert_array_equal(params[name]["bias"], 0)
    np.testing.assert_allclose(np.std(params["predictor"]["kernel"]), 0.001, rtol=0.05)
    np.testing.assert_array_equal(params["predictor"]["bias"], 0)


def test_point_head_bf16_compute_keeps_fp32_params(np_rng):
    head = PointHead(3, fc_dim=8, dtype=jnp.bfloat16)
    fine = jnp.asarray(np_rng.normal(size=(1, 5, 4)), jnp.bfloat16)
    coarse = jnp.asarray(np_rng.normal(size=(1, 5, 3)), jnp.bfloat16)
    variables = head.init(jax.random.key(0), fine, coarse)
    chex.assert_trees_all_equal_dtypes(variables, jax.tree.map(lambda a: a.astype(jnp.float32), variables))
    chex.assert_type(head.apply(variables, fine, coarse), jnp.bfloat16)


@pytest.mark.parametrize(
    "kwargs, fine_shape, coarse_shape, match",
    [
        ({"activation": "gelu"}, (1, 4, 3), (1, 4, 2), "activation must be one of"),
        ({}, (4, 3), (1, 4, 2), r"fine_point_feats must be \(N, P, C\)"),
        ({}, (1, 4, 3), (1, 5, 2), r"coarse_point_logits must be \(N, P, K\)"),
    ],
)
def test_point_head_rejects_bad_input(kwargs, fine_shape, coarse_shape, match):
    head = PointHead(2, fc_dim=4, **kwargs)
    with pytest.raises(ValueError, match=match):
        head.init(jax.random.key(0), jnp.ones(fine_shape), jnp.ones(coarse_shape))
