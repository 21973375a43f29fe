"""Point operations of PointRend: sampling, uncertainty, point selection, resizing.

Shape letters used throughout:
  N: images (or regions), H, W: map height and width, C: feature channels,
  K: classes (logit channels), P: points per image.

Maps are channels-last `(N, H, W, C)`. A point is `(x, y)` in `[0, 1]` relative to the
map: pixel `(i, j)` (row i, column j) has its centre at `((j + 0.5) / W, (i + 0.5) / H)`.
This is torch's `grid_sample(..., align_corners=False)` applied to `2 * coords - 1`, the
convention of detectron2's PointRend. Every function here has static output shapes and
runs under `jax.jit`; argument checks happen on static shapes, before anything is traced.
Sampling and point selection run under the named scopes `point_sample` and
`point_selection`, so their ops carry those names in compiled HLO and in profiles.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

_SAMPLE_MODES = ("bilinear", "nearest")


def _shape_error(name: str, x, expected: str) -> ValueError:
    return ValueError(f"{name} must be {expected}; got shape {tuple(np.shape(x))}")


def _check_points_arg(num_points, name: str = "num_points") -> None:
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)):
        raise ValueError(f"{name} must be a Python int >= 1; got {num_points!r}")
    if num_points < 1:
        raise ValueError(f"{name} must be >= 1; got {num_points}")


def _check_map(name: str, x, rank: int = 4) -> None:
    if np.ndim(x) != rank:
        letters = {4: "(N, H, W, C)", 3: "(N, H, W)"}[rank]
        raise _shape_error(name, x, f"a rank-{rank} array {letters}")
    if 0 in np.shape(x):
        raise _shape_error(name, x, "non-empty")


@jax.named_scope("point_sample")
def point_sample(features: jax.Array, coords: jax.Array, *, mode: str = "bilinear") -> jax.Array:
    """Samples `features (N, H, W, C)` at `coords (N, P, 2)` -> `(N, P, C)`.

    `mode="bilinear"` interpolates the four nearest pixel centres; a point's neighbours
    that fall outside the map contribute zero (torch `padding_mode="zeros"`). It keeps the
    feature dtype (bf16 in, bf16 out; the weighted sum is accumulated in at least float32)
    and is differentiable w.r.t. both features and coords, with torch's gradients.
    `mode="nearest"` takes the closest pixel (ties round half to even, as torch does) and
    works for integer maps such as labels; points whose pixel is outside give zero.
    """
    if mode not in _SAMPLE_MODES:
        raise ValueError(f"mode must be one of {_SAMPLE_MODES}; got {mode!r}")
    _check_map("features", features)
    if np.ndim(coords) != 3 or np.shape(coords)[-1] != 2:
        raise _shape_error("coords", coords, "(N, P, 2) with (x, y) in the last axis")
    n, h, w, c = np.shape(features)
    if np.shape(coords)[0] != n:
        raise ValueError(
            f"coords has batch size {np.shape(coords)[0]} but features has {n}: "
            f"coords {tuple(np.shape(coords))}, features {tuple(np.shape(features))}")
    if not jnp.issubdtype(jnp.result_type(coords), jnp.floating):
        raise ValueError(f"coords must be floating point; got dtype {jnp.result_type(coords)}")
    dtype = jnp.result_type(features)
    if mode == "bilinear" and not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"bilinear point_sample needs floating-point features; got dtype {dtype} "
            "(sample integer maps such as labels with mode='nearest')")

    if mode == "nearest":
        x = coords[..., 0] * w - 0.5
        y = coords[..., 1] * h - 0.5
        rows, inside = _pixel_rows(jnp.round(x).astype(jnp.int32), jnp.round(y).astype(jnp.int32),
                                   h, w)
        values = _gather_rows(jnp.reshape(features, (n, h * w, c)), rows)
        return jnp.where(inside[..., None], values, jnp.zeros((), dtype))
    return _bilinear_sample(features, coords)


def _pixel_rows(cx, cy, h, w):
    """Row-major indices into an image's `(H * W, C)` rows of integer pixels `(cx, cy)`
    `(N, P)`, clipped into the map, and whether each pixel really lies inside it."""
    inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    return jnp.clip(cy, 0, h - 1) * w + jnp.clip(cx, 0, w - 1), inside


def _gather_rows(flat, rows):
    """`flat (N, H*W, C)`, `rows (N, P)` -> `(N, P, C)`. Batched per image (not one flat
    index over all images) so that a batch sharded over devices stays sharded."""
    return jax.vmap(lambda f, r: f.at[r].get(mode="promise_in_bounds"))(flat, rows)


def _bilinear_corners(coords, h, w):
    """The four neighbouring pixel centres of each point: a list of `(rows, weight, inside)`
    in the order (x0, y0), (x1, y0), (x0, y1), (x1, y1), plus the fractions `(fx, fy)`."""
    x = coords[..., 0] * w - 0.5  # continuous pixel coordinates: pixel centre j sits at j
    y = coords[..., 1] * h - 0.5
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    fx = x - x0  # weight of the right neighbours
    fy = y - y0  # weight of the lower neighbours
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    corners = []
    for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                           (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        rows, inside = _pixel_rows(x0 + dx, y0 + dy, h, w)
        corners.append((rows, weight, inside))
    return corners, fx, fy


@jax.custom_vjp
def _bilinear_sample(features, coords):
    n, h, w, c = features.shape
    # Rows of C contiguous channels, one per pixel. Four separate gathers
    # (not one stacked gather) let XLA fuse each into the weighted sum instead of
    # materialising (N, 4, P, C).
    flat = jnp.reshape(features, (n, h * w, c))
    acc_dtype = jnp.promote_types(features.dtype, jnp.float32)
    corners, _, _ = _bilinear_corners(coords, h, w)
    out = None
    for rows, weight, inside in corners:
        values = _gather_rows(flat, rows).astype(acc_dtype)
        term = values * jnp.where(inside, weight, 0).astype(acc_dtype)[..., None]
        out = term if out is None else out + term
    return out.astype(features.dtype)


def _bilinear_sample_fwd(features, coords):
    return _bilinear_sample(features, coords), (features, coords)


def _bilinear_sample_bwd(residuals, grad):
    """Hand-written backward pass: autodiff of the four gathers gives four scatter-adds,
    each writing the whole (N*H*W, C) gradient (3-4x slower on CPU than one)."""
    features, coords = residuals
    n, h, w, c = features.shape
    acc_dtype = jnp.promote_types(features.dtype, jnp.float32)
    grad = grad.astype(acc_dtype)
    flat = jnp.reshape(features, (n, h * w, c))
    corners, fx, fy = _bilinear_corners(coords, h, w)

    # Features: one scatter-add per image of its 4 * P weighted cotangent rows.
    rows = jnp.concatenate([r for r, _, _ in corners], axis=1)
    updates = jnp.concatenate(
        [grad * jnp.where(inside, weight, 0).astype(acc_dtype)[..., None]
         for _, weight, inside in corners], axis=1)
    scatter = lambda r, u: jnp.zeros((h * w, c), acc_dtype).at[r].add(u, mode="promise_in_bounds")
    d_features = jax.vmap(scatter)(rows, updates).reshape(features.shape).astype(features.dtype)

    # Coords: d out / d fx and d fy through the corner weights (floor is piecewise constant).
    # When only the features need a gradient (training), jit drops this part.
    v = [jnp.where(inside[..., None], _gather_rows(flat, r), 0).astype(acc_dtype)
         for r, _, inside in corners]
    d_fx = jnp.sum(grad * ((v[1] - v[0]) * (1 - fy)[..., None] + (v[3] - v[2]) * fy[..., None]), -1)
    d_fy = jnp.sum(grad * ((v[2] - v[0]) * (1 - fx)[..., None] + (v[3] - v[1]) * fx[..., None]), -1)
    d_coords = jnp.stack([d_fx * w, d_fy * h], axis=-1).astype(coords.dtype)
    return d_features, d_coords


_bilinear_sample.defvjp(_bilinear_sample_fwd, _bilinear_sample_bwd)


def calculate_uncertainty(logits: jax.Array) -> jax.Array:
    """Uncertainty of logit vectors `(..., K)` -> `(...)`; higher means less sure.

    K >= 2: `-(top1 - top2)`, the negated margin between the two largest logits.
    K == 1 (binary or class-specific mask logit): `-|logit|`.
    """
    if np.ndim(logits) < 1 or np.shape(logits)[-1] < 1:
        raise _shape_error("logits", logits, "(..., K) with K >= 1")
    if np.shape(logits)[-1] == 1:
        return -jnp.abs(logits[..., 0])
    # Two max-reductions instead of lax.top_k(logits, 2), which XLA runs as a sort per
    # pixel on CPU/GPU (about 20x slower). With a tied maximum the margin is 0, as with top_k.
    top1 = jnp.max(logits, axis=-1)
    is_first_max = jnp.arange(logits.shape[-1]) == jnp.argmax(logits, axis=-1)[..., None]
    top2 = jnp.max(jnp.where(is_first_max, -jnp.inf, logits), axis=-1)
    return top2 - top1


@jax.named_scope("point_selection")
def sample_training_points(
    rng: jax.Array,
    coarse_logits: jax.Array,
    num_points: int,
    *,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> jax.Array:
    """Training points biased towards uncertain regions: `(N, num_points, 2)`.

    With N points, oversampling k and importance beta (docs/design.md, section 1):
    draw `int(k * N)` uniform points, sample `coarse_logits (N, H, W, K)` there, keep the
    `int(beta * N)` most uncertain, then add `N - int(beta * N)` fresh uniform points.
    `rng` is split into two keys, one for the candidates and one for the fresh points.
    The result carries no gradient (point selection is not differentiated).

    Uncertainty is computed from the logits *sampled at each point*, not by sampling a
    precomputed uncertainty map: the interpolated margin between two classes is not the
    interpolated uncertainty, and the former is what the point head will see.
    """
    _check_map("coarse_logits", coarse_logits)
    _check_points_arg(num_points)
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1]; got {importance_sample_ratio}")
    if not oversample_ratio >= 1.0:
        raise ValueError(f"oversample_ratio must be >= 1; got {oversample_ratio}")
    n = np.shape(coarse_logits)[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    key_candidates, key_random = jax.random.split(rng)

    coarse_logits = jax.lax.stop_gradient(coarse_logits)
    candidates = jax.random.uniform(key_candidates, (n, num_candidates, 2), jnp.float32)
    uncertainty = calculate_uncertainty(
        point_sample(coarse_logits, candidates).astype(jnp.float32))
    _, top = jax.lax.top_k(uncertainty, num_uncertain)
    chosen = jnp.take_along_axis(candidates, top[..., None], axis=1)
    fresh = jax.random.uniform(key_random, (n, num_random, 2), jnp.float32)
    return jax.lax.stop_gradient(jnp.concatenate([chosen, fresh], axis=1))


def check_recall_target(recall_target, name: str = "recall_target") -> None:
    """ValueError naming `name` unless `recall_target` is a number in (0, 1]."""
    if isinstance(recall_target, bool) or not isinstance(recall_target, (int, float, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1]; got {recall_target!r}")
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (1 = exact top-k); got {recall_target}")


@jax.named_scope("point_selection")
def uncertain_grid_points(
    uncertainty: jax.Array, num_points: int, *, recall_target: float = 1.0
) -> Tuple[jax.Array, jax.Array]:
    """The most uncertain cells of a grid.

    `uncertainty (N, H, W)` -> `(indices (N, P) int32, coords (N, P, 2))` with
    `P = min(num_points, H * W)`; indices are row-major into the `H * W` grid, sorted by
    decreasing uncertainty, and coords are the cells' centres `(x, y)` in `[0, 1]`.

    `recall_target < 1` selects with `lax.approx_max_k` (aggregated to the top P, so the
    result is still P distinct cells sorted by decreasing uncertainty): on TPU the expected
    share of the exact top P among them is at least `recall_target`; XLA:CPU and GPU run it
    as the exact top-k. 1 is `lax.top_k`.
    """
    _check_map("uncertainty", uncertainty, rank=3)
    _check_points_arg(num_points)
    check_recall_target(recall_target)
    n, h, w = np.shape(uncertainty)
    p = min(num_points, h * w)
    flat = jnp.reshape(uncertainty, (n, h * w))
    if recall_target < 1.0:
        _, indices = jax.lax.approx_max_k(flat, p, recall_target=float(recall_target))
    else:
        _, indices = jax.lax.top_k(flat, p)
    indices = indices.astype(jnp.int32)
    x = ((indices % w).astype(jnp.float32) + 0.5) / w
    y = ((indices // w).astype(jnp.float32) + 0.5) / h
    return indices, jnp.stack([x, y], axis=-1)


def _linear_taps(in_size: int, out_size: int):
    """Source rows and weights of 1-D linear resizing, torch align_corners=False."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(np.float32)
    return lo, hi, frac


def _resize_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    lo, hi, frac = _linear_taps(in_size, out_size)
    shape = [1] * x.ndim
    shape[axis] = out_size
    acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
    frac = jnp.asarray(frac, acc_dtype).reshape(shape)
    a = jnp.take(x, lo, axis=axis).astype(acc_dtype)
    b = jnp.take(x, hi, axis=axis).astype(acc_dtype)
    return (a + (b - a) * frac).astype(x.dtype)


def resize_bilinear(x: jax.Array, size: Tuple[int, int]) -> jax.Array:
    """Resizes `x (N, H, W, C)` to `(N, size[0], size[1], C)`.

    Exactly torch `interpolate(mode="bilinear", align_corners=False, antialias=False)`,
    also when shrinking (no anti-aliasing). Keeps the dtype.
    """
    _check_map("x", x)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be (height, width) of positive ints; got {size!r}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"resize_bilinear needs a floating-point x; got dtype {x.dtype}")
    x = _resize_axis(x, 1, int(size[0]))
    return _resize_axis(x, 2, int(size[1]))


def upsample_bilinear(x: jax.Array, scale: int) -> jax.Array:
    """Upsamples `x (N, H, W, C)` by an integer `scale` -> `(N, H*scale, W*scale, C)`.

    Equal to torch `interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)`.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive int; got {scale!r}")
    _check_map("x", x)
    _, h, w, _ = np.shape(x)
    return resize_bilinear(x, (h * scale, w * scale))
