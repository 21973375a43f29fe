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

Variant "large" (``render_large_instances``), where a mask's resolution matters: pictures of
384-512 px a side (height and width drawn apart), 2-6 objects of 64-300 px (the longer side
of the whole shape's box), the same three categories with detail a 28x28 grid cannot hold:

  blob      ellipses and wobbly blobs, most with 1-3 holes
  polygon   star-shaped polygons with 1-3 thin legs (2-4 px wide) sticking out
  ring      rings 3 px to a third of their radius thick, half of them split by a thin spoke

(instances under ``LARGE_MIN_VISIBLE_AREA`` visible pixels dropped, ~3% empty pictures).

The set is written to disk once, in COCO format, and read back through ``CocoSource``::

  {data_dir}/synthetic_instances/{key}/train/train_000000.png ...
  {data_dir}/synthetic_instances/{key}/train.json              (compressed RLE, bbox, area)
  {data_dir}/synthetic_instances/{key}/val/...  and  val.json

``key`` names the parameters (variant, counts, size, seed), so different sets do not clash. It is
written into a temporary folder and renamed into place under a file lock, so concurrent
processes wait for the first and a crashed preparation leaves nothing half-written behind.
Every example is drawn from its own seed ``(seed, split, index)``: deterministic.

Shapes: H, W image height and width (``image_size`` x ``image_size``, or drawn per picture
in "large"); M instances.
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

from pointrend_jax.data import SYNTHETIC_INSTANCE_VARIANTS, synthetic
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

VARIANTS = SYNTHETIC_INSTANCE_VARIANTS  # "standard" | "large"
LARGE_VERSION = "1"  # part of the large variant's folder name
LARGE_IMAGE_SIZE = (384, 512)  # range of the height and of the width of a large picture
LARGE_OBJECT_SIZE = (64, 300)  # range of the longer side of a large object's box
LARGE_MIN_INSTANCES, LARGE_MAX_INSTANCES = 2, 6
LARGE_MIN_VISIBLE_AREA = 256  # pixels
LARGE_NUM_TRAIN, LARGE_NUM_VAL = 512, 64  # default counts of the large variant


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
        if _paint(canvas, owner, rng, drawn, _KINDS[cls], size, len(classes) + 1):
            classes.append(cls)
    return _finish(canvas, owner, rng, classes, MIN_VISIBLE_AREA)


def _paint(canvas: np.ndarray, owner: np.ndarray, rng: np.random.Generator, drawn, kind: int,
           scale: float, label: int) -> bool:
    """Blends a drawn shape ``((y0, y1, x0, x1), dist)`` (``dist`` <= 0 inside) into ``canvas``
    (H, W, 3) float, antialiased over half a pixel, in a colour of ``kind`` shaded across it
    (``scale``: the picture's size), and marks its pixels ``label`` in ``owner`` (H, W).
    False (nothing drawn, no colour drawn) when the shape covers no pixel centre."""
    (y0, y1, x0, x1), dist = drawn
    inside = dist <= 0.0
    if not inside.any():
        return False
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
    ys, xs = synthetic._grid((y0, y1, x0, x1))
    shade = rng.uniform(-0.2, 0.2, 2)
    fill = synthetic._shape_colour(rng, kind) * (
        1.0 + shade[0] * (ys - y0) / scale + shade[1] * (xs - x0) / scale)[..., None]
    region = canvas[y0:y1, x0:x1]
    region += alpha * (fill - region)
    owner[y0:y1, x0:x1][inside] = label
    return True


def _finish(canvas, owner, rng, classes, min_area):
    """Noise on the canvas; the visible part of each painted shape as its mask, those under
    ``min_area`` pixels dropped. -> image uint8 (H, W, 3), masks uint8 (M, H, W), classes (M,)."""
    canvas += rng.normal(0.0, rng.uniform(3.0, 12.0), canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = (owner[None] == np.arange(1, len(classes) + 1)[:, None, None]).astype(np.uint8)
    keep = masks.sum(axis=(1, 2)) >= min_area
    return image, masks[keep], np.asarray(classes, np.int32)[keep]


# --------------------------------------------------------------------------------------
# The "large" variant: bigger pictures and objects, with holes and thin parts.
# --------------------------------------------------------------------------------------


def _smooth_field_hw(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1] on (height, width): upsampled Gaussian noise."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC))
    return field / max(float(np.abs(field).max()), 1e-6)


def _local_grid(half: int, rng: np.random.Generator):
    """Pixel-centre coordinates (ys (2h+1, 1), xs (1, 2h+1)) around a shape's centre, which
    sits at a random sub-pixel offset."""
    offset = rng.uniform(0.0, 1.0, 2)
    cells = np.arange(-half, half + 1, dtype=np.float64)
    return (cells - offset[0])[:, None], (cells - offset[1])[None, :]


def _wobbly_radius(rng: np.random.Generator, theta: np.ndarray, radius: float) -> np.ndarray:
    """A round outline r(theta) = R (1 + sum_k a_k cos(k theta + phi_k)), k = 2..5."""
    ks = np.arange(2, 6)
    amps = rng.uniform(0.0, 0.25, ks.size) / ks
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    waves = amps[:, None, None] * np.cos(ks[:, None, None] * theta + phases[:, None, None])
    return radius * (1 + waves.sum(axis=0))


def _bar_distance(ys, xs, angle: float, start: float, stop: float, width: float) -> np.ndarray:
    """Signed distance to a bar of ``width`` px along the ray at ``angle`` from the centre,
    from ``start`` to ``stop`` px out (a segment with round ends)."""
    direction = np.asarray([np.sin(angle), np.cos(angle)])
    return synthetic._segment_distance(ys, xs, start * direction, stop * direction) - width / 2


def _large_blob(rng, size: float, ys, xs):
    """An ellipse (axes ratio 0.55-1) or a wobbly round blob of diameter ~``size``, with 0-3
    elliptical holes (at least 4x3 px) well inside it (70% of the blobs have at least one)."""
    if rng.random() < 0.5:
        a = size / 2
        b = a * rng.uniform(0.55, 1.0)
        dist = synthetic._ellipse_distance(ys, xs, 0.0, 0.0, a, b, rng.uniform(0, np.pi))
        inner = b  # every hole below stays within half of the smaller radius
    else:
        radius = size / 2 / 1.15
        dist = np.hypot(ys, xs) - _wobbly_radius(rng, np.arctan2(ys, xs), radius)
        inner = radius * 0.75
    holes = 0 if rng.random() < 0.3 else int(rng.integers(1, 4))
    for _ in range(holes):
        reach, angle = rng.uniform(0.0, 0.35) * inner, rng.uniform(0, 2 * np.pi)
        ha = max(4.0, rng.uniform(0.15, 0.3) * inner)
        hb = max(3.0, ha * rng.uniform(0.6, 1.0))
        hole = synthetic._ellipse_distance(ys, xs, reach * np.sin(angle), reach * np.cos(angle),
                                           ha, hb, rng.uniform(0, np.pi))
        dist = np.maximum(dist, -hole)
    return dist


def _large_polygon(rng, size: float, ys, xs):
    """A star-shaped polygon of diameter ~``size`` with 1-3 thin legs (bars 2-4 px wide)
    reaching 1.4-1.9x its largest radius out of the centre."""
    n = int(rng.integers(3, 9))
    step = 2 * np.pi / n
    angles = rng.uniform(0, 2 * np.pi) + step * (np.arange(n) + rng.uniform(-0.35, 0.35, n))
    radii = rng.uniform(0.6, 1.0, n) * size / 2 / 1.5
    if n >= 5 and rng.random() < 0.5:  # a star: every other vertex pulled in
        radii[::2] *= rng.uniform(0.45, 0.7)
    verts = np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)
    dist = np.full(np.broadcast_shapes(ys.shape, xs.shape), np.inf)
    inside = np.zeros(dist.shape, dtype=bool)
    for i in range(n):
        p, q = verts[i], verts[(i + 1) % n]
        dist = np.minimum(dist, synthetic._segment_distance(ys, xs, p, q))
        crosses = (p[0] > ys) != (q[0] > ys)
        x_at = p[1] + (ys - p[0]) * (q[1] - p[1]) / (q[0] - p[0] + 1e-12)
        inside ^= crosses & (xs < x_at)
    dist = np.where(inside, -dist, dist)
    for _ in range(int(rng.integers(1, 4))):
        leg = _bar_distance(ys, xs, rng.uniform(0, 2 * np.pi), 0.0,
                            rng.uniform(1.4, 1.9) * radii.max(), rng.uniform(2.0, 4.0))
        dist = np.minimum(dist, leg)
    return dist


def _large_ring(rng, size: float, ys, xs):
    """An elliptical ring of outer diameter ~``size``, 3 px to a third of its smaller radius
    thick, half of them crossed by a thin spoke (2-4 px) that splits the hole in two."""
    a = size / 2
    b = a * rng.uniform(0.6, 1.0)
    thickness = rng.uniform(3.0, max(3.0, b / 3))
    angle = rng.uniform(0, np.pi)
    # the centre line sits half a thickness inside the outline, so the outer diameter is ~size
    mid = synthetic._ellipse_distance(ys, xs, 0.0, 0.0, a - thickness / 2, b - thickness / 2, angle)
    dist = np.abs(mid) - thickness / 2
    if rng.random() < 0.5:
        spoke_angle, spoke_width = rng.uniform(0, np.pi), rng.uniform(2.0, 4.0)
        spoke = np.minimum(_bar_distance(ys, xs, spoke_angle, 0.0, a, spoke_width),
                           _bar_distance(ys, xs, spoke_angle + np.pi, 0.0, a, spoke_width))
        dist = np.minimum(dist, np.maximum(spoke, mid))  # the spoke clipped to the ring's inside
    return dist


_LARGE_DRAWERS = (_large_blob, _large_polygon, _large_ring)  # by class: blob, polygon, ring


def draw_large_shape(rng: np.random.Generator, cls: int, height: int, width: int, *,
                     tries: int = 50):
    """One shape of class ``cls`` (index into CLASS_NAMES) for the large variant, placed
    entirely inside a (height, width) picture: ``((y0, y1, x0, x1), dist)`` with ``dist``
    float64 (y1 - y0, x1 - x0) the signed distance (px, <= 0 inside) on the pixel centres of
    that window, which holds all of the antialiased shape (dist < 0.5) and a pixel more on
    each side. The longer side of the shape's box (pixels with dist <= 0) is in
    ``LARGE_OBJECT_SIZE``: shapes are drawn until one is (at most ``tries``)."""
    lo, hi = LARGE_OBJECT_SIZE
    half = 2 * hi // 3  # a shape reaches at most ~0.64 of its size from its centre (legs)
    for _ in range(tries):
        ys, xs = _local_grid(half, rng)
        dist = _LARGE_DRAWERS[cls](rng, rng.uniform(lo + 4, hi - 4), ys, xs)
        support = dist < 0.5  # where the antialiased shape leaves any colour
        rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
        inside = dist <= 0.0
        in_rows, in_cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if not in_rows.size or min(rows[0], cols[0]) < 1 or max(rows[-1], cols[-1]) > 2 * half - 1:
            continue  # nothing drawn, or cut by the local grid
        extent = max(in_rows[-1] + 1 - in_rows[0], in_cols[-1] + 1 - in_cols[0])
        if not lo <= extent <= hi:
            continue
        r0, r1, c0, c1 = rows[0] - 1, rows[-1] + 2, cols[0] - 1, cols[-1] + 2
        top = int(rng.integers(0, height - (r1 - r0) + 1))
        left = int(rng.integers(0, width - (c1 - c0) + 1))
        return (top, top + r1 - r0, left, left + c1 - c0), dist[r0:r1, c0:c1]
    raise RuntimeError(f"no class-{cls} shape of size {lo}-{hi} px in {tries} tries")


def render_large_instances(rng: np.random.Generator):
    """Draws one picture of the large variant: height and width each in ``LARGE_IMAGE_SIZE``,
    ``LARGE_MIN_INSTANCES``-``LARGE_MAX_INSTANCES`` shapes of 64-300 px (blobs with holes,
    polygons with thin legs, rings, some with a spoke), drawn one over the other.

    Returns image uint8 (H, W, 3), masks uint8 (M, H, W) 0/1 (visible parts, each at least
    ``LARGE_MIN_VISIBLE_AREA`` pixels) and classes int32 (M,) in 0..2.
    """
    height, width = (int(v) for v in rng.integers(LARGE_IMAGE_SIZE[0], LARGE_IMAGE_SIZE[1] + 1, 2))
    mix = 0.5 + 0.5 * _smooth_field_hw(rng, height, width, int(rng.integers(3, 7)))
    c0, c1 = rng.uniform(0, 255, (2, 3))
    canvas = c0 + mix[..., None] * (c1 - c0)
    canvas += 25.0 * _smooth_field_hw(rng, height, width, int(rng.integers(12, 24)))[..., None]
    owner = np.zeros((height, width), np.int32)
    classes = []
    count = (0 if rng.random() < EMPTY_FRACTION
             else int(rng.integers(LARGE_MIN_INSTANCES, LARGE_MAX_INSTANCES + 1)))
    for _ in range(count):
        cls = int(rng.integers(len(_KINDS)))
        drawn = draw_large_shape(rng, cls, height, width)
        if _paint(canvas, owner, rng, drawn, _KINDS[cls], max(height, width), len(classes) + 1):
            classes.append(cls)
    return _finish(canvas, owner, rng, classes, LARGE_MIN_VISIBLE_AREA)


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel edges of a non-empty 0/1 mask: columns x0..x1-1, rows y0..y1-1."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def make_instance_example(split: str, index: int, *, seed: int = DEFAULT_SEED,
                          image_size: int = DEFAULT_IMAGE_SIZE,
                          variant: str = "standard") -> dict[str, Any]:
    """Example ``index`` of ``split`` as drawn: image, masks, classes, boxes (xyxy), stem
    (``image_size`` is the standard variant's)."""
    rng = synthetic.example_rng(seed, split, index)
    image, masks, classes = (render_large_instances(rng) if variant == "large"
                             else render_instances(rng, image_size))
    boxes = np.asarray([tight_box(m) for m in masks], np.float32).reshape(len(masks), 4)
    return {"image": image, "masks": masks, "classes": classes, "boxes": boxes,
            "stem": f"{split}_{index:06d}"}


def dataset_key(*, num_train: int, num_val: int, image_size: int | None, seed: int,
                variant: str = "standard") -> str:
    if variant == "large":
        return f"large_v{LARGE_VERSION}_train{num_train}_val{num_val}_seed{seed}"
    return f"v{VERSION}_train{num_train}_val{num_val}_size{image_size}_seed{seed}"


def _write_split(folder: pathlib.Path, split: str, count: int, *, seed: int, image_size: int | None,
                 variant: str) -> None:
    (folder / split).mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        ex = make_instance_example(split, index, seed=seed, image_size=image_size, variant=variant)
        file_name = f"{ex['stem']}.png"
        Image.fromarray(ex["image"]).save(folder / split / file_name, compress_level=1)
        image_id = index + 1
        height, width = ex["image"].shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
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
        "info": {"description": f"SyntheticInstances {variant} {split} (drawn by pointrend_jax, "
                                f"seed {seed})",
                 "version": LARGE_VERSION if variant == "large" else VERSION},
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


def _resolve(variant: str, num_train, num_val, image_size, seed) -> tuple[int, int, int | None, int]:
    """The counts, size and seed of a set, the variant's defaults for those None; checked."""
    if variant not in VARIANTS:
        raise ValueError(f"synthetic_instances variant {variant!r} is not one of {list(VARIANTS)}.")
    large = variant == "large"
    if large and image_size is not None:
        raise ValueError(f"synthetic_instances variant 'large' draws pictures of {LARGE_IMAGE_SIZE[0]}-"
                         f"{LARGE_IMAGE_SIZE[1]} px a side; image_size={image_size} does not apply "
                         f"(leave it unset).")
    num_train = int(num_train if num_train is not None else LARGE_NUM_TRAIN if large else DEFAULT_NUM_TRAIN)
    num_val = int(num_val if num_val is not None else LARGE_NUM_VAL if large else DEFAULT_NUM_VAL)
    image_size = None if large else int(image_size if image_size is not None else DEFAULT_IMAGE_SIZE)
    for name, value in (("num_train", num_train), ("num_val", num_val), ("image_size", image_size)):
        if value is not None and value < 1:
            raise ValueError(f"synthetic_instances {name} must be >= 1, got {value}.")
    if image_size is not None and image_size < 32:
        raise ValueError(f"synthetic_instances image_size must be >= 32 (shapes are ~10-30 px), got {image_size}.")
    return num_train, num_val, image_size, int(seed)


def prepare_synthetic_instances(data_dir: str | os.PathLike | None = None, *,
                                num_train: int | None = None, num_val: int | None = None,
                                image_size: int | None = None, seed: int = DEFAULT_SEED,
                                variant: str = "standard") -> dict[str, str]:
    """Writes the set once (reused when already there) and returns its paths:
    ``{"root", "train_images", "train_json", "val_images", "val_json"}``. Counts and size left
    None take the variant's defaults (standard: 1024 / 128 pictures of 128 px; large: 512 /
    64); ``image_size`` is the standard variant's only."""
    num_train, num_val, image_size, seed = _resolve(variant, num_train, num_val, image_size, seed)
    base = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
    root = base / "synthetic_instances"
    key = dataset_key(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed,
                      variant=variant)
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
                for split, count in (("train", num_train), ("val", num_val)):
                    _write_split(tmp, split, count, seed=seed, image_size=image_size, variant=variant)
                tmp.chmod(0o755)  # mkdtemp makes it 0700
                if folder.exists():  # left by something else than this function: replace it
                    shutil.rmtree(folder)
                os.rename(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    return _paths(folder)


def load_synthetic_instances(data_dir: str | os.PathLike | None = None, *,
                             num_train: int | None = None, num_val: int | None = None,
                             image_size: int | None = None, seed: int = DEFAULT_SEED,
                             variant: str = "standard",
                             train_points: dict[str, Any] | None = None) -> dict[str, CocoSource]:
    """Prepares the set if needed and returns ``{"train": CocoSource, "val": CocoSource}``;
    ``train_points`` are the train source's point-label keywords (``CocoSource(points=...)``)."""
    paths = prepare_synthetic_instances(data_dir, num_train=num_train, num_val=num_val,
                                        image_size=image_size, seed=seed, variant=variant)
    options = {"train": train_points or {}, "val": {}}
    return {split: CocoSource(paths[f"{split}_images"], paths[f"{split}_json"], split_name=split,
                              **options[split])
            for split in SPLITS}
