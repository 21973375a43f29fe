"""Pixel and point losses against torch cross_entropy with ignore_index=255."""
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from pointrend_jax.semantic.losses import pixel_loss, point_loss, segmentation_loss


def random_labels(rng, shape, k, ignore_fraction=0.2):
    labels = rng.integers(0, k, size=shape)
    labels[rng.uniform(size=shape) < ignore_fraction] = 255
    return labels.astype(np.uint8)


def test_pixel_loss_equals_torch_upsampled_cross_entropy(np_rng):
    logits = np_rng.normal(size=(2, 6, 8, 5))
    labels = random_labels(np_rng, (2, 24, 32), 5)
    got = pixel_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    up = F.interpolate(torch.tensor(logits).permute(0, 3, 1, 2), size=(24, 32), mode="bilinear",
                       align_corners=False)
    want = F.cross_entropy(up, torch.tensor(labels).long(), ignore_index=255)
    np.testing.assert_allclose(got, want.item(), rtol=1e-5)


def test_point_loss_equals_torch_with_nearest_sampled_labels(np_rng):
    n, p, k, h, w = 2, 50, 4, 10, 14
    point_logits = np_rng.normal(size=(n, p, k))
    labels = random_labels(np_rng, (n, h, w), k)
    coords = np_rng.uniform(size=(n, p, 2)).astype(np.float32)
    got = point_loss(jnp.asarray(point_logits, jnp.float32), jnp.asarray(coords), jnp.asarray(labels))
    grid = torch.tensor(coords, dtype=torch.float64)[:, None] * 2 - 1
    sampled = F.grid_sample(torch.tensor(labels, dtype=torch.float64)[:, None], grid,
                            mode="nearest", align_corners=False)[:, 0, 0].long()
    want = F.cross_entropy(torch.tensor(point_logits).transpose(1, 2), sampled, ignore_index=255)
    np.testing.assert_allclose(got, want.item(), rtol=1e-5)


def test_all_ignored_gives_zero_loss_and_weights_combine(np_rng):
    logits = jnp.asarray(np_rng.normal(size=(1, 4, 4, 3)), jnp.float32)
    ignored = jnp.full((1, 8, 8), 255, jnp.uint8)
    assert float(pixel_loss(logits, ignored)) == 0.0
    labels = jnp.asarray(random_labels(np_rng, (1, 8, 8), 3))
    outputs = {"coarse_logits": logits,
               "point_logits": jnp.asarray(np_rng.normal(size=(1, 9, 3)), jnp.float32),
               "point_coords": jnp.asarray(np_rng.uniform(size=(1, 9, 2)), jnp.float32)}
    total, parts = segmentation_loss(outputs, labels, pixel_weight=0.5, point_weight=2.0)
    np.testing.assert_allclose(total, 0.5 * parts["pixel_loss"] + 2.0 * parts["point_loss"], rtol=1e-6)
    coarse_only, parts = segmentation_loss({"coarse_logits": logits}, labels)
    assert float(parts["point_loss"]) == 0.0
    np.testing.assert_allclose(coarse_only, parts["pixel_loss"], rtol=1e-6)
