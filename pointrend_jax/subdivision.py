"""Adaptive subdivision inference: refine a coarse map at its most uncertain cells.

N: images, H, W: coarse map size, K: classes, C: fine-grained channels, P: points per step.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.point_ops import (
    _check_map,
    _check_points_arg,
    calculate_uncertainty,
    check_recall_target,
    point_sample,
    uncertain_grid_points,
    upsample_bilinear,
)

PointHeadFn = Callable[[jax.Array, jax.Array], jax.Array]
FineFeatures = Union[jax.Array, Sequence[jax.Array]]


def _as_feature_list(fine_features: FineFeatures, batch: int) -> List[jax.Array]:
    maps = [fine_features] if hasattr(fine_features, "shape") else list(fine_features)
    if not maps:
        raise ValueError("fine_features must be an array (N, Hf, Wf, C) or a non-empty sequence")
    for i, m in enumerate(maps):
        _check_map(f"fine_features[{i}]", m)
        if np.shape(m)[0] != batch:
            raise ValueError(
                f"fine_features[{i}] has batch size {np.shape(m)[0]} but coarse_logits has "
                f"{batch}: shape {tuple(np.shape(m))}")
    return maps


def sample_fine_features(fine_features: FineFeatures, coords: jax.Array) -> jax.Array:
    """Samples each fine map at `coords (N, P, 2)` and concatenates channels -> (N, P, sum C)."""
    maps = _as_feature_list(fine_features, np.shape(coords)[0])
    return jnp.concatenate([point_sample(m, coords) for m in maps], axis=-1)


def subdivision_inference(
    coarse_logits: jax.Array,
    fine_features: FineFeatures,
    point_head_fn: PointHeadFn,
    *,
    num_steps: int,
    num_points: int,
    recall_target: float = 1.0,
    return_points: bool = False,
) -> Union[jax.Array, Tuple[jax.Array, List[jax.Array]]]:
    """detectron2's semantic subdivision loop, with static shapes throughout.

    `coarse_logits (N, H, W, K)` -> `(N, H * 2^s, W * 2^s, K)` for `s = num_steps`.
    Each step: upsample the current logits 2x (bilinear, align_corners=False); take the
    `min(num_points, cells)` most uncertain cells; sample the fine features
    (`(N, Hf, Wf, C)` or a sequence of such maps, concatenated in order) and the
    *original* coarse logits at their centres; run
    `point_head_fn(fine (N, P, C), coarse (N, P, K)) -> (N, P, K)`; write its logits
    into those cells. `recall_target < 1` picks the cells with approximate top-k
    (`point_ops.uncertain_grid_points`).

    Pure and traceable: call it inside `jax.jit` (the head's parameters should be jit
    arguments, not closed-over constants). With `return_points=True` it also returns the
    chosen cell centres of each step, a list of `(N, P_step, 2)` arrays.
    """
    _check_map("coarse_logits", coarse_logits)
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0; got {num_steps!r}")
    _check_points_arg(num_points)
    check_recall_target(recall_target)
    n, _, _, k = np.shape(coarse_logits)
    maps = _as_feature_list(fine_features, n)

    def predict_at(coords):
        point_logits = point_head_fn(sample_fine_features(maps, coords),
                                     point_sample(coarse_logits, coords))
        if np.shape(point_logits) != (n, coords.shape[1], k):
            raise ValueError(
                f"point_head_fn must return (N, P, K) = {(n, coords.shape[1], k)}; "
                f"got shape {tuple(np.shape(point_logits))}")
        return point_logits

    logits, chosen = subdivide(coarse_logits, predict_at, num_steps=num_steps,
                               num_points=num_points, recall_target=recall_target)
    return (logits, chosen) if return_points else logits


def subdivide(logits: jax.Array, predict_at: Callable[[jax.Array], jax.Array], *,
              num_steps: int, num_points: int, recall_target: float = 1.0
              ) -> Tuple[jax.Array, List[jax.Array]]:
    """The subdivision loop both tasks run: `num_steps` times, upsample `logits (B, h, w, K)`
    2x (bilinear, align_corners=False), pick the `min(num_points, cells)` most uncertain
    cells (`calculate_uncertainty`; approximate top-k with `recall_target < 1`, see
    `uncertain_grid_points`), and overwrite them with `predict_at(centres (B, P, 2))
    -> (B, P, K)`. Returns the `(B, h * 2^s, w * 2^s, K)` logits and each step's centres."""
    chosen = []
    for _ in range(num_steps):
        logits = upsample_bilinear(logits, 2)
        b, h, w, k = logits.shape
        indices, coords = uncertain_grid_points(calculate_uncertainty(logits), num_points,
                                                recall_target=recall_target)
        flat = jnp.reshape(logits, (b, h * w, k))
        values = predict_at(coords).astype(flat.dtype)
        flat = jax.vmap(lambda f, i, v: f.at[i].set(v))(flat, indices, values)
        logits = jnp.reshape(flat, (b, h, w, k))
        chosen.append(coords)
    return logits, chosen
