"""SyntheticInstances: an instance segmentation set the project draws itself (no download).

The pictures are those of ``synthetic.py`` (textured, noisy backgrounds; the same shape
drawers), but every shape is one instance of its class:

  category 1 blob      filled ellipses and wobbly round blobs
  category 2 polygon   filled star-shaped polygons
  category 3 ring      elliptical rings 2-6 px thick

(no thin curves: a 1-3 px stroke is a poor box target). An image has 2-8 shapes, drawn one
over the other; an instance's mask is its VISIBLE part (what later shapes leave of it), and
an instance with fewer than ``MIN_VISIBLE_AREA`` visible pixels is dropped. About 3% of the
images have no shapes at all.

The set is written to disk once, in COCO format, and read back through ``CocoSource``::

  {data_dir}/synthetic_instances/{key}/train/train_000000.png ...
  {data_dir}/synthetic_instances/{key}/train.json              (compressed RLE, bbox, area)
  {data_dir}/synthetic_instances/{key}/val/...  and  val.json

``key`` names the parameters (counts, size, seed), so different sizes do not clash. It is
written into a temporary folder and renamed into place under a file lock, so concurrent
processes wait for the first and a crashed preparation leaves nothing half-written behind.
Every example is drawn from its own seed ``(seed, split, index)``: deterministic.

Shapes: H, W image height and width (``image_size`` x ``image_size``); M instances.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pointrend_jax.data import synthetic
from pointrend_jax.data.coco import CocoSource

CLASS_NAMES = ["blob", "polygon", "ring"]
_KINDS = (synthetic.BLOB, synthetic.POLYGON, synthetic.RING)  # synthetic.py's drawer ids
VERSION = "1"  # part of the folder name: bump when the drawing changes

DEFAULT_NUM_TRAIN = synthetic.DEFAULT_NUM_TRAIN
DEFAULT_NUM_VAL = synthetic.DEFAULT_NUM_VAL
DEFAULT_IMAGE_SIZE = synthetic.DEFAULT_IMAGE_SIZE
DEFAULT_SEED = synthetic.DEFAULT_SEED

MIN_INSTANCES, MAX_INSTANCES = 2, 8
EMPTY_FRACTION = 0.03  # images drawn without any shape
MIN_VISIBLE_AREA = 16  # pixels; less visible than this and the instance is dropped
SPLITS = ("train", "val")


def default_data_dir() -> pathlib.Path:
    """Where synthetic.py's tfds data goes by default: $TFDS_DATA_DIR or ~/tensorflow_datasets."""
    from tensorflow_datasets.core import constants

    return pathlib.Path(constants.DATA_DIR)


def render_instances(rng: np.random.Generator, size: int = DEFAULT_IMAGE_SIZE):
    """Draws one picture.

    Returns image uint8 (H, W, 3), masks uint8 (M, H, W) 0/1 (visible parts, each at least
    MIN_VISIBLE_AREA pixels) and classes int32 (M,) in 0..2 (index into CLASS_NAMES).
    """
    mix = 0.5 + 0.5 * synthetic._smooth_field(rng, size, int(rng.integers(3, 7)))
    c0, c1 = rng.uniform(0, 255, (2, 3))
    canvas = c0 + mix[..., None] * (c1 - c0)
    canvas += 25.0 * synthetic._smooth_field(rng, size, int(rng.integers(12, 24)))[..., None]
    owner = np.zeros((size, size), np.int32)  # 0 background, k + 1 = drawn shape k on top here
    classes = []
    count = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(MIN_INSTANCES, MAX_INSTANCES + 1))
    for _ in range(count):
        cls = int(rng.integers(len(_KINDS)))
        drawn = synthetic._DRAWERS[_KINDS[cls]](rng, size)
        if drawn is None:
            continue
        (y0, y1, x0, x1), dist = drawn
        inside = dist <= 0.0
        if not inside.any():
            continue
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        ys, xs = synthetic._grid((y0, y1, x0, x1))
        shade = rng.uniform(-0.2, 0.2, 2)
        fill = synthetic._shape_colour(rng, _KINDS[cls]) * (
            1.0 + shade[0] * (ys - y0) / size + shade[1] * (xs - x0) / size)[..., None]
        region = canvas[y0:y1, x0:x1]
        region += alpha * (fill - region)
        classes.append(cls)
        owner[y0:y1, x0:x1][inside] = len(classes)
    canvas += rng.normal(0.0, rng.uniform(3.0, 12.0), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = (owner[None] == np.arange(1, len(classes) + 1)[:, None, None]).astype(np.uint8)
    keep = masks.sum(axis=(1, 2)) >= MIN_VISIBLE_AREA
    return image, masks[keep], np.asarray(classes, np.int32)[keep]


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel edges of a non-empty 0/1 mask: columns x0..x1-1, rows y0..y1-1."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def make_instance_example(split: str, index: int, *, seed: int = DEFAULT_SEED,
                          image_size: int = DEFAULT_IMAGE_SIZE) -> dict[str, Any]:
    """Example ``index`` of ``split`` as drawn: image, masks, classes, boxes (xyxy), stem."""
    image, masks, classes = render_instances(synthetic.example_rng(seed, split, index), image_size)
    boxes = np.asarray([tight_box(m) for m in masks], np.float32).reshape(len(masks), 4)
    return {"image": image, "masks": masks, "classes": classes, "boxes": boxes,
            "stem": f"{split}_{index:06d}"}


def dataset_key(*, num_train: int, num_val: int, image_size: int, seed: int) -> str:
    return f"v{VERSION}_train{num_train}_val{num_val}_size{image_size}_seed{seed}"


def _write_split(folder: pathlib.Path, split: str, count: int, *, seed: int, image_size: int) -> None:
    (folder / split).mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        ex = make_instance_example(split, index, seed=seed, image_size=image_size)
        file_name = f"{ex['stem']}.png"
        Image.fromarray(ex["image"]).save(folder / split / file_name, compress_level=1)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
        if not len(ex["masks"]):
            continue
        rles = mask_utils.encode(np.asfortranarray(ex["masks"].transpose(1, 2, 0)))
        for mask, rle, cls, box in zip(ex["masks"], rles, ex["classes"], ex["boxes"]):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()), "iscrowd": 0})
    data = {
        "info": {"description": f"SyntheticInstances {split} (drawn by pointrend_jax, seed {seed})",
                 "version": VERSION},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"}
                       for k, name in enumerate(CLASS_NAMES)],
    }
    with open(folder / f"{split}.json", "w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))


def _paths(folder: pathlib.Path) -> dict[str, str]:
    return {"root": str(folder),
            **{f"{split}_images": str(folder / split) for split in SPLITS},
            **{f"{split}_json": str(folder / f"{split}.json") for split in SPLITS}}


def _complete(folder: pathlib.Path) -> bool:
    return all((folder / f"{split}.json").is_file() and (folder / split).is_dir() for split in SPLITS)


def prepare_synthetic_instances(data_dir: str | os.PathLike | None = None, *,
                                num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
                                image_size: int = DEFAULT_IMAGE_SIZE,
                                seed: int = DEFAULT_SEED) -> dict[str, str]:
    """Writes the set once (reused when already there) and returns its paths:
    ``{"root", "train_images", "train_json", "val_images", "val_json"}``."""
    num_train, num_val, image_size, seed = int(num_train), int(num_val), int(image_size), int(seed)
    for name, value in (("num_train", num_train), ("num_val", num_val), ("image_size", image_size)):
        if value < 1:
            raise ValueError(f"synthetic_instances {name} must be >= 1, got {value}.")
    if image_size < 32:
        raise ValueError(f"synthetic_instances image_size must be >= 32 (shapes are ~10-30 px), got {image_size}.")
    base = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
    root = base / "synthetic_instances"
    key = dataset_key(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)
    folder = root / key
    if _complete(folder):
        return _paths(folder)
    root.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once: the first draws under the lock, the others then
    # find the folder in place.
    with synthetic._file_lock(root / f".{key}.lock"):
        if not _complete(folder):
            tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
            try:
                _write_split(tmp, "train", num_train, seed=seed, image_size=image_size)
                _write_split(tmp, "val", num_val, seed=seed, image_size=image_size)
                tmp.chmod(0o755)  # mkdtemp makes it 0700
                if folder.exists():  # left by something else than this function: replace it
                    shutil.rmtree(folder)
                os.rename(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    return _paths(folder)


def load_synthetic_instances(data_dir: str | os.PathLike | None = None, *,
                             num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL,
                             image_size: int = DEFAULT_IMAGE_SIZE,
                             seed: int = DEFAULT_SEED) -> dict[str, CocoSource]:
    """Prepares the set if needed and returns ``{"train": CocoSource, "val": CocoSource}``."""
    paths = prepare_synthetic_instances(data_dir, num_train=num_train, num_val=num_val,
                                        image_size=image_size, seed=seed)
    return {split: CocoSource(paths[f"{split}_images"], paths[f"{split}_json"], split_name=split)
            for split in SPLITS}
