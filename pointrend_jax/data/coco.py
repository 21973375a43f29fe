"""COCO-format instance segmentation data: a random-access source over an instances json.

What labelling tools export, and COCO 2017 itself (``instances_train2017.json`` with the
``train2017/`` folder of images). ``CocoSource(images_dir, json_path)`` checks the json once,
at construction, without decoding any image:

* structural problems raise one ``DataError`` naming the json file and the offending image or
  annotation id: the json is unreadable or not COCO-format (no ``images``/``annotations``/
  ``categories`` lists), a record lacks a required key, ids are duplicated, the images folder
  is missing, or image files listed in the json are missing on disk;
* bad individual annotations are skipped, counted in ``source.skipped`` and reported in ONE
  ``logging.warning``: unknown image id, category not in ``categories``, no segmentation, a
  degenerate polygon (< 3 points or zero area), a malformed RLE (size not the image's, counts
  not summing to H * W), a box with non-positive width/height or entirely outside the image;
* crowd annotations (``iscrowd=1``) are not training targets: they are dropped from the
  examples (counted in ``skipped["crowd"]``) but kept in ``coco_gt()``, where COCOeval uses
  them as "ignore" regions.

Categories are mapped to contiguous classes ``0..K-1`` in the order of their category ids:
``class_names[k]`` is the name and ``category_ids[k]`` the json id of class ``k``.

``source[i]`` -> ``{"image": uint8 (H, W, 3) RGB, "boxes": float32 (M, 4) (x0, y0, x1, y1)
pixels, "classes": int32 (M,), "masks": uint8 (M, H, W) 0/1, "image_id": int, "stem": str}``
with M >= 0 (images without instances are kept). Boxes are the json ``bbox`` (x, y, w, h)
converted to corners and clipped to the image; masks are decoded with pycocotools from
polygons (several parts merged), uncompressed RLE (a counts list) or compressed RLE.

With ``points`` (point supervision, see ``point_labels.py``) the examples carry point labels
instead of masks: ``"json"`` reads PointSup's ``point_coords``/``point_labels`` of every
non-crowd annotation (``segmentation`` is then optional and never decoded; malformed point
fields raise a ``DataError`` naming the file and annotation id), ``"masks"`` samples
``num_points`` per instance from its mask by PointSup's rule, seeded by ``point_seed`` and the
annotation's position in the json. ``source[i]`` then has, in place of ``"masks"``,
``"point_coords"`` float32 (M, Q, 2) (x, y) pixel-centre coordinates (indices + 0.5),
``"point_labels"`` uint8 (M, Q) 0/1 and ``"point_valid"`` bool (M, Q) (False pads the
instances with fewer than Q points; Q = the most points of an instance on the image).

Shapes: H, W image height and width; M instances kept on the image.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import numbers
import os
import pathlib
import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from pointrend_jax.data.files import DataError, read_image, report
from pointrend_jax.data.point_labels import check_point_fields, point_rng, sample_box_points

# pycocotools 2.0.11 decodes through an __array__ that predates NumPy 2's copy keyword; the
# result is right, the DeprecationWarning it triggers on every decode is only noise.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                        category=DeprecationWarning, module="pycocotools")

# COCO 2017's 80 thing classes in category-id order: class k of a model trained on
# instances_train2017.json (the class order of detectron2's COCO models).
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")

# Reasons an annotation is left out of the examples (keys of ``CocoSource.skipped``), with the
# words used in the warning.
SKIP_REASONS = {
    "unknown_image_id": "unknown image id",
    "unknown_category": "unknown category id",
    "no_segmentation": "without segmentation",
    "degenerate_polygon": "degenerate polygon",
    "bad_rle": "malformed RLE",
    "bad_box": "box with non-positive width/height",
    "box_outside_image": "box outside the image",
    "crowd": "crowd (iscrowd=1, not a training target)",
}
_SHOWN_IDS = 5  # annotation ids listed per reason in the warning

POINT_SOURCES = ("json", "masks")  # where CocoSource's point labels come from

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")
_CATEGORY_KEYS = ("id", "name")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _polygon_area(flat: list[float]) -> float:
    """Area of a polygon given as [x0, y0, x1, y1, ...] (shoelace)."""
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _check_segmentation(seg: Any, height: int, width: int) -> tuple[str | None, Any]:
    """(skip reason or None, the segmentation to decode). Polygon parts that are degenerate
    are dropped; the annotation is skipped when none is left."""
    if seg is None or (isinstance(seg, (list, dict)) and not seg):
        return "no_segmentation", None
    if isinstance(seg, list):  # polygons
        parts = []
        for part in seg:
            if (isinstance(part, (list, tuple)) and len(part) >= 6 and len(part) % 2 == 0
                    and all(_is_number(v) for v in part) and _polygon_area(part) > 0):
                parts.append([float(v) for v in part])
        return (None, parts) if parts else ("degenerate_polygon", None)
    if isinstance(seg, dict):  # RLE
        counts, size = seg.get("counts"), seg.get("size")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or [int(v) if _is_number(v) else None for v in size] != [height, width]):
            return "bad_rle", None
        if isinstance(counts, list):
            if not all(isinstance(c, numbers.Integral) and c >= 0 for c in counts) or sum(counts) != height * width:
                return "bad_rle", None
            return None, seg
        if isinstance(counts, (str, bytes)) and counts:
            return None, seg
        return "bad_rle", None
    return "no_segmentation", None


def to_rle(seg: Any, height: int, width: int) -> dict[str, Any]:
    """A checked segmentation (polygon parts, uncompressed or compressed RLE) as compressed RLE."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    return seg


def decode_segmentations(segs: list[Any], height: int, width: int) -> np.ndarray:
    """Checked segmentations as uint8 (M, H, W) 0/1 masks."""
    if not segs:
        return np.zeros((0, height, width), np.uint8)
    masks = mask_utils.decode([to_rle(seg, height, width) for seg in segs])  # (H, W, M), Fortran order
    return np.ascontiguousarray(np.asarray(masks, dtype=np.uint8).transpose(2, 0, 1))


class CocoSource:
    """Random access to a COCO-format instances json: ``source[i]`` -> example dict.

    Attributes:
      json_path, images_dir, split_name: what it reads.
      category_ids: the json's category ids; contiguous class k is category ``category_ids[k]``.
      skipped: {reason: count} of annotations left out (see ``SKIP_REASONS``).
      image_ids: the json's image ids in index order.
      points, num_points, point_seed: the point labels read (None: masks; see the module).
      num_filtered_empty: images left out by ``filter_empty`` (no non-crowd annotation).
    """

    def __init__(self, images_dir: str, json_path: str, *, split_name: str = "train",
                 points: str | None = None, num_points: int = 0, point_seed: int = 0,
                 filter_empty: bool = False):
        self.images_dir = pathlib.Path(images_dir)
        self.json_path = pathlib.Path(json_path)
        self.split_name = split_name
        if points is not None and points not in POINT_SOURCES:
            raise ValueError(f"CocoSource points={points!r} is not one of {[None, *POINT_SOURCES]}.")
        if points == "masks" and int(num_points) < 1:
            raise ValueError(f"CocoSource points='masks' needs num_points >= 1, got {num_points}.")
        self.points, self.num_points, self.point_seed = points, int(num_points), int(point_seed)
        if not self.json_path.is_file():
            raise DataError(f"{self.json_path}: no such file (the COCO-format json of split {split_name!r}).")
        if not self.images_dir.is_dir():
            raise DataError(f"{self.json_path}: its images folder {self.images_dir} does not exist "
                            f"(split {split_name!r}).")
        try:
            with open(self.json_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{self.json_path}: cannot read it as JSON: {err}") from err
        if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                                  for k in ("images", "annotations", "categories")):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{self.json_path} is not a COCO-format instances json: expected an object "
                            f"with lists 'images', 'annotations' and 'categories', found {found}.")

        # Categories -> contiguous classes in the order of their ids.
        categories = {}
        for index, cat in enumerate(data["categories"]):
            self._require(cat, _CATEGORY_KEYS, f"category #{index}")
            if cat["id"] in categories:
                raise DataError(f"{self.json_path}: category id {cat['id']} is listed twice.")
            categories[cat["id"]] = cat
        if not categories:
            raise DataError(f"{self.json_path}: 'categories' is empty; list at least one category.")
        self.category_ids = sorted(categories)
        self._class_names = [str(categories[c]["name"]) for c in self.category_ids]
        self._categories = [dict(categories[c]) for c in self.category_ids]
        class_of = {cat_id: k for k, cat_id in enumerate(self.category_ids)}

        # Images, in the json's order.
        self._images: list[dict[str, Any]] = []
        index_of: dict[Any, int] = {}
        missing = []
        for index, img in enumerate(data["images"]):
            what = f"image id {img['id']}" if isinstance(img, dict) and "id" in img else f"image #{index}"
            self._require(img, _IMAGE_KEYS, what)
            if img["id"] in index_of:
                raise DataError(f"{self.json_path}: image id {img['id']} is listed twice "
                                f"({img['file_name']!r} and {self._images[index_of[img['id']]]['file_name']!r}).")
            height, width = img["height"], img["width"]
            if not (isinstance(height, numbers.Integral) and isinstance(width, numbers.Integral)
                    and height > 0 and width > 0):
                raise DataError(f"{self.json_path}: image id {img['id']} has height={height!r}, "
                                f"width={width!r}; expected positive integers.")
            path = self.images_dir / str(img["file_name"])
            if not os.path.exists(path):
                missing.append(f"image id {img['id']}: {path}")
            index_of[img["id"]] = len(self._images)
            self._images.append({"id": img["id"], "file_name": str(img["file_name"]),
                                 "height": int(height), "width": int(width)})
        if missing:
            raise DataError(report(f"{self.json_path}: image files listed in the json are missing "
                                    f"under {self.images_dir}", missing))

        # Annotations: kept ones per image; crowd ones for coco_gt; the rest skipped and counted.
        self._annotations: list[list[dict[str, Any]]] = [[] for _ in self._images]
        self._crowd: list[dict[str, Any]] = []
        skipped_ids: dict[str, list[Any]] = {reason: [] for reason in SKIP_REASONS}
        seen_ann_ids = set()
        for index, ann in enumerate(data["annotations"]):
            what = f"annotation id {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotation #{index}"
            self._require(ann, _ANN_KEYS, what)
            if ann["id"] in seen_ann_ids:
                raise DataError(f"{self.json_path}: annotation id {ann['id']} is listed twice.")
            seen_ann_ids.add(ann["id"])
            reason, kept = self._check_annotation(ann, index_of, class_of)
            if reason is not None:
                skipped_ids[reason].append(ann["id"])
            elif kept.get("iscrowd"):
                skipped_ids["crowd"].append(ann["id"])
                self._crowd.append(kept)
            else:
                kept["position"] = index  # seeds the points sampled from its mask
                if self.points == "json":
                    image = self._images[index_of[ann["image_id"]]]
                    try:
                        kept["points"] = check_point_fields(ann, image["height"], image["width"])
                    except ValueError as err:
                        raise DataError(f"{self.json_path}: {what} {err}.") from None
                self._annotations[index_of[ann["image_id"]]].append(kept)
        self.skipped: dict[str, int] = {reason: len(ids) for reason, ids in skipped_ids.items()}
        summary = self._skip_summary(skipped_ids)
        if summary:
            logging.warning("%s", summary)
        # detectron2's DATALOADER.FILTER_EMPTY_ANNOTATIONS: only images with a non-crowd instance.
        self.num_filtered_empty = 0
        if filter_empty:
            keep = [i for i, anns in enumerate(self._annotations) if anns]
            self.num_filtered_empty = len(self._images) - len(keep)
            if not keep:
                raise DataError(f"{self.json_path}: no image has a non-crowd annotation, so "
                                "--config.data.filter_empty_annotations leaves nothing to train on.")
            self._images = [self._images[i] for i in keep]
            self._annotations = [self._annotations[i] for i in keep]
            if self.num_filtered_empty:
                logging.info("%s: %d of %d images without a non-crowd instance left out "
                             "(data.filter_empty_annotations)", self.json_path.name,
                             self.num_filtered_empty, self.num_filtered_empty + len(keep))

    # ----------------------------------------------------------------------------------
    # Validation.
    # ----------------------------------------------------------------------------------

    def _require(self, record: Any, keys: tuple[str, ...], what: str) -> None:
        if not isinstance(record, dict):
            raise DataError(f"{self.json_path}: {what} is a {type(record).__name__}, expected an object.")
        absent = [k for k in keys if k not in record]
        if absent:
            raise DataError(f"{self.json_path}: {what} lacks the key(s) {', '.join(absent)} "
                            f"(COCO-format records need {', '.join(keys)}).")

    def _check_annotation(self, ann: dict[str, Any], index_of: dict[Any, int],
                          class_of: dict[Any, int]) -> tuple[str | None, dict[str, Any] | None]:
        """(skip reason, None) or (None, the kept annotation with its box clipped)."""
        if ann["image_id"] not in index_of:
            return "unknown_image_id", None
        if ann["category_id"] not in class_of:
            return "unknown_category", None
        image = self._images[index_of[ann["image_id"]]]
        height, width = image["height"], image["width"]
        seg = None
        if self.points != "json":  # point labels need no mask
            reason, seg = _check_segmentation(ann.get("segmentation"), height, width)
            if reason is not None:
                return reason, None
        bbox = ann["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            return "bad_box", None
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            return "bad_box", None
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        if x1 <= x0 or y1 <= y0:
            return "box_outside_image", None
        iscrowd = int(bool(ann.get("iscrowd", 0)))
        area = ann.get("area")
        if not _is_number(area):
            area = None  # filled in by coco_gt from the mask
        return None, {"id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"],
                      "class": class_of[ann["category_id"]], "box": (x0, y0, x1, y1), "bbox": [x, y, w, h],
                      "segmentation": seg, "iscrowd": iscrowd, "area": area}

    def _skip_summary(self, skipped_ids: dict[str, list[Any]]) -> str:
        def listed(ids):
            shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS])
            more = f", ... {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
            return f"(ann {shown}{more})"

        bad = {r: ids for r, ids in skipped_ids.items() if ids and r != "crowd"}
        parts = []
        if bad:
            total = sum(len(ids) for ids in bad.values())
            parts.append(f"skipped {total} annotation{'s' if total != 1 else ''}: " + ", ".join(
                f"{len(ids)} {SKIP_REASONS[r]} {listed(ids)}" for r, ids in bad.items()))
        crowd = skipped_ids["crowd"]
        if crowd:
            parts.append(f"dropped {len(crowd)} crowd annotation{'s' if len(crowd) != 1 else ''} "
                         f"(iscrowd=1, not training targets)")
        return f"{self.json_path.name}: " + "; ".join(parts) if parts else ""

    # ----------------------------------------------------------------------------------
    # Access.
    # ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self._images[index]
        path = self.images_dir / info["file_name"]
        image = read_image(path, str(path))
        height, width = info["height"], info["width"]
        if image.shape[:2] != (height, width):
            raise DataError(f"Image {path} is {image.shape[1]}x{image.shape[0]} (WxH) but "
                            f"{self.json_path} (image id {info['id']}) says {width}x{height}.")
        anns = self._annotations[index]
        example = {
            "image": image,
            "boxes": np.asarray([a["box"] for a in anns], np.float32).reshape(len(anns), 4),
            "classes": np.asarray([a["class"] for a in anns], np.int32),
            "image_id": int(info["id"]) if isinstance(info["id"], numbers.Integral) else info["id"],
            "stem": pathlib.PurePath(info["file_name"]).stem,
        }
        if self.points == "json":
            example.update(_pad_points([a["points"] for a in anns]))
            return example
        masks = decode_segmentations([a["segmentation"] for a in anns], height, width)
        if self.points == "masks":
            example.update(_pad_points([
                sample_box_points(mask, a["box"], self.num_points,
                                  point_rng(self.point_seed, a["position"]))
                for mask, a in zip(masks, anns)]))
        else:
            example["masks"] = masks
        return example

    def __getitems__(self, indices) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]

    @property
    def class_names(self) -> list[str]:
        """Category names in the order of category id (class k = ``category_ids[k]``)."""
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def image_ids(self) -> list[Any]:
        """The json's image ids in index order."""
        return [img["id"] for img in self._images]

    def coco_gt(self):
        """The validated ground truth as a ``pycocotools.coco.COCO`` (for COCOeval).

        Holds every image, the categories, the kept annotations and the crowd ones (COCOeval
        ignores detections on crowd regions); skipped annotations are left out. Segmentations
        are stored as pycocotools decodes them (polygon parts, RLE), ``area`` is the json's or,
        when absent, the mask area.
        """
        from pycocotools.coco import COCO

        if self.points == "json":
            raise DataError(f"{self.json_path} is read for its point labels only (points='json'), "
                            f"without masks: evaluate against a json with masks.")
        anns = []
        images = {img["id"]: img for img in self._images}
        for ann in [a for per_image in self._annotations for a in per_image] + self._crowd:
            img = images[ann["image_id"]]
            seg = copy.deepcopy(ann["segmentation"])
            area = ann["area"]
            if area is None:
                area = float(mask_utils.area(to_rle(seg, img["height"], img["width"])))
            anns.append({"id": ann["id"], "image_id": ann["image_id"], "category_id": ann["category_id"],
                         "bbox": list(ann["bbox"]), "segmentation": seg, "area": float(area),
                         "iscrowd": ann["iscrowd"]})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt = COCO()
        gt.dataset = {"images": [dict(img) for img in self._images], "annotations": anns,
                      "categories": [dict(cat) for cat in self._categories]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt

    def __repr__(self) -> str:
        points = "" if self.points is None else f", points={self.points!r}"
        return (f"CocoSource(images_dir={str(self.images_dir)!r}, json_path={str(self.json_path)!r}, "
                f"split_name={self.split_name!r}{points}, len={len(self)})")


def _pad_points(per_instance: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """[(pixel indices (Q_i, 2), labels (Q_i,))] -> ``point_coords`` float32 (M, Q, 2) pixel
    centres (indices + 0.5), ``point_labels`` uint8 (M, Q), ``point_valid`` bool (M, Q)."""
    count = max((len(labels) for _, labels in per_instance), default=0)
    out = {"point_coords": np.zeros((len(per_instance), count, 2), np.float32),
           "point_labels": np.zeros((len(per_instance), count), np.uint8),
           "point_valid": np.zeros((len(per_instance), count), bool)}
    for k, (coords, labels) in enumerate(per_instance):
        out["point_coords"][k, :len(labels)] = np.asarray(coords, np.float32) + 0.5
        out["point_labels"][k, :len(labels)] = labels
        out["point_valid"][k, :len(labels)] = True
    return out
