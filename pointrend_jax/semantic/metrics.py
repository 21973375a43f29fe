"""Semantic segmentation metrics: confusion matrix, mIoU, pixel accuracy, Boundary IoU.

Shape letters used throughout:
  N: images, H, W: label map height and width, K: classes.

Label maps are integer `(N, H, W)` arrays of class ids; in the ground truth, 255 (and any
value outside `[0, K)`) marks a pixel to ignore. Predictions are expected in `[0, K)`.

The work is split in two, so evaluation stays on the accelerator until the end:
- device side, jittable with static shapes (`num_classes` and `dilation_ratio` are static):
  `confusion_matrix` and `boundary_iou_stats` reduce one batch to `(K, K)` / `(K,)` counts;
- host side, `SegmentationMetrics` adds those counts up over a split in int64 and turns them
  into the numbers papers report: detectron2 `SemSegEvaluator`'s mIoU
  and pixel accuracy, and Boundary IoU (Cheng et al., CVPR 2021).
"""
from __future__ import annotations

import functools
from typing import Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pointrend_jax.boundary import boundary_dilation
from pointrend_jax.tables import text_table


def _check_num_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be a Python int >= 1; got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")


def _check_label_pair(pred, label) -> None:
    if np.ndim(label) != 3:
        raise ValueError(f"label must be a rank-3 array (N, H, W); got shape {np.shape(label)}")
    if np.shape(pred) != np.shape(label):
        raise ValueError(
            f"pred must have the shape of label {np.shape(label)}; got {np.shape(pred)}")
    if 0 in np.shape(label):
        raise ValueError(f"label must be non-empty; got shape {np.shape(label)}")
    for name, x in (("pred", pred), ("label", label)):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise ValueError(f"{name} must hold integer class ids; got dtype {jnp.result_type(x)}")


def _count(values: jax.Array, keep: jax.Array, num_classes: int) -> jax.Array:
    """Histogram `(K,)` of `values` in `[0, K)` over the pixels where `keep` is true."""
    # Dropped pixels go to an extra bin K that is cut off, so nothing out of range is ever
    # clipped into a real class.
    binned = jnp.where(keep, values, num_classes).reshape(-1)
    return jnp.bincount(binned, length=num_classes + 1)[:num_classes]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
    """Counts pixels by (ground truth, prediction): `(N, H, W)` x2 -> `(K, K)` int32.

    Indexed `[gt, pred]`: row `i` holds the pixels whose ground truth is class `i`, so row
    sums are ground-truth pixel counts and the diagonal is the true positives. Pixels whose
    label is 255, or any label outside `[0, K)`, are not counted; neither are pixels whose
    prediction is outside `[0, K)` (an argmax never produces one). Counts are per batch
    (int32: fine up to 2**31 pixels); add batches up on the host with `SegmentationMetrics`.
    """
    _check_num_classes(num_classes)
    _check_label_pair(pred, label)
    pred = jnp.asarray(pred, jnp.int32)
    label = jnp.asarray(label, jnp.int32)
    k = num_classes
    keep = (label >= 0) & (label < k) & (pred >= 0) & (pred < k)
    flat = jnp.where(keep, label * k + pred, k * k).reshape(-1)
    return jnp.bincount(flat, length=k * k + 1)[: k * k].reshape(k, k)


def _window_min_max(x: jax.Array, d: int) -> Tuple[jax.Array, jax.Array]:
    """Min and max of `x (N, H, W)` over `(2d+1) x (2d+1)` windows; outside the map is -1."""
    # Padding with -1 (no class id) makes every window that pokes over the border see a
    # value different from its centre's class, i.e. the border counts as outside.
    padded = jnp.pad(x, ((0, 0), (d, d), (d, d)), constant_values=-1)
    big = jnp.iinfo(jnp.int32)

    def filt(op, init):
        # A square window is a row window then a column window: O(d) work per pixel, not O(d^2).
        rows = lax.reduce_window(padded, init, op, (1, 2 * d + 1, 1), (1, 1, 1), "VALID")
        return lax.reduce_window(rows, init, op, (1, 1, 2 * d + 1), (1, 1, 1), "VALID")

    return filt(lax.min, jnp.int32(big.max)), filt(lax.max, jnp.int32(big.min))


def class_boundaries(label: jax.Array, dilation: int) -> jax.Array:
    """Pixels on the boundary of their own class: `(N, H, W)` ids -> `(N, H, W)` bool.

    For the binary mask `M = (label == c)` of any class `c`, the boundary region is
    `M and not erode(M)`, erosion by a 3x3 square `dilation` times (one
    `(2d+1) x (2d+1)` square) with the image border counting as outside. As every pixel
    belongs to exactly one class, all classes are done at once: a pixel is interior to
    its class iff every pixel of its window lies inside the image and carries its label,
    that is iff the window's min and max both equal its label. So the boundary of class
    `c` is `(label == c) & class_boundaries(label, d)`, with memory independent of K.
    """
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 1:
        raise ValueError(f"dilation must be a Python int >= 1; got {dilation!r}")
    label = jnp.asarray(label, jnp.int32)
    lo, hi = _window_min_max(label, int(dilation))
    return ~((lo == label) & (hi == label))


@functools.partial(jax.jit, static_argnames=("num_classes", "dilation_ratio"))
def boundary_iou_stats(
    pred: jax.Array, label: jax.Array, num_classes: int, dilation_ratio: float = 0.02
) -> Tuple[jax.Array, jax.Array]:
    """Boundary IoU counts of a batch: `(N, H, W)` x2 -> `(intersection (K,), union (K,))`.

    For each class `c` and image, the boundary regions of `gt == c` and of `pred == c`
    (see `class_boundaries`; `d = boundary_dilation(H, W, dilation_ratio)`), with pixels
    whose label is 255 (or outside `[0, K)`) dropped from both; their intersection and
    union in pixels, summed over the batch (int32). Ignored pixels still count as "not
    class c" when the ground-truth mask is eroded, so the boundary of `gt == c` includes
    pixels next to an ignored region.
    """
    _check_num_classes(num_classes)
    _check_label_pair(pred, label)
    _, h, w = np.shape(label)
    d = boundary_dilation(h, w, dilation_ratio)
    k = num_classes
    pred = jnp.asarray(pred, jnp.int32)
    label = jnp.asarray(label, jnp.int32)
    valid = (label >= 0) & (label < k)
    gt_edge = valid & class_boundaries(label, d)
    pred_edge = valid & (pred >= 0) & (pred < k) & class_boundaries(pred, d)
    # A pixel is in both boundary regions of class c only if gt == pred == c there.
    both = gt_edge & pred_edge & (label == pred)
    intersection = _count(label, both, k)
    union = _count(label, gt_edge, k) + _count(pred, pred_edge, k) - intersection
    return intersection, union


def _ratio_or_none(num: np.ndarray, den: np.ndarray, present: np.ndarray):
    """Per-class `num / den` (list of float or None where absent) and their mean."""
    values = [
        float(n / m) if p and m > 0 else None for n, m, p in zip(num, den, present)
    ]
    used = [v for v in values if v is not None]
    return values, (float(np.mean(used)) if used else None)


class SegmentationMetrics:
    """Adds up confusion matrices and Boundary IoU counts over a split, on the host.

    `compute()` follows detectron2's `SemSegEvaluator`: per-class IoU
    `tp / (gt + pred - tp)` over the whole split, mIoU averaged over the classes that
    appear in the ground truth (the others are reported as None, JSON null), pixel accuracy
    `sum(tp) / sum(gt)`. Boundary IoU per class is the accumulated intersection / union,
    averaged over the same classes.
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None):
        _check_num_classes(num_classes)
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        class_names = [str(n) for n in class_names]
        if len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have num_classes={num_classes} entries; got {len(class_names)}")
        if len(set(class_names)) != num_classes:
            raise ValueError(f"class_names must be unique; got {class_names}")
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self.confusion = np.zeros((k, k), np.int64)
        self.boundary_intersection = np.zeros((k,), np.int64)
        self.boundary_union = np.zeros((k,), np.int64)

    def _as_counts(self, name: str, x, shape) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; got {x.shape}")
        if not (np.issubdtype(x.dtype, np.integer) or np.all(x == np.round(x))):
            raise ValueError(f"{name} must hold whole pixel counts; got dtype {x.dtype}")
        if np.any(x < 0):
            raise ValueError(f"{name} must be >= 0 everywhere")
        return x.astype(np.int64)

    def update(self, confusion, boundary_intersection, boundary_union) -> None:
        """Adds one batch: `confusion (K, K)` indexed [gt, pred], boundary counts `(K,)`."""
        k = self.num_classes
        conf = self._as_counts("confusion", confusion, (k, k))
        inter = self._as_counts("boundary_intersection", boundary_intersection, (k,))
        union = self._as_counts("boundary_union", boundary_union, (k,))
        if np.any(inter > union):
            raise ValueError("boundary_intersection must not exceed boundary_union")
        self.confusion += conf
        self.boundary_intersection += inter
        self.boundary_union += union

    def compute(self) -> Dict[str, object]:
        """-> {"miou", "boundary_iou", "pixel_accuracy", "per_class_iou",
        "per_class_boundary_iou"}: floats in [0, 1], per-class dicts keyed by class name."""
        conf = self.confusion.astype(np.float64)
        gt = conf.sum(axis=1)
        if gt.sum() == 0:
            raise ValueError("no labelled pixels were accumulated; call update() first")
        tp = np.diag(conf)
        present = gt > 0
        iou, miou = _ratio_or_none(tp, gt + conf.sum(axis=0) - tp, present)
        biou, mbiou = _ratio_or_none(
            self.boundary_intersection.astype(np.float64),
            self.boundary_union.astype(np.float64),
            present,
        )
        return {
            "miou": miou,
            "boundary_iou": mbiou,
            "pixel_accuracy": float(tp.sum() / gt.sum()),
            "per_class_iou": dict(zip(self.class_names, iou)),
            "per_class_boundary_iou": dict(zip(self.class_names, biou)),
        }


def _percent(value) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


def format_table(
    results_by_name: Mapping[str, Mapping[str, object]], *, per_class_boundary: bool = False
) -> str:
    """Side-by-side text table of `compute()` results, one column per name, in percent.

    Rows: mIoU, boundary IoU, pixel acc, then `IoU <class>` for every class (and
    `bIoU <class>` with `per_class_boundary=True`); "-" where a value is None or missing.
    """
    if not results_by_name:
        raise ValueError("results_by_name must name at least one result")
    columns = list(results_by_name)
    rows = [
        (label, [results_by_name[c].get(key) for c in columns])
        for label, key in (
            ("mIoU", "miou"), ("boundary IoU", "boundary_iou"), ("pixel acc", "pixel_accuracy"))
    ]
    sections = [("IoU", "per_class_iou")]
    if per_class_boundary:
        sections.append(("bIoU", "per_class_boundary_iou"))
    for prefix, key in sections:
        names = []  # classes in order of first appearance over the columns
        for c in columns:
            names += [n for n in (results_by_name[c].get(key) or {}) if n not in names]
        for n in names:
            rows.append((f"{prefix} {n}",
                         [(results_by_name[c].get(key) or {}).get(n) for c in columns]))
    cells = [[label] + [_percent(v) for v in values] for label, values in rows]
    return text_table(["metric"] + columns, cells)
