"""The large synthetic instance variant: picture and object sizes in range, holes that are
holes in the masks, thin parts, determinism by seed, and its COCO json read back through
CocoSource; the `:large` config."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pointrend_jax.data import build_datasets
from pointrend_jax.data import synthetic_instances as si
from pointrend_jax.data.coco import CocoSource
from pointrend_jax.instance import augment as ia

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LARGE = {"num_train": 3, "num_val": 2, "variant": "large"}
DISK3 = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3  # a disk of radius 3 px


def _holes(mask: np.ndarray) -> int:
    """Connected regions of 0 (4-connected) that the mask encloses: not reaching the border."""
    _, count = ndimage.label(~np.pad(mask.astype(bool), 1))
    return count - 1  # the region around the mask is one


def _thin_pixels(mask: np.ndarray) -> int:
    """Pixels of parts thinner than 7 px: what an opening by a radius-3 disk removes."""
    mask = mask.astype(bool)
    return int((mask & ~ndimage.binary_opening(np.pad(mask, 4), DISK3)[4:-4, 4:-4]).sum())


@pytest.fixture(scope="module")
def large_set(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("large")
    return data_dir, si.prepare_synthetic_instances(data_dir, seed=11, **LARGE)


def test_large_shapes_sizes_holes_and_thin_parts(np_rng):
    lo, hi = si.LARGE_OBJECT_SIZE
    holed = {0: 0, 2: 0}
    for draw in range(36):
        cls = draw % 3
        height, width = (int(v) for v in np_rng.integers(384, 513, 2))
        (y0, y1, x0, x1), dist = si.draw_large_shape(np_rng, cls, height, width)
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width and dist.shape == (y1 - y0, x1 - x0)
        inside = dist <= 0
        ys, xs = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        assert lo <= max(ys[-1] + 1 - ys[0], xs[-1] + 1 - xs[0]) <= hi  # the object's size
        assert (dist[[0, -1]] >= 0.5).all() and (dist[:, [0, -1]] >= 0.5).all()  # not cut off
        if cls == 1:  # polygons: legs of 2-4 px sticking out
            assert _thin_pixels(inside) >= 15
        else:
            holed[cls] += _holes(inside) > 0
    assert holed[2] == 12  # every ring has a hole
    assert holed[0] >= 5  # most blobs (70% on average) have one


def test_large_pictures_and_masks(np_rng):
    sizes, holes, thin, counts = set(), 0, 0, []
    for _ in range(8):
        image, masks, classes = si.render_large_instances(np.random.default_rng(np_rng.integers(1 << 30)))
        height, width = image.shape[:2]
        assert 384 <= height <= 512 and 384 <= width <= 512 and image.dtype == np.uint8
        sizes.add((height, width))
        assert masks.shape == (len(classes), height, width) and masks.sum(axis=0).max(initial=0) <= 1
        assert (masks.sum(axis=(1, 2)) >= si.LARGE_MIN_VISIBLE_AREA).all()
        boxes = ia.mask_boxes(masks)
        assert (np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) <= 300).all()
        for mask in masks:
            holes += _holes(mask) > 0
            thin += _thin_pixels(mask) >= 15
        counts.append(len(classes))
    assert len(sizes) > 1  # heights and widths vary
    assert max(counts) <= si.LARGE_MAX_INSTANCES and holes >= 2 and thin >= 2


def test_large_set_is_deterministic_by_seed(large_set, tmp_path):
    _, first = large_set
    second = si.prepare_synthetic_instances(tmp_path, seed=11, **LARGE)
    other = si.prepare_synthetic_instances(tmp_path, seed=12, **LARGE)
    assert first["root"] != second["root"] and "large" in os.path.basename(first["root"])
    for split in ("train", "val"):
        with open(first[f"{split}_json"], "rb") as a, open(second[f"{split}_json"], "rb") as b:
            assert a.read() == b.read()
        for name in sorted(os.listdir(first[f"{split}_images"])):
            np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(first[f"{split}_images"], name))),
                                          np.asarray(Image.open(os.path.join(second[f"{split}_images"], name))))
    with open(first["train_json"], "rb") as a, open(other["train_json"], "rb") as b:
        assert a.read() != b.read()


def test_large_coco_json_round_trips(large_set):
    data_dir, paths = large_set
    sources = si.load_synthetic_instances(data_dir, seed=11, **LARGE)
    written = json.loads(open(paths["train_json"]).read())
    assert {"info", "licenses", "images", "annotations", "categories"} <= written.keys()
    holes = 0
    for split, source in sources.items():
        assert source.class_names == si.CLASS_NAMES and sum(source.skipped.values()) == 0
        assert len(source) == LARGE[f"num_{split}"]
        for index in range(len(source)):
            ex = source[index]
            drawn = si.make_instance_example(split, index, seed=11, variant="large")
            for key in ("image", "masks", "classes", "boxes"):
                np.testing.assert_array_equal(ex[key], drawn[key])
            # RLE keeps the holes that polygons could not
            holes += sum(_holes(mask) > 0 for mask in ex["masks"])
    assert sorted({(i["height"], i["width"]) for i in written["images"]}) == sorted(
        {sources["train"][i]["image"].shape[:2] for i in range(len(sources["train"]))})
    assert holes >= 1


def test_large_variant_in_build_datasets_and_config(large_set):
    from pointrend_jax.config import load_config
    from pointrend_jax.tasks import validated_task

    data_dir, paths = large_set
    cfg = {"name": "synthetic_instances", "data_dir": str(data_dir), "seed": 11, **LARGE}
    spec = build_datasets(cfg)
    assert str(spec.train.json_path) == paths["train_json"] and len(spec.val) == 2
    with pytest.raises(ValueError, match="image_size=64 does not apply"):
        build_datasets({**cfg, "image_size": 64})
    with pytest.raises(ValueError, match=r"--config\.data\.variant='huge'"):
        build_datasets({**cfg, "variant": "huge"})
    config = load_config(os.path.join(ROOT, "configs", "synthetic_instances.py:large"))
    validated_task(config)
    assert config.data.variant == "large" and tuple(config.augment.crop_size) == (512, 512)
    config.data.variant = "huge"
    with pytest.raises(ValueError, match=r"--config\.data\.variant"):
        validated_task(config)
    assert isinstance(spec.train, CocoSource)
