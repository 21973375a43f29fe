"""PointRend's training losses: pixel cross-entropy on the coarse logits plus point
cross-entropy at the sampled points. Label 255 is ignored in both.

N: images, H x W: label size, h x w: coarse size, K: classes, P: points.
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import optax

from pointrend_jax.point_ops import point_sample, resize_bilinear

IGNORE_LABEL = 255


def cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int = IGNORE_LABEL) -> jax.Array:
    """Mean softmax cross-entropy over the entries whose label is not `ignore_label`
    (torch `cross_entropy(..., ignore_index=255, reduction="mean")`; 0 when none is valid).
    `logits (..., K)`, `labels (...)` integer."""
    labels = labels.astype(jnp.int32)
    valid = labels != ignore_label
    per_entry = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(valid, labels, 0))
    count = jnp.sum(valid)
    return jnp.sum(jnp.where(valid, per_entry, 0.0)) / jnp.maximum(count, 1)


def pixel_loss(coarse_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of `coarse_logits (N, h, w, K)` resized (bilinear) to `labels (N, H, W)`."""
    logits = resize_bilinear(coarse_logits.astype(jnp.float32), labels.shape[1:3])
    return cross_entropy(logits, labels)


def point_loss(point_logits: jax.Array, point_coords: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of `point_logits (N, P, K)` against `labels (N, H, W)` sampled with
    `nearest` at `point_coords (N, P, 2)`."""
    point_labels = point_sample(labels[..., None].astype(jnp.int32), point_coords, mode="nearest")
    return cross_entropy(point_logits, point_labels[..., 0])


def segmentation_loss(
    outputs: Mapping[str, jax.Array], labels: jax.Array, *, pixel_weight: float = 1.0,
    point_weight: float = 1.0,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Weighted sum of the pixel loss and (when the model returned points) the point loss.

    `outputs` is `PointRendSegmenter.__call__`'s dict; returns `(total, parts)`."""
    parts = {"pixel_loss": pixel_loss(outputs["coarse_logits"], labels)}
    total = pixel_weight * parts["pixel_loss"]
    if "point_logits" in outputs:
        parts["point_loss"] = point_loss(outputs["point_logits"], outputs["point_coords"], labels)
        total = total + point_weight * parts["point_loss"]
    else:
        parts["point_loss"] = jnp.zeros((), jnp.float32)
    return total, parts
