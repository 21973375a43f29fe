"""COCO instance segmentation metrics: pasting masks, COCO results, box/mask/Boundary AP.

Shape letters used throughout:
  D: detections of one image, S: side of a predicted mask, h, w: image height and width.

Boxes are `(x0, y0, x1, y1)` floats in image pixels, the continuous coordinates in which
pixel `(i, j)` covers `[j, j + 1) x [i, i + 1)` and has its centre at `(j + 0.5, i + 0.5)`
(detectron2's convention). Everything here is NumPy on the host:
- `paste_masks` turns per-box `S x S` mask probabilities into full-image boolean masks as
  detectron2's `paste_masks_in_image` does (d2 >= 0.3);
- `encode_rle` and `detections_to_coco` build COCO results (`json.dump`-able);
- `evaluate_coco` runs pycocotools' COCOeval (and, optionally, Boundary AP of Cheng et al.,
  CVPR 2021, exactly as the official boundary-iou-api) and returns flat AP numbers;
- `format_instance_table` prints several such results side by side.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pointrend_jax.boundary import boundary_dilation
from pointrend_jax.tables import text_table

IOU_TYPES = ("bbox", "segm")
# COCOeval.stats[0:6]: AP over IoU .50:.05:.95, AP at .50 and .75, AP of small/medium/large.
AP_SUFFIXES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
BOUNDARY_KEYS = ("boundary_AP", "boundary_AP50", "boundary_AP75")
ALL_KEYS = tuple(f"{t}_{s}" for t in IOU_TYPES for s in AP_SUFFIXES) + BOUNDARY_KEYS


# ----------------------------------------------------------------------------- pasting


def _interp_matrix(pixels: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    """Bilinear weights `(len(pixels), size)`: the mask column/row read at each pixel centre.

    `grid_sample(align_corners=False)` with zero padding: pixel centre `p + 0.5` falls at
    mask coordinate `u = (p + 0.5 - lo) / (hi - lo) * size - 0.5`; the taps `floor(u)` and
    `floor(u) + 1` get weights `1 - frac` and `frac`, a tap outside `[0, size)` reads 0.
    """
    u = (pixels + 0.5 - lo) / (hi - lo) * size - 0.5
    left = np.floor(u)
    frac = u - left
    left = left.astype(np.int64)
    weights = np.zeros((len(pixels), size), np.float64)
    rows = np.arange(len(pixels))
    for tap, wt in ((left, 1.0 - frac), (left + 1, frac)):
        ok = (tap >= 0) & (tap < size)
        weights[rows[ok], tap[ok]] += wt[ok]
    return weights


def _support(lo: float, hi: float, size: int, limit: int) -> Tuple[int, int]:
    """Pixel range `[start, stop)` whose bilinear samples can be non-zero, clipped to
    `[0, limit)`: centres strictly within half a mask cell of the box `[lo, hi]`."""
    half_cell = (hi - lo) / (2.0 * size)
    start = max(0, int(math.floor(lo - half_cell - 0.5)))
    stop = min(limit, int(math.ceil(hi + half_cell - 0.5)) + 1)
    return start, max(start, stop)


def paste_masks(masks, boxes, image_size, threshold: float = 0.5) -> np.ndarray:
    """Per-box mask probabilities `(D, S, S)` -> full-image masks `(D, h, w)` bool.

    detectron2's `paste_masks_in_image` (`_do_paste_mask`, d2 >= 0.3): mask `i` is
    stretched over `boxes[i] (x0, y0, x1, y1)`, sampled bilinearly at every pixel centre
    (`grid_sample`, `align_corners=False`, zero outside the mask) and kept where
    `>= threshold`. Only the pixels where a sample can be non-zero are computed (the box
    plus half a mask cell, clipped to the image), which gives the same result as sampling
    the whole image for any `threshold > 0`. Boxes may lie partly or wholly outside the
    image; a box with `x1 <= x0` or `y1 <= y0` pastes an empty mask. `S x S` may be any
    `(Sh, Sw)`. Computed in float64 (detectron2 uses float32: the two can differ only
    where a probability is within float32 rounding of `threshold`).
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, np.float64)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a rank-3 array (D, S, S); got shape {masks.shape}")
    if boxes.shape != (masks.shape[0], 4):
        raise ValueError(
            f"boxes must have shape (D, 4) = ({masks.shape[0]}, 4); got {boxes.shape}")
    if len(image_size) != 2 or any(
            isinstance(s, bool) or int(s) != s or s < 1 for s in image_size):
        raise ValueError(f"image_size must be (h, w) positive ints; got {image_size!r}")
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 < threshold < math.inf):
        raise ValueError(f"threshold must be a finite number > 0; got {threshold!r}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError("boxes must be finite")
    h, w = int(image_size[0]), int(image_size[1])
    out = np.zeros((masks.shape[0], h, w), bool)
    if masks.shape[0] == 0:
        return out
    if masks.shape[1] < 1 or masks.shape[2] < 1:
        raise ValueError(f"masks must be non-empty; got shape {masks.shape}")
    probs = masks.astype(np.float64)
    sh, sw = masks.shape[1:]
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not (x1 > x0 and y1 > y0):
            continue
        xa, xb = _support(x0, x1, sw, w)
        ya, yb = _support(y0, y1, sh, h)
        if xa == xb or ya == yb:
            continue
        wx = _interp_matrix(np.arange(xa, xb, dtype=np.float64), x0, x1, sw)
        wy = _interp_matrix(np.arange(ya, yb, dtype=np.float64), y0, y1, sh)
        out[i, ya:yb, xa:xb] = (wy @ probs[i] @ wx.T) >= threshold
    return out


# ----------------------------------------------------------------------------- results


def encode_rle(masks) -> List[dict]:
    """Boolean masks `(D, h, w)` -> D COCO RLE dicts `{"size": [h, w], "counts": str}`."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a rank-3 array (D, h, w); got shape {masks.shape}")
    if masks.dtype != bool:
        raise ValueError(f"masks must be bool; got dtype {masks.dtype}")
    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def detections_to_coco(
    image_id: int,
    boxes,
    scores,
    classes,
    category_ids: Sequence[int],
    masks=None,
) -> List[dict]:
    """One image's detections -> COCO results: a list of D dicts with `image_id`,
    `category_id` (`category_ids[classes[i]]`: contiguous class -> dataset id), `bbox`
    `[x, y, width, height]` floats, `score` and, when `masks (D, h, w)` bool is given,
    `segmentation` as RLE (`encode_rle`)."""
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    scores = np.asarray(scores, np.float64)
    classes = np.asarray(classes)
    d = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (D, 4); got {boxes.shape}")
    if scores.shape != (d,) or classes.shape != (d,):
        raise ValueError(
            f"scores and classes must have shape (D,) = ({d},); got {scores.shape}, "
            f"{classes.shape}")
    if d and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must hold integer class ids; got dtype {classes.dtype}")
    category_ids = [int(c) for c in category_ids]
    if d and (classes.min() < 0 or classes.max() >= len(category_ids)):
        raise ValueError(
            f"classes must lie in [0, {len(category_ids)}) (one per category id); got "
            f"range [{classes.min()}, {classes.max()}]")
    rles = None
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != d:
            raise ValueError(f"masks must have shape (D={d}, h, w); got {masks.shape}")
        rles = encode_rle(masks)
    results = []
    for i in range(d):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        res = {
            "image_id": int(image_id),
            "category_id": category_ids[int(classes[i])],
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(scores[i]),
        }
        if rles is not None:
            res["segmentation"] = rles[i]
        results.append(res)
    return results


# ----------------------------------------------------------------------------- Boundary IoU


def _erode(mask: np.ndarray, d: int) -> np.ndarray:
    """Erosion of `mask (h, w)` bool by a `(2d+1)` square (= a 3x3 square `d` times); the
    outside of the array counts as background."""
    side = 2 * d + 1
    padded = np.pad(mask, d).astype(np.int32)
    for axis in (1, 0):  # the square is a row window then a column window
        c = np.cumsum(padded, axis=axis, dtype=np.int32)
        c = np.concatenate([np.zeros_like(c.take([0], axis=axis)), c], axis=axis)
        n = c.shape[axis] - side
        window = c.take(np.arange(side, side + n), axis=axis) - c.take(np.arange(n), axis=axis)
        padded = (window == side).astype(np.int32)
    return padded.astype(bool)


def mask_boundary(mask, dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary region of `mask (h, w)` bool: the mask minus its erosion by a 3x3 square
    `d = boundary_dilation(h, w)` times, the image border counting as outside (so a mask
    cut by the border has a boundary along it). As boundary-iou-api's `mask_to_boundary`."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a rank-2 array (h, w); got shape {mask.shape}")
    d = boundary_dilation(*mask.shape, dilation_ratio)
    out = np.zeros_like(mask)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return out
    # Outside the mask's bounding box everything is background anyway, so eroding the crop
    # with zero padding is exact.
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    out[crop] = mask[crop] & ~_erode(mask[crop], d)
    return out


class _BoundaryCOCOeval(COCOeval):
    """COCOeval whose IoU is boundary-iou-api's `iouType="boundary"`: for every non-crowd
    ground truth `min(mask IoU, Boundary IoU)`, for crowd ground truth the plain (crowd)
    mask IoU; matching, area ranges and accumulation are COCOeval's for masks."""

    def __init__(self, coco_gt, coco_dt, dilation_ratio=0.02):
        super().__init__(coco_gt, coco_dt, "segm")
        self.dilation_ratio = dilation_ratio
        self._boundaries = {}

    def _boundary(self, which: str, ann: dict) -> dict:
        key = (which, ann["id"])
        if key not in self._boundaries:
            edge = mask_boundary(mask_util.decode(ann["segmentation"]).astype(bool),
                                 self.dilation_ratio)
            self._boundaries[key] = mask_util.encode(np.asfortranarray(edge.astype(np.uint8)))
        return self._boundaries[key]

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        mask_ious = super().computeIoU(imgId, catId)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if not gt or not dt:
            return mask_ious
        # The same detections in the same order as COCOeval.computeIoU.
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        crowd = np.array([int(g["iscrowd"]) for g in gt])
        boundary_ious = np.asarray(mask_util.iou(
            [self._boundary("dt", d) for d in dt], [self._boundary("gt", g) for g in gt],
            list(crowd)))
        ious = np.array(mask_ious, np.float64)
        ious[:, crowd == 0] = np.minimum(ious[:, crowd == 0], boundary_ious[:, crowd == 0])
        return ious


# ----------------------------------------------------------------------------- evaluation


def _run(coco_eval: COCOeval, image_ids) -> np.ndarray:
    if image_ids is not None:
        coco_eval.params.imgIds = list(image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats, np.float64)


def evaluate_coco(
    coco_gt: COCO,
    results: List[dict],
    iou_types: Sequence[str] = IOU_TYPES,
    *,
    boundary: bool = False,
    image_ids: Optional[Iterable[int]] = None,
) -> Dict[str, float]:
    """COCO AP of `results` (COCO results format, e.g. `detections_to_coco`) -> flat dict.

    Keys `{t}_AP, {t}_AP50, {t}_AP75, {t}_APs, {t}_APm, {t}_APl` for each `t` in
    `iou_types` ("bbox", "segm"), plus `boundary_AP, boundary_AP50, boundary_AP75` with
    `boundary=True` (Boundary AP: boundary-iou-api's COCO `iouType="boundary"`, dilation
    ratio 0.02; needs "segmentation" in the results). Values are pycocotools' `stats`,
    fractions in [0, 1], with pycocotools' -1.0 kept where an AP is undefined (no ground
    truth of that size, or none at all, in the evaluated images): JSON stays valid, and
    tables print "-" for it. Empty `results` give 0.0 for every key. `image_ids` restricts
    the evaluation to those images (default: all of `coco_gt`); results on other images
    are dropped. COCOeval's printing is suppressed. Mask AP is computed with the mask area
    (any "bbox" is dropped from the segm results, as detectron2 does), so small/medium/large
    use the mask area.
    """
    iou_types = tuple(iou_types)
    if not iou_types or any(t not in IOU_TYPES for t in iou_types) or \
            len(set(iou_types)) != len(iou_types):
        raise ValueError(f"iou_types must be distinct entries of {IOU_TYPES}; got {iou_types}")
    keys = [f"{t}_{s}" for t in iou_types for s in AP_SUFFIXES]
    if boundary:
        keys += list(BOUNDARY_KEYS)
    known = set(coco_gt.getImgIds())
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        unknown = sorted(set(image_ids) - known)
        if unknown:
            raise ValueError(f"image_ids not in coco_gt: {unknown[:10]}")
        keep = set(image_ids)
    else:
        keep = known
    for r in results:
        if r.get("image_id") not in known:
            raise ValueError(f"a result has image_id {r.get('image_id')!r}, not in coco_gt")
    results = [r for r in results if r["image_id"] in keep]
    if not results:
        return {k: 0.0 for k in keys}
    needs_masks = "segm" in iou_types or boundary
    if needs_masks and any("segmentation" not in r for r in results):
        raise ValueError('segm and boundary AP need a "segmentation" (RLE) in every result')

    out: Dict[str, float] = {}
    for iou_type in iou_types:
        # loadRes writes id/area/iscrowd into the dicts: work on copies.
        res = copy.deepcopy(results)
        if iou_type == "segm":
            for r in res:
                r.pop("bbox", None)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(res)
        stats = _run(COCOeval(coco_gt, coco_dt, iou_type), image_ids)
        out.update({f"{iou_type}_{s}": float(v) for s, v in zip(AP_SUFFIXES, stats)})
    if boundary:
        res = copy.deepcopy(results)
        for r in res:
            r.pop("bbox", None)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(res)
        stats = _run(_BoundaryCOCOeval(coco_gt, coco_dt), image_ids)
        out.update({k: float(v) for k, v in zip(BOUNDARY_KEYS, stats)})
    return out


def _percent1(value) -> str:
    if value is None or not np.isfinite(value) or value < 0:
        return "-"
    return f"{100.0 * value:.1f}"


def format_instance_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Side-by-side text table of `evaluate_coco` results, one column per name (e.g.
    "coarse", "pointrend"), rows the AP keys present in any column (in `ALL_KEYS` order,
    then any others), in percent with one decimal; "-" for missing, None, NaN or -1."""
    if not results:
        raise ValueError("results must name at least one result")
    columns = list(results)
    present = [k for c in columns for k in results[c]]
    rows = [k for k in ALL_KEYS if k in present]
    rows += [k for k in dict.fromkeys(present) if k not in rows]
    cells = [[k] + [_percent1(results[c].get(k)) for c in columns] for k in rows]
    return text_table(["metric"] + columns, cells)
