"""Static-shape box operations for a Mask R-CNN in the manner of detectron2 (d2).

Every function has static output shapes, uses no boolean indexing and runs under
`jax.jit` (and `jax.vmap` over images). Argument checks are made on static shapes and
Python arguments, before anything is traced, and raise `ValueError` naming the argument.

Conventions:
  * A box is `(x0, y0, x1, y1)` float32 in image pixels, continuous coordinates: pixel
    `i` covers `[i, i + 1)`. Widths are `x1 - x0` (no `+ 1`, as in d2).
  * Maps are channels-last `(N, H, W, C)`.
  * Shape letters: N images, R regions per image, A anchors per location, M ground-truth
    boxes, C channels, o the ROIAlign output size.
  * "Fixed-size with validity": where d2 returns a variable number of items (NMS,
    sampling) these functions return a fixed number plus a boolean `valid` mask; padded
    entries have index 0 and `valid == False`.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.point_ops import point_sample

__all__ = [
    "anchors_for_level",
    "assign_levels",
    "batched_nms",
    "box_area",
    "box_is_nonempty",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "match_boxes",
    "multilevel_roi_align",
    "nms",
    "pairwise_iou",
    "roi_align",
    "sample_indices",
    "subsample_labels",
]

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------- checks


def _check_boxes(name: str, boxes, rank: int | None = None) -> None:
    shape = np.shape(boxes)
    if len(shape) < 1 or shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4) (x0, y0, x1, y1); got {tuple(shape)}")
    if rank is not None and len(shape) != rank:
        letters = {2: "(N, 4)", 3: "(N, R, 4)"}.get(rank, f"rank {rank}")
        raise ValueError(f"{name} must have shape {letters}; got {tuple(shape)}")


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a Python int >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def _check_weights(weights) -> Tuple[float, float, float, float]:
    if len(weights) != 4 or any(not float(w) > 0 for w in weights):
        raise ValueError(f"weights must be 4 positive numbers (wx, wy, ww, wh); got {weights!r}")
    return tuple(float(w) for w in weights)


# ---------------------------------------------------------------------------- anchors


def anchors_for_level(
    height: int,
    width: int,
    stride: int,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    offset: float = 0.0,
) -> np.ndarray:
    """Anchors of one feature level: `(height * width * A, 4)` float32 NumPy, A =
    `len(sizes) * len(aspect_ratios)`.

    As d2's DefaultAnchorGenerator: cell anchors for each size (outer loop) and aspect
    ratio (inner loop), `w = sqrt(size**2 / ratio)`, `h = ratio * w`, centred on 0; shifted
    to `((x + offset) * stride, (y + offset) * stride)`; order row-major over (y, x, a).
    """
    height = _check_int("height", height)
    width = _check_int("width", width)
    stride = _check_int("stride", stride)
    sizes = [float(s) for s in sizes]
    aspect_ratios = [float(r) for r in aspect_ratios]
    if not sizes or any(not s > 0 for s in sizes):
        raise ValueError(f"sizes must be a non-empty sequence of positive numbers; got {sizes!r}")
    if not aspect_ratios or any(not r > 0 for r in aspect_ratios):
        raise ValueError(
            f"aspect_ratios must be a non-empty sequence of positive numbers; got {aspect_ratios!r}")
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset must be in [0, 1); got {offset!r}")
    cell = []
    for size in sizes:
        area = size ** 2
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            cell.append((-w / 2.0, -h / 2.0, w / 2.0, h / 2.0))
    cell = np.asarray(cell, np.float32)  # (A, 4)
    shift_x = (np.arange(width, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
    shift_y = (np.arange(height, dtype=np.float32) + np.float32(offset)) * np.float32(stride)
    sy, sx = np.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (shifts + cell[None]).reshape(-1, 4).astype(np.float32)


# ------------------------------------------------------------------- box <-> deltas


def _centres(boxes):
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(boxes: jax.Array, targets: jax.Array,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> jax.Array:
    """Deltas `(..., 4)` that turn `boxes (..., 4)` into `targets (..., 4)` (broadcast).

    d2's Box2BoxTransform.get_deltas: `dx = wx * (tcx - cx) / w`, `dw = ww * log(tw / w)`.
    """
    _check_boxes("boxes", boxes)
    _check_boxes("targets", targets)
    wx, wy, ww, wh = _check_weights(weights)
    cx, cy, w, h = _centres(boxes)
    tcx, tcy, tw, th = _centres(targets)
    return jnp.stack([wx * (tcx - cx) / w, wy * (tcy - cy) / h,
                      ww * jnp.log(tw / w), wh * jnp.log(th / h)], axis=-1)


def decode_boxes(deltas: jax.Array, boxes: jax.Array,
                 weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP) -> jax.Array:
    """Applies `deltas (..., 4)` to `boxes (..., 4)` (broadcast) -> boxes `(..., 4)`.

    d2's Box2BoxTransform.apply_deltas; `dw` and `dh` (after dividing by their weights)
    are clamped from above at `scale_clamp`.
    """
    _check_boxes("deltas", deltas)
    _check_boxes("boxes", boxes)
    wx, wy, ww, wh = _check_weights(weights)
    cx, cy, w, h = _centres(boxes)
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, scale_clamp)
    dh = jnp.minimum(deltas[..., 3] / wh, scale_clamp)
    pcx = dx * w + cx
    pcy = dy * h + cy
    pw = jnp.exp(dw) * w
    ph = jnp.exp(dh) * h
    return jnp.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=-1)


# ----------------------------------------------------------------------- geometry


def box_area(boxes: jax.Array) -> jax.Array:
    """`boxes (..., 4)` -> areas `(...)`, `(x1 - x0) * (y1 - y0)` (not clamped, as d2)."""
    _check_boxes("boxes", boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_with(a, b):
    """IoU of broadcast boxes `a (..., 4)` and `b (..., 4)` -> `(...)`; 0 where union is 0."""
    iw = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0)
    ih = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0)
    inter = iw * ih
    union = box_area(a) + box_area(b) - inter
    positive = union > 0
    return jnp.where(positive, inter / jnp.where(positive, union, 1), 0)


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """IoU of every pair: `a (..., N, 4)`, `b (..., M, 4)` -> `(..., N, M)` (leading axes
    broadcast). 0 where the union is 0 (empty boxes)."""
    _check_boxes("a", a)
    _check_boxes("b", b)
    if np.ndim(a) < 2 or np.ndim(b) < 2:
        raise ValueError(f"a and b must have shape (..., N, 4) and (..., M, 4); "
                         f"got {tuple(np.shape(a))} and {tuple(np.shape(b))}")
    return _iou_with(a[..., :, None, :], b[..., None, :, :])


def clip_boxes(boxes: jax.Array, height, width) -> jax.Array:
    """Clips `boxes (..., 4)` into `[0, width] x [0, height]`.

    `height`/`width` are Python numbers or (traced) arrays. An array with fewer axes than
    `boxes.shape[:-1]` is aligned on the *leading* axes (per-image sizes `(B,)` for boxes
    `(B, R, 4)`); one with as many axes broadcasts as usual (e.g. `(B, 1)`).
    """
    _check_boxes("boxes", boxes)
    lead = np.ndim(boxes) - 1

    def align(name, v):
        nd = np.ndim(v)
        if nd > lead:
            raise ValueError(f"{name} has shape {tuple(np.shape(v))}, more axes than boxes "
                             f"{tuple(np.shape(boxes))} without its last")
        v = jnp.asarray(v, boxes.dtype if jnp.issubdtype(boxes.dtype, jnp.floating) else None)
        return jnp.reshape(v, np.shape(v) + (1,) * (lead - nd)) if 0 < nd < lead else v

    h = align("height", height)
    w = align("width", width)
    x0 = jnp.clip(boxes[..., 0], 0, w)
    y0 = jnp.clip(boxes[..., 1], 0, h)
    x1 = jnp.clip(boxes[..., 2], 0, w)
    y1 = jnp.clip(boxes[..., 3], 0, h)
    return jnp.stack(jnp.broadcast_arrays(x0, y0, x1, y1), axis=-1).astype(boxes.dtype)


def box_is_nonempty(boxes: jax.Array, threshold: float = 0.0) -> jax.Array:
    """`boxes (..., 4)` -> bool `(...)`: width > threshold and height > threshold (d2's
    Boxes.nonempty)."""
    _check_boxes("boxes", boxes)
    return ((boxes[..., 2] - boxes[..., 0]) > threshold) & ((boxes[..., 3] - boxes[..., 1]) > threshold)


# --------------------------------------------------------------------------------- NMS


def _nms(boxes, scores, groups, iou_threshold, max_output, valid):
    _check_boxes("boxes", boxes, rank=2)
    n = np.shape(boxes)[0]
    if np.shape(scores) != (n,):
        raise ValueError(f"scores must have shape ({n},) to match boxes; got {tuple(np.shape(scores))}")
    if groups is not None and np.shape(groups) != (n,):
        raise ValueError(f"groups must have shape ({n},) to match boxes; got {tuple(np.shape(groups))}")
    if valid is not None and np.shape(valid) != (n,):
        raise ValueError(f"valid must have shape ({n},) to match boxes; got {tuple(np.shape(valid))}")
    max_output = _check_int("max_output", max_output)
    if isinstance(iou_threshold, bool) or not isinstance(
            iou_threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"iou_threshold must be a Python float; got {iou_threshold!r}")
    iou_threshold = float(iou_threshold)
    if n == 0:
        return jnp.zeros((max_output,), jnp.int32), jnp.zeros((max_output,), bool)

    valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool)
    # Sort: valid first, then descending score, ties by lower index (stable).
    # `+ 0.0` maps -0.0 to 0.0 so that both tie.
    neg_scores = -(jnp.asarray(scores, jnp.float32) + 0.0)
    _, _, order = jax.lax.sort(
        (jnp.logical_not(valid).astype(jnp.int32), neg_scores, jnp.arange(n, dtype=jnp.int32)),
        num_keys=2, is_stable=True)
    sorted_boxes = jnp.asarray(boxes)[order]
    sorted_groups = None if groups is None else jnp.asarray(groups)[order]
    alive0 = valid[order]

    # Each step keeps the first alive box (the best remaining one: everything before it
    # is already kept or suppressed) and suppresses the alive boxes overlapping it. At
    # most `max_output` steps, each O(N); the IoU row is computed on the fly.
    def cond(state):
        k, alive, _ = state
        return (k < max_output) & jnp.any(alive)

    def body(state):
        k, alive, kept = state
        i = jnp.argmax(alive).astype(jnp.int32)
        kept = kept.at[k].set(i)
        overlap = _iou_with(sorted_boxes[i], sorted_boxes) > iou_threshold
        if sorted_groups is not None:
            overlap = overlap & (sorted_groups == sorted_groups[i])
        alive = alive & jnp.logical_not(overlap)
        alive = alive.at[i].set(False)
        return k + 1, alive, kept

    k, _, kept = jax.lax.while_loop(
        cond, body, (jnp.int32(0), alive0, jnp.zeros((max_output,), jnp.int32)))
    keep_valid = jnp.arange(max_output) < k
    return jnp.where(keep_valid, order[kept], 0).astype(jnp.int32), keep_valid


def nms(boxes: jax.Array, scores: jax.Array, *, iou_threshold: float, max_output: int,
        valid: jax.Array | None = None) -> Tuple[jax.Array, jax.Array]:
    """Greedy NMS: `boxes (N, 4)`, `scores (N,)`, optional `valid (N,)` bool ->
    `(indices (max_output,) int32, keep_valid (max_output,) bool)`.

    Boxes are visited in descending score order (ties: lower index first) and a box is
    kept unless its IoU with an already kept box is `> iou_threshold`; invalid boxes are
    never kept (nor suppress anything). The kept indices come in descending score order,
    the first `max_output` of them, padded with index 0 and `keep_valid False`.
    """
    return _nms(boxes, scores, None, iou_threshold, max_output, valid)


def batched_nms(boxes: jax.Array, scores: jax.Array, groups: jax.Array, *, iou_threshold: float,
                max_output: int, valid: jax.Array | None = None) -> Tuple[jax.Array, jax.Array]:
    """NMS independently within each group (class-aware): `groups (N,)` int; otherwise as
    :func:`nms`. Only boxes of the same group suppress each other (exact, no coordinate
    offsets); the output is in descending score order over all groups."""
    if groups is None:
        raise ValueError("groups must be an (N,) int array; got None")
    return _nms(boxes, scores, groups, iou_threshold, max_output, valid)


# --------------------------------------------------------------------------- ROIAlign


def sample_counts(extent: jax.Array, output_size: int, sampling_ratio: int,
                  max_sampling_ratio: int) -> jax.Array:
    """Samples per bin along one axis for ROIs of `extent (...)` (map pixels) split into
    `output_size` bins: `sampling_ratio` if it is >= 1, else torchvision's adaptive rule
    ceil(extent / output_size) (0 for an empty or inverted ROI), at most
    `max_sampling_ratio` (the static number of sample slots). int32 `(...)`."""
    if sampling_ratio > 0:
        return jnp.full(jnp.shape(extent), sampling_ratio, jnp.int32)
    n = jnp.ceil(jnp.asarray(extent, jnp.float32) / output_size)
    return jnp.clip(n, 0, max_sampling_ratio).astype(jnp.int32)


def _slots(sampling_ratio: int, max_sampling_ratio: int) -> int:
    return sampling_ratio if sampling_ratio > 0 else max_sampling_ratio


def _roi_sample_coords(boxes, scale, h, w, output_size, sampling_ratio, max_sampling_ratio,
                       aligned):
    """Sample points of ROIAlign in pixel coordinates of a map `(h, w)` (pixel centre j at
    j), and whether each one contributes. `boxes (N, R, 4)`; `scale`, `h`, `w` scalars or
    `(N, R)` arrays. Returns `x (N, R, o, S)`, `y (N, R, o, S)`, `x_ok`, `y_ok` (S sample
    slots per bin side, see :func:`sample_counts`) with the coordinates already clamped into
    `[0, w - 1]`, `[0, h - 1]` as torchvision does, and `count (N, R)`, the number of samples
    each bin averages (torchvision divides by it even where samples fall outside the map)."""
    offset = 0.5 if aligned else 0.0
    boxes = boxes.astype(jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    start_x = boxes[..., 0] * scale - offset
    start_y = boxes[..., 1] * scale - offset
    roi_w = boxes[..., 2] * scale - offset - start_x
    roi_h = boxes[..., 3] * scale - offset - start_y
    if not aligned:
        roi_w = jnp.maximum(roi_w, 1.0)
        roi_h = jnp.maximum(roi_h, 1.0)
    slots = _slots(sampling_ratio, max_sampling_ratio)
    bins = jnp.arange(output_size, dtype=jnp.float32)[:, None]
    slot = jnp.arange(slots, dtype=jnp.float32)[None, :]

    def axis(start, size, extent):
        n = sample_counts(size, output_size, sampling_ratio, max_sampling_ratio)
        nf = jnp.maximum(n, 1).astype(jnp.float32)[..., None, None]
        # Fraction of the ROI at which each sample lies: (bin + (s + 0.5) / n) / o.
        p = start[..., None, None] + (bins + (slot + 0.5) / nf) * (size / output_size)[..., None, None]
        extent = jnp.asarray(extent, jnp.float32)
        extent = extent[..., None, None] if extent.ndim else extent
        ok = (p >= -1.0) & (p <= extent) & (slot < n[..., None, None])
        return jnp.clip(p, 0.0, extent - 1.0), ok, n

    x, x_ok, nx = axis(start_x, roi_w, w)
    y, y_ok, ny = axis(start_y, roi_h, h)
    return x, y, x_ok, y_ok, jnp.maximum(nx * ny, 1)


def _sample_and_pool(features, x, y, x_ok, y_ok, count, norm_w, norm_h, output_size):
    """Bilinear samples at pixel coordinates `x`, `y` `(N, R, o, S)` of a map `(norm_h,
    norm_w)` large, summed per bin and divided by `count (N, R)` -> `(N, R, o, o, C)`."""
    n, r, o, s = x.shape
    shape = (n, r, o, s, o, s)
    xn = jnp.broadcast_to(((x + 0.5) / norm_w)[:, :, None, None, :, :], shape)
    yn = jnp.broadcast_to(((y + 0.5) / norm_h)[:, :, :, :, None, None], shape)
    ok = y_ok[:, :, :, :, None, None] & x_ok[:, :, None, None, :, :]
    # A sample that does not contribute is moved far outside the map: point_sample gives 0.
    xn = jnp.where(ok, xn, -1.0)
    yn = jnp.where(ok, yn, -1.0)
    coords = jnp.stack([xn, yn], axis=-1).reshape(n, r * o * s * o * s, 2)
    c = features.shape[-1]
    values = point_sample(features, coords).reshape(n, r, o, s, o, s, c)
    acc = jnp.promote_types(features.dtype, jnp.float32)
    total = jnp.sum(values.astype(acc), axis=(3, 5))
    return (total / count[:, :, None, None, None].astype(acc)).astype(features.dtype)


def _check_roi_args(features, boxes, output_size, sampling_ratio, max_sampling_ratio):
    if np.ndim(features) != 4 or 0 in np.shape(features):
        raise ValueError(f"features must be a non-empty (N, H, W, C) array; got {tuple(np.shape(features))}")
    _check_boxes("boxes", boxes, rank=3)
    if np.shape(boxes)[0] != np.shape(features)[0]:
        raise ValueError(f"boxes has batch size {np.shape(boxes)[0]} but features has "
                         f"{np.shape(features)[0]}")
    _check_int("output_size", output_size)
    _check_int("sampling_ratio", sampling_ratio, 0)
    _check_int("max_sampling_ratio", max_sampling_ratio)


def roi_align(features: jax.Array, boxes: jax.Array, *, output_size: int, spatial_scale: float,
              sampling_ratio: int, max_sampling_ratio: int = 8,
              aligned: bool = True) -> jax.Array:
    """ROIAlign of `boxes (N, R, 4)` (image pixels) on `features (N, H, W, C)` ->
    `(N, R, output_size, output_size, C)`.

    torchvision's `roi_align` (d2's ROIAlignV2 with `aligned=True`): box coordinates are
    multiplied by `spatial_scale` (minus 0.5 when aligned; without alignment ROI sizes are
    at least 1); each bin averages a grid of samples, `sampling_ratio` per side, or with
    `sampling_ratio=0` torchvision's adaptive ceil(bin side) per side, capped at
    `max_sampling_ratio` (static shapes: every ROI has that many sample slots, unused ones
    weigh 0; a ROI whose bins are wider than the cap gets the cap's samples spread evenly).
    Samples below -1 or beyond the map size contribute 0, the others are clamped into the
    map and interpolated bilinearly. Differentiable w.r.t. `features`.
    """
    _check_roi_args(features, boxes, output_size, sampling_ratio, max_sampling_ratio)
    if not float(spatial_scale) > 0:
        raise ValueError(f"spatial_scale must be > 0; got {spatial_scale!r}")
    _, h, w, _ = np.shape(features)
    x, y, x_ok, y_ok, count = _roi_sample_coords(jnp.asarray(boxes), float(spatial_scale), h, w,
                                                 output_size, sampling_ratio,
                                                 max_sampling_ratio, aligned)
    return _sample_and_pool(jnp.asarray(features), x, y, x_ok, y_ok, count, w, h, output_size)


def assign_levels(boxes: jax.Array, min_level: int, max_level: int,
                  canonical_box_size: float = 224, canonical_level: int = 4) -> jax.Array:
    """FPN level index of each box: `boxes (..., 4)` -> int32 `(...)` in
    `[0, max_level - min_level]`, i.e. `level - min_level` as d2's assign_boxes_to_levels:
    `level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))` clamped
    into `[min_level, max_level]`. Empty or inverted boxes go to `min_level`."""
    _check_boxes("boxes", boxes)
    min_level = _check_int("min_level", min_level, 0)
    max_level = _check_int("max_level", max_level, 0)
    if max_level < min_level:
        raise ValueError(f"max_level must be >= min_level; got {max_level} < {min_level}")
    if not float(canonical_box_size) > 0:
        raise ValueError(f"canonical_box_size must be > 0; got {canonical_box_size!r}")
    size = jnp.sqrt(jnp.maximum(box_area(jnp.asarray(boxes, jnp.float32)), 0.0))
    level = jnp.floor(canonical_level + jnp.log2(size / canonical_box_size + 1e-8))
    level = jnp.clip(level, min_level, max_level)
    return (level - min_level).astype(jnp.int32)


def multilevel_roi_align(features: Sequence[jax.Array], strides: Sequence[int], boxes: jax.Array,
                         *, output_size: int, sampling_ratio: int, max_sampling_ratio: int = 8,
                         canonical_box_size: float = 224, canonical_level: int = 4,
                         aligned: bool = True) -> jax.Array:
    """ROIAlign of `boxes (N, R, 4)` on FPN levels `features[l] (N, H_l, W_l, C)` with
    `strides[l] = 2**level` (consecutive levels, finest first) -> `(N, R, o, o, C)`, each box
    on the level that :func:`assign_levels` picks (d2's ROIPooler with ROIAlignV2).

    Cost is that of one :func:`roi_align`, not one per level: the levels are packed into
    one zero-padded atlas map (finest level at the left, the others stacked in a column
    to its right, one zero pixel between neighbours) and each box's samples are moved to
    its level's place in the atlas. Since samples are clamped into their level, the
    bilinear neighbours outside it lie in zero gaps with zero weight: the result equals
    `roi_align(features[l], ..., spatial_scale=1 / strides[l])` on the assigned level.
    """
    features = list(features)
    strides = [int(s) for s in strides]
    if not features or len(features) != len(strides):
        raise ValueError(f"features and strides must be non-empty and of equal length; got "
                         f"{len(features)} and {len(strides)}")
    levels = []
    for s in strides:
        if s < 1 or s & (s - 1):
            raise ValueError(f"strides must be powers of two; got {strides}")
        levels.append(s.bit_length() - 1)
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"strides must be consecutive powers of two, finest first; got {strides}")
    for i, f in enumerate(features):
        _check_roi_args(f, boxes, output_size, sampling_ratio, max_sampling_ratio)
        if np.shape(f)[0] != np.shape(features[0])[0] or np.shape(f)[-1] != np.shape(features[0])[-1]:
            raise ValueError(f"features[{i}] has shape {tuple(np.shape(f))}, inconsistent with "
                             f"features[0] {tuple(np.shape(features[0]))} (N and C must agree)")
    boxes = jnp.asarray(boxes)
    if len(features) == 1:
        return roi_align(features[0], boxes, output_size=output_size, spatial_scale=1.0 / strides[0],
                         sampling_ratio=sampling_ratio, max_sampling_ratio=max_sampling_ratio,
                         aligned=aligned)

    level_idx = assign_levels(boxes, levels[0], levels[-1], canonical_box_size, canonical_level)
    # Atlas layout: level 0 at (0, 0); level l >= 1 at x = W_0 + 1, stacked downwards.
    n, c = np.shape(features[0])[0], np.shape(features[0])[-1]
    sizes = [np.shape(f)[1:3] for f in features]
    origins = [(0, 0)]
    y = 0
    for hl, _ in sizes[1:]:
        origins.append((y, sizes[0][1] + 1))
        y += hl + 1
    atlas_h = max(sizes[0][0], y)
    atlas_w = sizes[0][1] + 1 + max(wl for _, wl in sizes[1:])
    dtype = jnp.result_type(*features)
    atlas = jnp.zeros((n, atlas_h, atlas_w, c), dtype)
    for f, (oy, ox), (hl, wl) in zip(features, origins, sizes):
        atlas = atlas.at[:, oy:oy + hl, ox:ox + wl].set(jnp.asarray(f, dtype))

    pick = lambda values: jnp.asarray(np.asarray(values, np.float32))[level_idx]
    x, y, x_ok, y_ok, count = _roi_sample_coords(
        boxes, pick([1.0 / s for s in strides]), pick([hl for hl, _ in sizes]),
        pick([wl for _, wl in sizes]), output_size, sampling_ratio, max_sampling_ratio, aligned)
    x = x + pick([ox for _, ox in origins])[..., None, None]
    y = y + pick([oy for oy, _ in origins])[..., None, None]
    return _sample_and_pool(atlas, x, y, x_ok, y_ok, count, atlas_w, atlas_h, output_size)


# --------------------------------------------------------------------------- matching


def match_boxes(iou: jax.Array, gt_valid: jax.Array, *, thresholds: Sequence[float] = (0.3, 0.7),
                labels: Sequence[int] = (0, -1, 1),
                allow_low_quality_matches: bool) -> Tuple[jax.Array, jax.Array]:
    """d2's Matcher. `iou (M, N)` (ground truth x predictions), `gt_valid (M,)` bool ->
    `(matched_idxs (N,) int32, match_labels (N,) int8)`.

    Each prediction is matched to its best valid ground truth (first on ties) and labelled
    `labels[i]` when `thresholds[i-1] <= iou < thresholds[i]` (with -inf and +inf at the
    ends). With `allow_low_quality_matches`, every prediction whose IoU with some valid
    ground truth equals that ground truth's best IoU over predictions (when > 0) gets
    label 1, keeping its matched index. With no valid ground truth: index 0, `labels[0]`.
    """
    if np.ndim(iou) != 2:
        raise ValueError(f"iou must have shape (M, N) (ground truth x predictions); got "
                         f"{tuple(np.shape(iou))}")
    m, n = np.shape(iou)
    if np.shape(gt_valid) != (m,):
        raise ValueError(f"gt_valid must have shape ({m},); got {tuple(np.shape(gt_valid))}")
    thresholds = [float(t) for t in thresholds]
    labels = [int(l) for l in labels]
    if len(labels) != len(thresholds) + 1:
        raise ValueError(f"labels must have len(thresholds) + 1 = {len(thresholds) + 1} entries; "
                         f"got {labels} for thresholds {thresholds}")
    if any(b < a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"thresholds must be non-decreasing; got {thresholds}")
    if any(l not in (-1, 0, 1) for l in labels):
        raise ValueError(f"labels must be in {{-1, 0, 1}}; got {labels}")
    if m == 0:
        return jnp.zeros((n,), jnp.int32), jnp.full((n,), labels[0], jnp.int8)

    gt_valid = jnp.asarray(gt_valid, bool)
    iou = jnp.asarray(iou, jnp.float32)
    masked = jnp.where(gt_valid[:, None], iou, -jnp.inf)
    matched_vals = jnp.max(masked, axis=0)
    matched_idxs = jnp.argmax(masked, axis=0).astype(jnp.int32)
    match_labels = jnp.full((n,), labels[0], jnp.int8)
    for label, low in zip(labels[1:], thresholds):
        match_labels = jnp.where(matched_vals >= low, jnp.int8(label), match_labels)
    if allow_low_quality_matches:
        best_per_gt = jnp.max(masked, axis=1)  # (M,)
        ties = (masked == best_per_gt[:, None]) & (best_per_gt > 0)[:, None] & gt_valid[:, None]
        match_labels = jnp.where(jnp.any(ties, axis=0), jnp.int8(1), match_labels)
    any_valid = jnp.any(gt_valid)
    return (jnp.where(any_valid, matched_idxs, 0),
            jnp.where(any_valid, match_labels, jnp.int8(labels[0])))


# --------------------------------------------------------------------------- sampling


def _subsample(rng, labels, num_samples, positive_fraction):
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must have shape (N,); got {tuple(np.shape(labels))}")
    num_samples = _check_int("num_samples", num_samples)
    if not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1]; got {positive_fraction!r}")
    labels = jnp.asarray(labels)
    n = labels.shape[0]
    is_pos = (labels != -1) & (labels != 0)
    is_neg = labels == 0
    num_pos = jnp.minimum(jnp.sum(is_pos), int(num_samples * float(positive_fraction)))
    num_neg = jnp.minimum(jnp.sum(is_neg), num_samples - num_pos)
    # A uniform random order of all N items; within each class the first num_* are chosen.
    perm = jax.random.permutation(rng, n).astype(jnp.int32)
    pos_p = is_pos[perm]
    neg_p = is_neg[perm]
    rank_pos = jnp.cumsum(pos_p) - 1
    rank_neg = jnp.cumsum(neg_p) - 1
    take_pos = pos_p & (rank_pos < num_pos)
    take_neg = neg_p & (rank_neg < num_neg)
    return perm, take_pos, take_neg, rank_pos, rank_neg, num_pos, num_neg


def subsample_labels(rng: jax.Array, labels: jax.Array, *, num_samples: int,
                     positive_fraction: float) -> Tuple[jax.Array, jax.Array]:
    """d2's subsample_labels: `labels (N,)` int (-1 ignore, 0 negative, others positive)
    -> `(positive (N,) bool, negative (N,) bool)`, the chosen ones.

    `num_pos = min(#positives, int(num_samples * positive_fraction))`, `num_neg =
    min(#negatives, num_samples - num_pos)`, each chosen uniformly at random.
    """
    perm, take_pos, take_neg, *_ = _subsample(rng, labels, num_samples, positive_fraction)
    n = perm.shape[0]
    positive = jnp.zeros((n,), bool).at[perm].set(take_pos, unique_indices=True)
    negative = jnp.zeros((n,), bool).at[perm].set(take_neg, unique_indices=True)
    return positive, negative


def sample_indices(rng: jax.Array, labels: jax.Array, num_samples: int,
                   positive_fraction: float) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """The same choice as :func:`subsample_labels` as a fixed-size list:
    `(indices (num_samples,) int32, is_positive (num_samples,) bool, is_valid (num_samples,)
    bool)`: the chosen positives first (in random order), then the chosen negatives, then
    padding (index 0, `is_valid False`)."""
    perm, take_pos, take_neg, rank_pos, rank_neg, num_pos, num_neg = _subsample(
        rng, labels, num_samples, positive_fraction)
    slot = jnp.where(take_pos, rank_pos, jnp.where(take_neg, num_pos + rank_neg, num_samples))
    indices = jnp.zeros((num_samples,), jnp.int32).at[slot].set(perm, mode="drop")
    slots = jnp.arange(num_samples)
    return indices, slots < num_pos, slots < num_pos + num_neg
