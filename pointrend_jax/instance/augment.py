"""Instance segmentation transforms in NumPy/PIL with static output shapes.

Training (``augment_instances``, or ``InstanceAugment(cfg)`` as grain's random_map): resize
(a shortest-edge length drawn from ``short_side`` as detectron2's ResizeShortestEdge
"choice", capped by ``max_size``; or, with ``short_side`` empty, a random factor in
[min_scale, max_scale]), a random ``crop_size`` window when the resized image is larger,
a horizontal flip (p = 0.5), then zeros padded at the bottom/right up to ``crop_size``.
Instance arrays are padded (or, keeping the largest masks, truncated) to ``max_instances``
with ``valid`` marking the real ones, so every example has the same shapes and batches
stack.

Masks are resized as float (bilinear, PIL's antialiasing when shrinking) and thresholded
at 0.5; the image bilinearly. An instance whose mask is empty after resizing or cropping
is dropped. Boxes follow the json box (scaled, shifted, flipped) unless the crop cuts the
instance: then the box is the tight box of the cropped mask, as detectron2's
``recompute_boxes`` does. A resized box and the tight box of its resized mask agree within
about a pixel; parts thinner than a pixel after shrinking (a sharp tip) can vanish from the
mask while the box still covers them, as when detectron2 rasterises a scaled polygon.

Point supervision (``num_points`` > 0): the example carries point labels instead of masks
(``CocoSource(points=...)``); the points are scaled, shifted and flipped with the boxes, a
point outside the image after the crop is no longer valid, and boxes cut by the crop are
clipped to it (there is no mask to recompute them from).

Evaluation (``prepare_eval_instances``): resize to ``test_short_side`` (None = original
size), pad to a multiple of ``size_divisor``, and report ``scale`` so predictions map back
to the original image.

Deterministic given a ``np.random.Generator`` (grain seeds one per element).

Shapes: H, W input size; h, w = crop_size; M = max_instances; P = num_points.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np
from PIL import Image

from pointrend_jax.data.transforms import padded_size, settings_from_config, shortest_edge_size

# How many instances were cut by the max_instances truncation in this process.
truncation_stats = {"examples": 0, "instances": 0}


@dataclasses.dataclass(frozen=True)
class InstanceAugmentConfig:
    """Instance segmentation transform settings (the keys of ``config.augment``).

    crop_size: (h, w) canvas every training example is cropped/padded to.
    short_side: shortest-edge lengths to draw from (uniformly); empty = use min/max_scale.
    max_size: cap on the longer side after resizing (None = no cap).
    min_scale, max_scale: with short_side empty, a factor of the original size drawn uniformly.
    flip: horizontal flip with probability 0.5.
    max_instances: M, instance arrays padded/truncated to this many.
    test_short_side: evaluation short side (None = keep the original size).
    """

    crop_size: tuple[int, int]
    short_side: tuple[int, ...] = ()
    max_size: int | None = None
    min_scale: float = 1.0
    max_scale: float = 1.0
    flip: bool = True
    max_instances: int = 100
    test_short_side: int | None = None

    def __post_init__(self):
        crop = tuple(int(v) for v in self.crop_size)
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(f"augment crop_size must be (h, w) with positive sizes, got {self.crop_size!r}.")
        object.__setattr__(self, "crop_size", crop)
        short_side = tuple(int(v) for v in self.short_side)
        if any(v < 1 for v in short_side):
            raise ValueError(f"augment short_side must list positive lengths, got {self.short_side!r}.")
        object.__setattr__(self, "short_side", short_side)
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"augment needs 0 < min_scale <= max_scale, got "
                             f"min_scale={self.min_scale}, max_scale={self.max_scale}.")
        for name in ("max_size", "test_short_side"):
            value = getattr(self, name)
            if value is not None:
                if int(value) < 1:
                    raise ValueError(f"augment {name} must be positive or None, got {value}.")
                object.__setattr__(self, name, int(value))
        if int(self.max_instances) < 1:
            raise ValueError(f"augment max_instances must be >= 1, got {self.max_instances}.")
        object.__setattr__(self, "max_instances", int(self.max_instances))
        object.__setattr__(self, "flip", bool(self.flip))

    @classmethod
    def from_config(cls, cfg: Any) -> "InstanceAugmentConfig":
        """From an ml_collections ConfigDict (``config.augment``), a mapping, or an instance."""
        return settings_from_config(cls, cfg)


# --------------------------------------------------------------------------------------
# Pieces.
# --------------------------------------------------------------------------------------


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> (h, w, 3), bilinear."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (M, H, W) 0/1 -> (M, h, w): bilinear on the 0/255 mask, then >= 0.5."""
    if masks.shape[1:] == tuple(size):
        return masks
    out = np.empty((masks.shape[0], *size), np.uint8)
    for k, mask in enumerate(masks):
        grey = Image.fromarray(mask * np.uint8(255)).resize((size[1], size[0]), Image.BILINEAR)
        out[k] = np.asarray(grey) >= 128
    return out


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight (x0, y0, x1, y1) pixel-edge boxes of masks (M, H, W); zeros for empty masks."""
    boxes = np.zeros((masks.shape[0], 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for k in range(masks.shape[0]):
        ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        if ys.size:
            boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def _check_example(example: Mapping[str, Any], with_masks: bool = True):
    """(image, masks uint8 or None without ``with_masks``, boxes, classes) of an example."""
    image = np.asarray(example["image"])
    masks = np.asarray(example["masks"]).astype(np.uint8, copy=False) if with_masks else None
    boxes = np.asarray(example["boxes"], np.float32).reshape(-1, 4)
    classes = np.asarray(example["classes"], np.int32).reshape(-1)
    num = boxes.shape[0]
    if (image.dtype != np.uint8 or image.ndim != 3 or classes.shape != (num,)
            or (with_masks and masks.shape != (num, *image.shape[:2]))):
        got = f", masks {masks.shape}" if with_masks else ""
        raise ValueError(f"instance transforms expect image uint8 (H, W, 3),"
                         f"{' masks (M, H, W),' if with_masks else ''} boxes (M, 4), classes (M,); "
                         f"got image {image.dtype} {image.shape}{got}, boxes {boxes.shape}, "
                         f"classes {classes.shape}.")
    return image, masks, boxes, classes


def _truncate(instances: dict[str, np.ndarray], areas: np.ndarray, max_instances: int):
    """Keeps the ``max_instances`` instances (rows of every array) of the largest ``areas``
    (in their original order)."""
    num = areas.shape[0]
    if num <= max_instances:
        return instances
    keep = np.sort(np.argsort(-areas, kind="stable")[:max_instances])
    truncation_stats["examples"] += 1
    truncation_stats["instances"] += num - max_instances
    if truncation_stats["examples"] == 1:
        logging.warning("instance augment: an example has %d instances, more than max_instances=%d; "
                        "keeping the largest (counted in instance_augment.truncation_stats).",
                        num, max_instances)
    return {key: value[keep] for key, value in instances.items()}


def _pad_instances(masks, boxes, classes, max_instances: int, canvas: tuple[int, int] | None):
    """Instance arrays padded to M (and masks to the canvas) with a ``valid`` flag."""
    num = boxes.shape[0]
    out = {
        "boxes": np.zeros((max_instances, 4), np.float32),
        "classes": np.zeros((max_instances,), np.int32),
        "valid": np.zeros((max_instances,), bool),
    }
    out["boxes"][:num] = boxes
    out["classes"][:num] = classes
    out["valid"][:num] = True
    if canvas is not None:
        out["masks"] = np.zeros((max_instances, *canvas), np.uint8)
        out["masks"][:num, :masks.shape[1], :masks.shape[2]] = masks
    return out


def _pad_image(image: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*canvas, 3), np.uint8)
    out[:image.shape[0], :image.shape[1]] = image
    return out


def _scale_boxes(boxes: np.ndarray, sy: float, sx: float) -> np.ndarray:
    return boxes * np.asarray([sx, sy, sx, sy], np.float32)


# --------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------


def _train_size(height: int, width: int, rng: np.random.Generator, cfg: InstanceAugmentConfig):
    if cfg.short_side:
        short = cfg.short_side[int(rng.integers(len(cfg.short_side)))]
        return shortest_edge_size(height, width, short, cfg.max_size)
    scale = rng.uniform(cfg.min_scale, cfg.max_scale)
    if cfg.max_size is not None:
        scale = min(scale, cfg.max_size / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _take_points(example: Mapping[str, Any], num_points: int, rng: np.random.Generator):
    """``num_points`` = P point labels per instance of an example with ``point_coords`` (M, Q,
    2), ``point_labels`` (M, Q), ``point_valid`` (M, Q): all of an instance's points in order when
    it has P, else P of them drawn without replacement, or with replacement when it has fewer
    (PointSup's SAMPLE_POINTS). -> coords float32 (M, P, 2), labels float32 (M, P), valid bool
    (M, P) (an instance without points gets none valid)."""
    absent = [k for k in ("point_coords", "point_labels", "point_valid") if k not in example]
    if absent:
        raise ValueError(f"instance transforms with num_points={num_points} (point supervision) "
                         f"expect point_coords, point_labels and point_valid in the example "
                         f"(CocoSource(points=...)); it lacks {', '.join(absent)}.")
    coords = np.asarray(example["point_coords"], np.float32)
    labels = np.asarray(example["point_labels"], np.float32)
    valid = np.asarray(example["point_valid"], bool)
    num = len(example["boxes"])
    if coords.shape != (num, valid.shape[-1], 2) or labels.shape != valid.shape or valid.shape[0] != num:
        raise ValueError(f"instance point labels must be point_coords (M, Q, 2), point_labels and "
                         f"point_valid (M, Q) for the M={num} boxes; got {coords.shape}, "
                         f"{labels.shape}, {valid.shape}.")
    out = (np.zeros((num, num_points, 2), np.float32), np.zeros((num, num_points), np.float32),
           np.zeros((num, num_points), bool))
    for k in range(num):
        index = np.flatnonzero(valid[k])
        if not index.size:
            continue
        if index.size != num_points:
            index = rng.choice(index, num_points, replace=index.size < num_points)
        out[0][k], out[1][k], out[2][k] = coords[k, index], labels[k, index], True
    return out


def augment_instances(example: Mapping[str, Any], rng: np.random.Generator,
                      cfg: InstanceAugmentConfig | Any, num_points: int = 0) -> dict[str, np.ndarray]:
    """Resize, crop, flip, pad one example to fixed shapes.

    Returns {"image" uint8 (h, w, 3), "boxes" float32 (M, 4) xyxy pixels, "classes" int32
    (M,), "masks" uint8 (M, h, w), "valid" bool (M,), "image_size" int32 (2,) = (height,
    width) of the content inside the padded canvas}. Padded rows are zero (class 0, not valid).

    With ``num_points`` = P > 0 (point supervision) the example has point labels instead of
    masks (``CocoSource(points=...)``); P per instance are taken (``_take_points``), moved with
    the image as the boxes are, and the result has "point_coords" float32 (M, P, 2) (x, y)
    pixels, "point_labels" float32 (M, P) 0/1 and "point_valid" bool (M, P) in place of
    "masks"; a point outside the image after the crop is not valid (PointSup marks it
    unlabelled). Without masks, a box cut by the crop is clipped to it, an instance is dropped
    when its box is empty, and the truncation keeps the largest boxes.
    """
    cfg = InstanceAugmentConfig.from_config(cfg)
    image, masks, boxes, classes = _check_example(example, with_masks=not num_points)
    if num_points:
        instances = dict(zip(("point_coords", "point_labels", "point_valid"),
                             _take_points(example, num_points, rng)))
    else:
        instances = {"masks": masks}
    instances["classes"] = classes
    height, width = image.shape[:2]
    new_h, new_w = _train_size(height, width, rng, cfg)
    image = resize_image(image, (new_h, new_w))
    boxes = _scale_boxes(boxes, new_h / height, new_w / width)
    if num_points:
        scale = np.asarray([new_w / width, new_h / height], np.float32)
        instances["point_coords"] = instances["point_coords"] * scale
    else:
        instances["masks"] = resize_masks(instances["masks"], (new_h, new_w))

    crop_h, crop_w = cfg.crop_size
    y0 = int(rng.integers(0, new_h - crop_h + 1)) if new_h > crop_h else 0
    x0 = int(rng.integers(0, new_w - crop_w + 1)) if new_w > crop_w else 0
    out_h, out_w = min(new_h, crop_h), min(new_w, crop_w)
    if (out_h, out_w) != (new_h, new_w):
        image = image[y0:y0 + out_h, x0:x0 + out_w]
        boxes = boxes - np.asarray([x0, y0, x0, y0], np.float32)
        if num_points:
            instances["point_coords"] = instances["point_coords"] - np.asarray([x0, y0], np.float32)
        else:
            masks = instances["masks"] = instances["masks"][:, y0:y0 + out_h, x0:x0 + out_w]
            cut = ((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > out_w) | (boxes[:, 3] > out_h))
            if cut.any():
                boxes[cut] = mask_boxes(masks[cut])
    instances["boxes"] = boxes = np.clip(boxes, 0, np.asarray([out_w, out_h, out_w, out_h], np.float32))
    if num_points:
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    else:
        keep = instances["masks"].any(axis=(1, 2))
    instances = {key: value[keep] for key, value in instances.items()}

    if rng.random() < 0.5 and cfg.flip:
        image = image[:, ::-1]
        boxes = instances["boxes"]
        instances["boxes"] = np.stack([out_w - boxes[:, 2], boxes[:, 1], out_w - boxes[:, 0], boxes[:, 3]],
                                      axis=1)
        if num_points:
            xy = instances["point_coords"]
            instances["point_coords"] = np.stack([out_w - xy[..., 0], xy[..., 1]], axis=-1)
        else:
            instances["masks"] = instances["masks"][:, :, ::-1]

    if num_points:
        xy = instances["point_coords"]
        instances["point_valid"] &= ((xy[..., 0] >= 0) & (xy[..., 0] <= out_w)
                                     & (xy[..., 1] >= 0) & (xy[..., 1] <= out_h))
        boxes = instances["boxes"]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    else:
        areas = instances["masks"].sum(axis=(1, 2), dtype=np.int64)
    instances = _truncate(instances, areas, cfg.max_instances)
    out = {"image": _pad_image(image, cfg.crop_size)}
    out.update(_pad_instances(instances.get("masks"), instances["boxes"], instances["classes"],
                              cfg.max_instances, None if num_points else cfg.crop_size))
    if num_points:
        num = instances["boxes"].shape[0]
        for key, shape in (("point_coords", (num_points, 2)), ("point_labels", (num_points,)),
                           ("point_valid", (num_points,))):
            out[key] = np.zeros((cfg.max_instances, *shape), instances[key].dtype)
            out[key][:num] = instances[key]
    out["image_size"] = np.asarray([out_h, out_w], np.int32)
    return out


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """0/1 masks ``(..., H, W)`` -> bits ``(..., H, ceil(W / 8))`` uint8, 8 pixels a byte
    along W, the first in the highest bit (``np.packbits(axis=-1)``), the layout the model's
    ground-truth gathers read: a training batch carries its masks 8x smaller."""
    return np.packbits(np.asarray(masks, bool), axis=-1)


class InstanceAugment:
    """``augment_instances`` as grain's random_map transform (a class, so it pickles), with
    the masks bit-packed: ``"mask_bits"`` uint8 (M, h, ceil(w / 8)) replaces ``"masks"``; with
    ``num_points`` > 0 the point labels of point supervision instead (no masks)."""

    def __init__(self, cfg: InstanceAugmentConfig | Any, num_points: int = 0):
        self.cfg = InstanceAugmentConfig.from_config(cfg)
        if int(num_points) < 0:
            raise ValueError(f"InstanceAugment num_points must be >= 0, got {num_points}.")
        self.num_points = int(num_points)

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = augment_instances(example, rng, self.cfg, self.num_points)
        if not self.num_points:
            out["mask_bits"] = pack_masks(out.pop("masks"))
        return out

    def __repr__(self) -> str:
        points = f", num_points={self.num_points}" if self.num_points else ""
        return f"InstanceAugment({self.cfg!r}{points})"


# --------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------


def eval_size(height: int, width: int, cfg: InstanceAugmentConfig) -> tuple[int, int]:
    """(h, w) an image of (height, width) is resized to for evaluation."""
    if cfg.test_short_side is None:
        return height, width
    return shortest_edge_size(height, width, cfg.test_short_side, cfg.max_size)


def prepare_eval_instances(example: Mapping[str, Any], cfg: InstanceAugmentConfig | Any,
                           size_divisor: int, *, with_masks: bool = False) -> dict[str, Any]:
    """Deterministic evaluation input.

    Returns {"image" uint8 (h', w', 3) padded to multiples of ``size_divisor``, "boxes"
    float32 (M, 4) (scaled json boxes), "classes" int32 (M,), "valid" bool (M,),
    "image_size" int32 (2,) (resized height, width), "scale" float32 (2,) (y, x factors
    original -> resized: original = resized / scale)}, plus "masks" uint8 (M, h', w') with
    ``with_masks``, and "image_id"/"stem" copied from the example when present.
    """
    cfg = InstanceAugmentConfig.from_config(cfg)
    size_divisor = max(int(size_divisor), 1)
    image = np.asarray(example["image"])
    height, width = image.shape[:2]
    new_h, new_w = eval_size(height, width, cfg)
    canvas = padded_size(new_h, new_w, size_divisor)
    out: dict[str, Any] = {"image": _pad_image(resize_image(image, (new_h, new_w)), canvas)}
    if "boxes" in example:
        image, masks, boxes, classes = _check_example(example) if with_masks else (
            image, None, np.asarray(example["boxes"], np.float32).reshape(-1, 4),
            np.asarray(example["classes"], np.int32).reshape(-1))
        boxes = _scale_boxes(boxes, new_h / height, new_w / width)
        if masks is not None:
            masks = resize_masks(masks, (new_h, new_w))
        else:  # truncation by area needs masks; by box area otherwise
            masks = np.zeros((boxes.shape[0], 0, 0), np.uint8)
        if boxes.shape[0] > cfg.max_instances:
            order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
            keep = np.sort(order[:cfg.max_instances])
            masks, boxes, classes = masks[keep], boxes[keep], classes[keep]
        out.update(_pad_instances(masks, boxes, classes, cfg.max_instances, canvas if with_masks else None))
    out["image_size"] = np.asarray([new_h, new_w], np.int32)
    out["scale"] = np.asarray([new_h / height, new_w / width], np.float32)
    for key in ("image_id", "stem"):
        if key in example:
            out[key] = example[key]
    return out
