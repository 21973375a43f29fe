"""subdivision_inference against detectron2's loop in torch, and against dense evaluation."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pointrend_jax import PointHead, point_sample, subdivision_inference, upsample_bilinear
from torch_reference import TorchPointHead, nchw
from torch_reference import subdivision as torch_subdivision


def make_head(np_rng, fine_channels, k, fc_dim=12):
    head = PointHead(k, num_fc=2, fc_dim=fc_dim)
    params = head.init(jax.random.key(0), jnp.ones((1, 2, fine_channels)), jnp.ones((1, 2, k)))["params"]
    params = jax.tree.map(lambda a: jnp.asarray(np_rng.normal(size=a.shape) * 0.5, a.dtype), params)
    return head, params


@pytest.mark.parametrize("num_steps, num_points", [(1, 7), (2, 30), (3, 50)])
def test_subdivision_equals_detectron2_loop(np_rng, num_steps, num_points):
    n, h, w, k = 2, 5, 6, 4
    coarse = np_rng.normal(size=(n, h, w, k))
    fine_a = np_rng.normal(size=(n, 2 * h, 2 * w, 3))
    fine_b = np_rng.normal(size=(n, h, w, 2))
    head, params = make_head(np_rng, 5, k)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        run = jax.jit(lambda c, f, p: subdivision_inference(
            c, f, lambda a, b: head.apply({"params": p}, a, b),
            num_steps=num_steps, num_points=num_points))
        got = np.asarray(run(jnp.asarray(coarse), [jnp.asarray(fine_a), jnp.asarray(fine_b)], params64))
    ref = TorchPointHead(5, k, 2, 12, True, "relu").load_flax(params)
    with torch.no_grad():
        want = torch_subdivision(nchw(coarse), [nchw(fine_a), nchw(fine_b)], ref, num_steps, num_points)
    want = want.permute(0, 2, 3, 1).numpy()
    assert got.shape == (n, h * 2**num_steps, w * 2**num_steps, k)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_subdivision_with_all_points_equals_dense_head_evaluation(np_rng):
    n, h, w, k, steps = 1, 4, 5, 3, 2
    coarse = jnp.asarray(np_rng.normal(size=(n, h, w, k)), jnp.float32)
    fine = jnp.asarray(np_rng.normal(size=(n, 2 * h, 2 * w, 6)), jnp.float32)
    head, params = make_head(np_rng, 6, k)
    apply = lambda a, b: head.apply({"params": params}, a, b)
    got = subdivision_inference(coarse, fine, apply, num_steps=steps, num_points=10**6)
    # Dense: every cell of the final grid re-predicted from features sampled at its centre.
    hf, wf = h * 2**steps, w * 2**steps
    rows, cols = np.meshgrid(np.arange(hf), np.arange(wf), indexing="ij")
    centres = np.stack([(cols + 0.5) / wf, (rows + 0.5) / hf], -1).reshape(1, hf * wf, 2)
    centres = jnp.asarray(np.repeat(centres, n, axis=0), jnp.float32)
    want = apply(point_sample(fine, centres), point_sample(coarse, centres))
    np.testing.assert_allclose(got, want.reshape(n, hf, wf, k), rtol=1e-5, atol=1e-5)


def test_subdivision_changes_only_chosen_cells_and_returns_points(np_rng):
    n, h, w, k = 2, 6, 6, 3
    coarse = jnp.asarray(np_rng.normal(size=(n, h, w, k)), jnp.float32)
    fine = jnp.asarray(np_rng.normal(size=(n, h, w, 4)), jnp.float32)
    sentinel = lambda f, c: jnp.full(c.shape, 1e3, c.dtype)
    out, points = subdivision_inference(coarse, fine, sentinel, num_steps=1, num_points=9,
                                        return_points=True)
    assert len(points) == 1
    chex.assert_shape(points[0], (n, 9, 2))
    changed = np.asarray(out == 1e3).all(-1)
    assert changed.sum(axis=(1, 2)).tolist() == [9, 9]
    # The changed cells are exactly those whose centres were returned.
    cols = np.floor(np.asarray(points[0])[..., 0] * 2 * w).astype(int)
    rows = np.floor(np.asarray(points[0])[..., 1] * 2 * h).astype(int)
    for i in range(n):
        assert set(zip(rows[i], cols[i])) == set(zip(*np.nonzero(changed[i])))
    # Elsewhere the output is the 2x upsampled coarse map.
    np.testing.assert_allclose(np.where(changed[..., None], 0, out),
                               np.where(changed[..., None], 0, upsample_bilinear(coarse, 2)), rtol=1e-6)


def test_subdivision_with_zero_steps_returns_coarse(np_rng):
    coarse = jnp.asarray(np_rng.normal(size=(1, 3, 3, 2)), jnp.float32)
    out = subdivision_inference(coarse, coarse, lambda f, c: c, num_steps=0, num_points=4)
    np.testing.assert_array_equal(out, coarse)


@pytest.mark.parametrize(
    "fine_shape, kwargs, match",
    [
        ((1, 8, 8, 2), {"num_steps": 1, "num_points": 0}, "num_points must be >= 1"),
        ((1, 8, 8, 2), {"num_steps": -1, "num_points": 4}, "num_steps must be an int >= 0"),
        ((2, 8, 8, 2), {"num_steps": 1, "num_points": 4}, r"fine_features\[0\] has batch size 2"),
        ((8, 8, 2), {"num_steps": 1, "num_points": 4}, r"fine_features\[0\] must be a rank-4"),
    ],
)
def test_subdivision_rejects_bad_input(fine_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        subdivision_inference(jnp.ones((1, 4, 4, 3)), jnp.ones(fine_shape), lambda f, c: c, **kwargs)


def test_subdivision_rejects_head_with_wrong_output_shape():
    with pytest.raises(ValueError, match=r"point_head_fn must return \(N, P, K\)"):
        subdivision_inference(jnp.ones((1, 4, 4, 3)), jnp.ones((1, 4, 4, 2)),
                              lambda f, c: f, num_steps=1, num_points=4)
