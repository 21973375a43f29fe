"""point_ops against torch (float64 CPU) and float64 NumPy definitions."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointrend_jax import (
    calculate_uncertainty,
    point_sample,
    resize_bilinear,
    sample_training_points,
    uncertain_grid_points,
    upsample_bilinear,
)


def torch_point_sample(features, coords, mode="bilinear"):
    """detectron2's point_sample on NHWC numpy inputs, in float64 torch -> (N, P, C)."""
    f = torch.from_numpy(np.asarray(features, np.float64)).permute(0, 3, 1, 2)
    g = torch.from_numpy(np.asarray(coords, np.float64))[:, None] * 2.0 - 1.0
    out = F.grid_sample(f, g, mode=mode, padding_mode="zeros", align_corners=False)
    return out[:, :, 0].permute(0, 2, 1).numpy()


def random_coords(rng, n, p, h, w, lo=-0.3, hi=1.3):
    """Random points, inside and outside the map, plus points exactly on its borders,
    on pixel centres and on pixel edges."""
    coords = rng.uniform(lo, hi, size=(n, p, 2))
    special_x = np.array([0.0, 1.0, 0.5 / w, 1 - 0.5 / w, 1.0 / w, -0.5 / w, 1 + 0.5 / w, 2.0 / w])
    special_y = np.array([0.0, 1.0, 0.5 / h, 1 - 0.5 / h, 1.0 / h, -0.5 / h, 1 + 0.5 / h, 2.0 / h])
    k = min(p, len(special_x))
    coords[:, :k, 0] = special_x[:k]
    coords[:, :k, 1] = special_y[::-1][:k]
    return coords.astype(np.float32)


@pytest.mark.parametrize("shape", [(2, 7, 9, 5), (1, 1, 3, 2), (3, 16, 4, 1)])
def test_point_sample_bilinear_equals_torch_grid_sample(np_rng, shape):
    n, h, w, c = shape
    feats = np_rng.normal(size=shape).astype(np.float32)
    coords = random_coords(np_rng, n, 40, h, w)
    got = point_sample(jnp.asarray(feats), jnp.asarray(coords))
    chex.assert_shape(got, (n, 40, c))
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, torch_point_sample(feats, coords), rtol=1e-5, atol=1e-5)


def test_point_sample_gradients_equal_torch(np_rng):
    n, h, w, c, p = 2, 6, 8, 3, 50
    feats = np_rng.normal(size=(n, h, w, c))
    coords = np_rng.uniform(-0.2, 1.2, size=(n, p, 2))
    cotangent = np_rng.normal(size=(n, p, c))

    def loss(f, x):
        return jnp.sum(point_sample(f, x) * cotangent)

    g_feat, g_coords = jax.grad(loss, argnums=(0, 1))(
        jnp.asarray(feats, jnp.float32), jnp.asarray(coords, jnp.float32))

    tf = torch.tensor(feats).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    tc = torch.tensor(coords).requires_grad_(True)
    out = F.grid_sample(tf, tc[:, None] * 2 - 1, align_corners=False, padding_mode="zeros")
    (out[:, :, 0].permute(0, 2, 1) * torch.tensor(cotangent)).sum().backward()
    np.testing.assert_allclose(g_feat, tf.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_coords, tc.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_point_sample_nearest_equals_torch_and_keeps_integer_labels(np_rng):
    n, h, w, p = 2, 5, 7, 200
    labels = np_rng.integers(0, 19, size=(n, h, w, 1)).astype(np.int32)
    coords = np_rng.uniform(-0.2, 1.2, size=(n, p, 2))
    # Keep away from exact half-pixel ties, where float rounding decides the neighbour.
    frac_x = (coords[..., 0] * w) % 1.0
    frac_y = (coords[..., 1] * h) % 1.0
    coords[np.abs(frac_x) < 1e-3, 0] += 0.01 / w
    coords[np.abs(frac_y) < 1e-3, 1] += 0.01 / h
    coords = coords.astype(np.float32)
    got = point_sample(jnp.asarray(labels), jnp.asarray(coords), mode="nearest")
    chex.assert_type(got, jnp.int32)
    want = torch_point_sample(labels.astype(np.float64), coords, mode="nearest")
    np.testing.assert_array_equal(got, want.astype(np.int32))


def test_point_sample_keeps_bf16_and_matches_float32(np_rng):
    feats = np_rng.normal(size=(2, 9, 11, 16)).astype(np.float32)
    coords = random_coords(np_rng, 2, 64, 9, 11)
    ref = point_sample(jnp.asarray(feats), jnp.asarray(coords))
    got = point_sample(jnp.asarray(feats, jnp.bfloat16), jnp.asarray(coords))
    chex.assert_type(got, jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=2e-2, atol=2e-2)
    # Gradients come back in the inputs' dtypes.
    g_feat, g_coords = jax.grad(lambda f, x: jnp.sum(point_sample(f, x).astype(jnp.float32)),
                                argnums=(0, 1))(jnp.asarray(feats, jnp.bfloat16), jnp.asarray(coords))
    chex.assert_type([g_feat, g_coords], [jnp.bfloat16, jnp.float32])


def test_point_sample_under_jit_equals_eager(np_rng):
    feats = jnp.asarray(np_rng.normal(size=(2, 8, 8, 4)), jnp.float32)
    coords = jnp.asarray(random_coords(np_rng, 2, 30, 8, 8))
    # Equal up to float32 rounding: XLA fuses the jitted weighted sum differently.
    np.testing.assert_allclose(jax.jit(point_sample)(feats, coords), point_sample(feats, coords),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "features_shape, coords_shape, kwargs, match",
    [
        ((4, 4, 3), (1, 5, 2), {}, "features must be a rank-4"),
        ((1, 4, 4, 3), (1, 5, 3), {}, r"coords must be \(N, P, 2\)"),
        ((1, 4, 4, 3), (5, 2), {}, r"coords must be \(N, P, 2\)"),
        ((2, 4, 4, 3), (1, 5, 2), {}, "batch size 1 but features has 2"),
        ((1, 4, 4, 3), (1, 5, 2), {"mode": "bicubic"}, "mode must be one of"),
    ],
)
def test_point_sample_rejects_bad_input_with_named_argument(features_shape, coords_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        point_sample(jnp.ones(features_shape), jnp.full(coords_shape, 0.5), **kwargs)


def test_point_sample_rejects_bilinear_on_integer_maps():
    with pytest.raises(ValueError, match="mode='nearest'"):
        point_sample(jnp.ones((1, 4, 4, 1), jnp.int32), jnp.full((1, 3, 2), 0.5))


def test_calculate_uncertainty_is_negative_top2_margin(np_rng):
    logits = np_rng.normal(size=(3, 5, 7, 6))
    srt = np.sort(logits, axis=-1)
    got = calculate_uncertainty(jnp.asarray(logits, jnp.float32))
    chex.assert_shape(got, (3, 5, 7))
    np.testing.assert_allclose(got, -(srt[..., -1] - srt[..., -2]), rtol=1e-6, atol=1e-6)
    single = np_rng.normal(size=(4, 9, 1))
    np.testing.assert_allclose(calculate_uncertainty(jnp.asarray(single, jnp.float32)),
                               -np.abs(single[..., 0]), rtol=1e-6)
    with pytest.raises(ValueError, match="logits"):
        calculate_uncertainty(jnp.ones((3, 0)))


def test_uncertain_grid_points_equals_detectron2_topk_on_grid(np_rng):
    n, h, w, p = 3, 6, 9, 17
    unc = np_rng.normal(size=(n, h, w)).astype(np.float32)
    idx, coords = uncertain_grid_points(jnp.asarray(unc), p)
    chex.assert_shape([idx, coords], [(n, p), (n, p, 2)])
    chex.assert_type(idx, jnp.int32)
    t_idx = torch.topk(torch.from_numpy(unc).view(n, h * w), k=p, dim=1)[1].numpy()
    np.testing.assert_array_equal(idx, t_idx)
    want = np.stack([(t_idx % w + 0.5) / w, (t_idx // w + 0.5) / h], axis=-1)
    np.testing.assert_allclose(coords, want, rtol=1e-6)
    # P is capped at the number of cells, and then every cell is chosen once.
    idx_all, _ = uncertain_grid_points(jnp.asarray(unc), 10_000)
    assert idx_all.shape == (n, h * w)
    np.testing.assert_array_equal(np.sort(idx_all, axis=1), np.tile(np.arange(h * w), (n, 1)))


@pytest.mark.parametrize("num_points", [0, -3, 2.5, True])
def test_uncertain_grid_points_rejects_bad_num_points(num_points):
    with pytest.raises(ValueError, match="num_points"):
        uncertain_grid_points(jnp.ones((1, 4, 4)), num_points)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_upsample_bilinear_equals_torch_interpolate(np_rng, scale):
    x = np_rng.normal(size=(2, 5, 7, 3))
    got = upsample_bilinear(jnp.asarray(x, jnp.float32), scale)
    want = F.interpolate(torch.tensor(x).permute(0, 3, 1, 2), scale_factor=scale,
                         mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    chex.assert_shape(got, (2, 5 * scale, 7 * scale, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(13, 5), (3, 2), (8, 21), (1, 1)])
def test_resize_bilinear_equals_torch_interpolate_up_and_down(np_rng, size):
    x = np_rng.normal(size=(1, 8, 6, 2))
    got = resize_bilinear(jnp.asarray(x, jnp.float32), size)
    want = F.interpolate(torch.tensor(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_upsample_bilinear_rejects_bad_scale_and_rank():
    with pytest.raises(ValueError, match="scale"):
        upsample_bilinear(jnp.ones((1, 2, 2, 1)), 0)
    with pytest.raises(ValueError, match="x must be a rank-4"):
        upsample_bilinear(jnp.ones((2, 2, 1)), 2)


def torch_training_points(coarse_logits, candidates, fresh, num_uncertain):
    """detectron2's get_uncertain_point_coords_with_randomness given the same draws."""
    logits = torch.from_numpy(np.asarray(coarse_logits, np.float64)).permute(0, 3, 1, 2)
    cand = torch.from_numpy(np.asarray(candidates, np.float64))
    point_logits = F.grid_sample(logits, cand[:, None] * 2 - 1, align_corners=False)[:, :, 0]
    top2 = torch.topk(point_logits, k=2, dim=1)[0]
    uncertainty = top2[:, 1] - top2[:, 0]
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1)[1]
    chosen = torch.gather(cand, 1, idx[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.from_numpy(np.asarray(fresh, np.float64))], dim=1).numpy()


@pytest.mark.parametrize("num_points, k, beta", [(64, 3.0, 0.75), (30, 2.0, 1.0), (25, 1.0, 0.0)])
def test_sample_training_points_equals_detectron2_given_same_draws(np_rng, num_points, k, beta):
    logits = np_rng.normal(size=(2, 12, 10, 4)).astype(np.float32)
    rng = jax.random.key(int(np_rng.integers(2**31)))
    coords = sample_training_points(rng, jnp.asarray(logits), num_points,
                                    oversample_ratio=k, importance_sample_ratio=beta)
    chex.assert_shape(coords, (2, num_points, 2))
    # The documented use of rng: split in two, candidates from the first, fresh points from the second.
    key_c, key_r = jax.random.split(rng)
    num_uncertain = int(beta * num_points)
    candidates = jax.random.uniform(key_c, (2, int(num_points * k), 2))
    fresh = jax.random.uniform(key_r, (2, num_points - num_uncertain, 2))
    want = torch_training_points(logits, candidates, fresh, num_uncertain)
    np.testing.assert_allclose(coords, want, rtol=1e-6)


def test_sample_training_points_concentrate_on_uncertain_region(np_rng):
    # Left half: a confident class margin of 10; right half: nearly tied logits.
    logits = np.zeros((1, 16, 16, 3), np.float32)
    logits[:, :, :8, 0] = 10.0
    logits[:, :, 8:, :2] = np_rng.uniform(0, 0.1, size=(1, 16, 8, 2))
    coords = np.asarray(sample_training_points(jax.random.key(0), jnp.asarray(logits), 400))
    assert np.all((coords >= 0) & (coords < 1))
    right = np.mean(coords[0, :, 0] > 0.5)
    # 300 importance points almost all on the right, 100 uniform ones split evenly.
    assert right > 0.8, right


def test_sample_training_points_is_deterministic_and_without_gradient(np_rng):
    logits = jnp.asarray(np_rng.normal(size=(2, 6, 6, 3)), jnp.float32)
    a = sample_training_points(jax.random.key(3), logits, 20)
    b = sample_training_points(jax.random.key(3), logits, 20)
    np.testing.assert_array_equal(a, b)
    grad = jax.grad(lambda l: jnp.sum(sample_training_points(jax.random.key(3), l, 20)))(logits)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_points": 0}, "num_points must be >= 1"),
        ({"num_points": 8, "importance_sample_ratio": 1.5}, r"importance_sample_ratio must be in \[0, 1\]"),
        ({"num_points": 8, "importance_sample_ratio": -0.1}, r"importance_sample_ratio must be in \[0, 1\]"),
        ({"num_points": 8, "oversample_ratio": 0.5}, "oversample_ratio must be >= 1"),
    ],
)
def test_sample_training_points_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_training_points(jax.random.key(0), jnp.ones((1, 4, 4, 2)), **kwargs)
