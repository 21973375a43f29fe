"""Point labels of instances (Pointly-Supervised Instance Segmentation, detectron2's PointSup):
a few labelled points per object instead of its full mask.

Two ways to get them, both read by ``coco.CocoSource(..., points=...)``:

* ``"json"``: PointSup's format, as its ``prepare_coco_point_annotations_without_masks.py``
  writes it: every annotation of a COCO-format json carries ``point_coords``, a list of
  ``[x, y]`` pixel indices inside the image, and ``point_labels``, a list of as many 0/1 (1 =
  the pixel belongs to the object); ``segmentation`` may be absent. ``check_point_fields``
  checks one annotation.
* ``"masks"``: sampled from the full masks by PointSup's rule (``sample_box_points``): ``P``
  points uniformly in the annotation's box, rounded down to pixel indices, each labelled by the
  mask at that pixel. The generator of the annotation at position ``i`` of the json's
  ``annotations`` list is ``point_rng(seed, i)``, so the labels are fixed for a json and a seed,
  as a prepared file is (PointSup draws all annotations from one generator in turn instead).

Pixel indices ``(x, y)`` become continuous coordinates ``(x + 0.5, y + 0.5)``, the pixel's
centre (PointSup's dataset mapper does the same), in the examples.
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def point_rng(seed: int, position: int) -> np.random.Generator:
    """The generator of the points of the annotation at ``position`` of the json's list."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(position)]))


def sample_box_points(mask: np.ndarray, box, num_points: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """PointSup's rule: ``num_points`` points uniform in ``box`` = (x0, y0, x1, y1) pixel edges,
    rounded down to pixel indices, labelled by ``mask`` uint8 (H, W) 0/1 there.

    The draw is ``u = rng.random((P, 2))``, ``(x, y) = floor((x0, y0) + u * (x1 - x0, y1 - y0))``
    (kept inside the image). Returns coords int32 (P, 2) as (x, y) and labels uint8 (P,).
    """
    height, width = mask.shape
    x0, y0, x1, y1 = (float(v) for v in box)
    u = rng.random((int(num_points), 2))
    xs = np.minimum(np.floor(x0 + u[:, 0] * (x1 - x0)), width - 1).astype(np.int32)
    ys = np.minimum(np.floor(y0 + u[:, 1] * (y1 - y0)), height - 1).astype(np.int32)
    return np.stack([xs, ys], axis=1), mask[ys, xs].astype(np.uint8)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and bool(np.isfinite(value))


def check_point_fields(ann: dict[str, Any], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An annotation's PointSup fields as (coords float32 (Q, 2) (x, y) pixel indices, labels
    uint8 (Q,)); ValueError saying what is wrong (the caller names the file and annotation)."""
    absent = [key for key in ("point_coords", "point_labels") if key not in ann]
    if absent:
        raise ValueError(f"lacks {' and '.join(absent)} (PointSup's point annotations: "
                         f"point_coords [[x, y], ...] and point_labels [0 or 1, ...])")
    coords, labels = ann["point_coords"], ann["point_labels"]
    if not isinstance(coords, list) or not coords or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p)
            for p in coords):
        raise ValueError(f"has point_coords={_short(coords)}; expected a non-empty list of "
                         f"[x, y] pairs of numbers")
    if not isinstance(labels, list) or len(labels) != len(coords):
        raise ValueError(f"has {len(coords)} point_coords but point_labels={_short(labels)}; "
                         f"expected a list of {len(coords)} labels")
    bad = [v for v in labels if not (_is_number(v) and v in (0, 1))]
    if bad:
        raise ValueError(f"has point_labels {_short(bad)}; each label must be 0 or 1")
    xy = np.asarray(coords, np.float64)
    outside = ~((xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height))
    if outside.any():
        x, y = xy[np.flatnonzero(outside)[0]]
        raise ValueError(f"has the point ({x:g}, {y:g}) outside its {width}x{height} (WxH) image; "
                         f"point_coords are pixel indices, 0 <= x < width, 0 <= y < height")
    return xy.astype(np.float32), np.asarray(labels, np.uint8)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = ["check_point_fields", "point_rng", "sample_box_points"]
