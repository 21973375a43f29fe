"""COCO-format instance data: CocoSource, the synthetic instance set, instance transforms."""
import json
import logging
import os
import pickle

import ml_collections
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pointrend_jax.data import INSTANCE_DATASETS, DataError, build_datasets
from pointrend_jax.instance import augment as ia
from pointrend_jax.data import pipeline
from pointrend_jax.data import synthetic_instances as si
from pointrend_jax.data.coco import CocoSource

# --------------------------------------------------------------------------------------
# A tiny fake COCO-format set, rasterised by the test itself.
# --------------------------------------------------------------------------------------


def _random_rect(rng, height, width):
    """Integer corners (x0, y0, x1, y1) of a rectangle with at least 2x2 pixels."""
    x0 = int(rng.integers(0, width - 2))
    y0 = int(rng.integers(0, height - 2))
    return x0, y0, int(rng.integers(x0 + 2, width + 1)), int(rng.integers(y0 + 2, height + 1))


def _rect_polygon(x0, y0, x1, y1):
    # pycocotools fills an integer-cornered rectangle polygon exactly: columns x0..x1-1, rows y0..y1-1.
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _rect_mask(rect, height, width):
    x0, y0, x1, y1 = rect
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE, written by hand: column-major runs, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def _tight_xywh(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _random_mask(rng, height, width):
    mask = (rng.random((height, width)) < 0.4).astype(np.uint8)
    mask[0, 0] = 1  # a run of ones first: the counts start with 0
    return mask


def _save(path, array, mode):
    img = Image.fromarray(array)
    if mode == "L":
        img = img.convert("L")
    elif mode == "RGBA":
        img = img.convert("RGBA")
    elif mode == "P":
        img = img.convert("P", palette=Image.ADAPTIVE, colors=16)
    img.save(path)


def make_fake_coco(tmp_path, rng, *, json_name="instances_train.json"):
    """Writes a fake COCO-format set; returns (images_dir, json_path, expected) where expected
    is {image_id: (masks, classes, boxes)} of the kept instances, in annotation order."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    sizes = {10: (int(rng.integers(20, 40)), int(rng.integers(24, 48))),
             20: (int(rng.integers(20, 40)), int(rng.integers(24, 48))),
             30: (int(rng.integers(12, 20)), int(rng.integers(12, 20))),
             40: (int(rng.integers(12, 20)), int(rng.integers(12, 20)))}
    modes = {10: "RGB", 20: "L", 30: "RGBA", 40: "P"}
    images = []
    for image_id, (h, w) in sizes.items():
        name = f"img_{image_id}.png"
        _save(images_dir / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8), modes[image_id])
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    # Category ids not contiguous and listed out of order: classes follow the id order.
    categories = [{"id": 90, "name": "zebra"}, {"id": 1, "name": "apple"}, {"id": 5, "name": "cat"}]
    class_of = {1: 0, 5: 1, 90: 2}
    anns, expected = [], {image_id: ([], [], []) for image_id in sizes}

    def keep(ann, mask, box_xyxy):
        anns.append(ann)
        expected[ann["image_id"]][0].append(mask)
        expected[ann["image_id"]][1].append(class_of[ann["category_id"]])
        expected[ann["image_id"]][2].append(box_xyxy)

    h, w = sizes[10]
    rect = _random_rect(rng, h, w)
    mask = _rect_mask(rect, h, w)
    xywh = _tight_xywh(mask)
    keep({"id": 1, "image_id": 10, "category_id": 5, "segmentation": [_rect_polygon(*rect)],
          "bbox": xywh, "area": float(mask.sum()), "iscrowd": 0},
         mask, [xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]])
    # Multi-part polygon: the union of two rectangles; its box sticks out of the image (clipped).
    r1, r2 = _random_rect(rng, h, w), _random_rect(rng, h, w)
    mask = np.maximum(_rect_mask(r1, h, w), _rect_mask(r2, h, w))
    x, y, bw, bh = _tight_xywh(mask)
    keep({"id": 2, "image_id": 10, "category_id": 90,
          "segmentation": [_rect_polygon(*r1), _rect_polygon(*r2), [1, 1, 2, 2]],  # + a degenerate part
          "bbox": [x - 3.0, y, bw + 3.0 + 5.0, bh]},  # no "area", no "iscrowd": optional
         mask, [max(x - 3.0, 0.0), y, min(x + bw + 5.0, float(w)), y + bh])
    # A crowd annotation (dropped from the examples).
    crowd = _random_mask(rng, h, w)
    anns.append({"id": 3, "image_id": 10, "category_id": 1, "segmentation": _uncompressed_rle(crowd),
                 "bbox": _tight_xywh(crowd), "area": float(crowd.sum()), "iscrowd": 1})

    h, w = sizes[20]
    mask = _random_mask(rng, h, w)
    xywh = _tight_xywh(mask)
    keep({"id": 4, "image_id": 20, "category_id": 1, "segmentation": _uncompressed_rle(mask),
          "bbox": xywh, "area": float(mask.sum()), "iscrowd": 0},
         mask, [xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]])
    mask = _random_mask(rng, h, w)
    rle = mask_utils.encode(np.asfortranarray(mask))
    xywh = _tight_xywh(mask)
    keep({"id": 5, "image_id": 20, "category_id": 90,
          "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
          "bbox": xywh, "area": float(mask.sum()), "iscrowd": 0},
         mask, [xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]])
    # One instance on the palette image; image 30 has none.
    h, w = sizes[40]
    rect = _random_rect(rng, h, w)
    mask = _rect_mask(rect, h, w)
    keep({"id": 6, "image_id": 40, "category_id": 5, "segmentation": [_rect_polygon(*rect)],
          "bbox": _tight_xywh(mask), "area": float(mask.sum()), "iscrowd": 0},
         mask, list(map(float, rect)))

    # Bad annotations, one or two of each kind.
    good_seg = [_rect_polygon(0, 0, 4, 4)]
    bad = [
        {"id": 17, "image_id": 999, "category_id": 1, "segmentation": good_seg, "bbox": [0, 0, 4, 4]},
        {"id": 18, "image_id": 10, "category_id": 7, "segmentation": good_seg, "bbox": [0, 0, 4, 4]},
        {"id": 19, "image_id": 10, "category_id": 1, "segmentation": [[1, 1, 5, 5]], "bbox": [1, 1, 4, 4]},
        {"id": 20, "image_id": 10, "category_id": 1, "segmentation": [[0, 0, 5, 0, 10, 0]], "bbox": [0, 0, 10, 1]},
        {"id": 21, "image_id": 10, "category_id": 1, "segmentation": good_seg, "bbox": [0, 0, 0, 4]},
        {"id": 22, "image_id": 10, "category_id": 1, "segmentation": good_seg, "bbox": [500, 500, 4, 4]},
        {"id": 23, "image_id": 10, "category_id": 1, "bbox": [0, 0, 4, 4]},
        {"id": 24, "image_id": 10, "category_id": 1, "segmentation": [], "bbox": [0, 0, 4, 4]},
        {"id": 25, "image_id": 20, "category_id": 1, "segmentation": {"size": [3, 3], "counts": [9]},
         "bbox": [0, 0, 3, 3]},
    ]
    data = {"images": images, "annotations": anns + bad, "categories": categories}  # no info/licenses
    json_path = tmp_path / json_name
    json_path.write_text(json.dumps(data))
    return images_dir, json_path, expected


EXPECTED_SKIPS = {"unknown_image_id": 1, "unknown_category": 1, "degenerate_polygon": 2, "bad_box": 1,
                  "box_outside_image": 1, "no_segmentation": 2, "bad_rle": 1, "crowd": 1}


def test_coco_source_decodes_every_segmentation_kind(tmp_path, np_rng, caplog):
    images_dir, json_path, expected = make_fake_coco(tmp_path, np_rng)
    with caplog.at_level(logging.WARNING):
        source = CocoSource(str(images_dir), str(json_path))
    assert len(source) == 4 and source.image_ids == [10, 20, 30, 40]
    assert source.class_names == ["apple", "cat", "zebra"] and source.category_ids == [1, 5, 90]
    assert max(len(source[i]["classes"]) for i in range(len(source))) == 2  # kept, non-crowd
    for index, image_id in enumerate(source.image_ids):
        ex = source[index]
        masks, classes, boxes = expected[image_id]
        h, w = ex["image"].shape[:2]
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (h, w, 3)
        assert ex["image_id"] == image_id and ex["stem"] == f"img_{image_id}"
        assert ex["masks"].dtype == np.uint8 and ex["masks"].shape == (len(masks), h, w)
        assert ex["boxes"].dtype == np.float32 and ex["boxes"].shape == (len(masks), 4)
        assert ex["classes"].dtype == np.int32 and ex["classes"].tolist() == classes
        for got, want in zip(ex["masks"], masks):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(ex["boxes"], np.asarray(boxes, np.float32).reshape(-1, 4))
    assert len(source.__getitems__([1, 2])) == 2
    pickle.loads(pickle.dumps(source))  # grain workers get a copy


def test_coco_source_counts_and_reports_skipped_annotations(tmp_path, np_rng, caplog):
    images_dir, json_path, _ = make_fake_coco(tmp_path, np_rng)
    with caplog.at_level(logging.WARNING):
        source = CocoSource(images_dir, json_path)
    assert {k: v for k, v in source.skipped.items() if v} == EXPECTED_SKIPS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0]
    assert text.startswith("instances_train.json: skipped 9 annotations: ")
    for part in ("1 unknown image id (ann 17)", "1 unknown category id (ann 18)",
                 "2 degenerate polygon (ann 19, 20)", "2 without segmentation (ann 23, 24)",
                 "1 malformed RLE (ann 25)", "1 box outside the image (ann 22)",
                 "dropped 1 crowd annotation"):
        assert part in text, (part, text)


def test_coco_gt_evaluates_perfect_predictions_to_ap_one(tmp_path, np_rng):
    from pycocotools.cocoeval import COCOeval

    images_dir, json_path, expected = make_fake_coco(tmp_path, np_rng)
    source = CocoSource(images_dir, json_path, split_name="val")
    gt = source.coco_gt()
    assert sorted(gt.getAnnIds()) == [1, 2, 3, 4, 5, 6]  # kept + crowd, no skipped ones
    assert sorted(gt.getCatIds()) == [1, 5, 90] and sorted(gt.getImgIds()) == [10, 20, 30, 40]
    results = []
    for index, image_id in enumerate(source.image_ids):
        ex = source[index]
        for mask, cls in zip(ex["masks"], ex["classes"]):
            rle = mask_utils.encode(np.asfortranarray(mask))
            results.append({"image_id": image_id, "category_id": source.category_ids[cls],
                            "segmentation": rle, "score": 0.9})
    evaluator = COCOeval(gt, gt.loadRes(results), "segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def _rewrite(json_path, edit):
    data = json.loads(json_path.read_text())
    edit(data)
    json_path.write_text(json.dumps(data))


def test_coco_source_structural_errors_name_the_file_and_id(tmp_path, np_rng):
    images_dir, json_path, _ = make_fake_coco(tmp_path, np_rng)
    original = json_path.read_text()

    os.remove(images_dir / "img_30.png")
    with pytest.raises(DataError, match=r"instances_train\.json.*missing") as err:
        CocoSource(images_dir, json_path)
    assert str(images_dir / "img_30.png") in str(err.value) and "image id 30" in str(err.value)
    Image.new("RGB", (4, 4)).save(images_dir / "img_30.png")

    _rewrite(json_path, lambda d: d["images"].append(dict(d["images"][0], file_name="img_20.png")))
    with pytest.raises(DataError, match=r"instances_train\.json: image id 10 is listed twice"):
        CocoSource(images_dir, json_path)

    json_path.write_text(original)
    _rewrite(json_path, lambda d: d["annotations"][3].pop("category_id"))
    with pytest.raises(DataError, match=r"instances_train\.json: annotation id 4 lacks the key\(s\) category_id"):
        CocoSource(images_dir, json_path)

    json_path.write_text(original)
    _rewrite(json_path, lambda d: d["annotations"].append(dict(d["annotations"][0])))
    with pytest.raises(DataError, match=r"annotation id 1 is listed twice"):
        CocoSource(images_dir, json_path)

    for not_coco in ([1, 2, 3], {"images": [], "annotations": []}):
        json_path.write_text(json.dumps(not_coco))
        with pytest.raises(DataError, match=r"instances_train\.json is not a COCO-format instances json"):
            CocoSource(images_dir, json_path)
    json_path.write_text("{not json")
    with pytest.raises(DataError, match=r"instances_train\.json: cannot read it as JSON"):
        CocoSource(images_dir, json_path)

    json_path.write_text(original)
    with pytest.raises(DataError, match=r"instances_train\.json: its images folder .*nowhere does not exist"):
        CocoSource(tmp_path / "nowhere", json_path)


def test_coco_source_image_size_mismatch_names_the_file(tmp_path, np_rng):
    images_dir, json_path, _ = make_fake_coco(tmp_path, np_rng)
    Image.new("RGB", (7, 5)).save(images_dir / "img_30.png")
    source = CocoSource(images_dir, json_path)
    with pytest.raises(DataError, match=r"img_30\.png is 7x5 \(WxH\) but .*instances_train\.json \(image id 30\)"):
        source[2]


def test_build_datasets_coco(tmp_path, np_rng):
    images_dir, json_path, _ = make_fake_coco(tmp_path, np_rng)
    cfg = ml_collections.ConfigDict({"name": "coco", "train_images": str(images_dir), "train_json": str(json_path),
                                     "val_images": str(images_dir), "val_json": str(json_path)})
    spec = build_datasets(cfg)
    assert spec.num_classes == 3 and list(spec.class_names) == ["apple", "cat", "zebra"]
    assert isinstance(spec.train, CocoSource) and spec.val.split_name == "val"
    assert "coco" in INSTANCE_DATASETS and "synthetic_instances" in INSTANCE_DATASETS
    del cfg["val_json"]
    with pytest.raises(ValueError, match="--config.data.val_json"):
        build_datasets(cfg)


def test_filter_empty_annotations_drops_train_images_without_instances(tmp_path, np_rng):
    """detectron2's FILTER_EMPTY_ANNOTATIONS: train images whose annotations are all crowd,
    skipped or absent are left out; val keeps every image."""
    images_dir, json_path, expected = make_fake_coco(tmp_path, np_rng)
    with_instances = [image_id for image_id, (masks, _, _) in expected.items() if masks]
    assert 0 < len(with_instances) < len(expected)
    cfg = ml_collections.ConfigDict({"name": "coco", "train_images": str(images_dir),
                                     "train_json": str(json_path), "val_images": str(images_dir),
                                     "val_json": str(json_path), "filter_empty_annotations": True})
    spec = build_datasets(cfg)
    assert spec.train.image_ids == with_instances
    assert spec.train.num_filtered_empty == len(expected) - len(with_instances)
    assert spec.val.image_ids == list(expected) and spec.val.num_filtered_empty == 0
    for index, image_id in enumerate(with_instances):
        np.testing.assert_array_equal(spec.train[index]["masks"], np.stack(expected[image_id][0]))
    cfg.filter_empty_annotations = False
    assert build_datasets(cfg).train.image_ids == list(expected)
    data = json.loads(json_path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a.get("iscrowd")]
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="filter_empty_annotations"):
        CocoSource(images_dir, json_path, filter_empty=True)


# --------------------------------------------------------------------------------------
# The synthetic instance set.
# --------------------------------------------------------------------------------------

SYN = {"num_train": 12, "num_val": 4, "image_size": 96}


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("syn_a")
    return data_dir, si.prepare_synthetic_instances(data_dir, **SYN)


def test_synthetic_instances_are_deterministic(synthetic_set, tmp_path):
    _, first = synthetic_set
    second = si.prepare_synthetic_instances(tmp_path, **SYN)
    assert first["root"] != second["root"]
    for split in ("train", "val"):
        with open(first[f"{split}_json"], "rb") as a, open(second[f"{split}_json"], "rb") as b:
            assert a.read() == b.read()
        names = sorted(os.listdir(first[f"{split}_images"]))
        assert names == sorted(os.listdir(second[f"{split}_images"]))
        assert len(names) == SYN[f"num_{split}"]
        for name in names:
            np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(first[f"{split}_images"], name))),
                                          np.asarray(Image.open(os.path.join(second[f"{split}_images"], name))))
    # What is stored is what the drawing function makes.
    source = CocoSource(first["train_images"], first["train_json"])
    direct = si.make_instance_example("train", 5, image_size=SYN["image_size"])
    ex = source[5]
    np.testing.assert_array_equal(ex["image"], direct["image"])
    np.testing.assert_array_equal(ex["masks"], direct["masks"])
    np.testing.assert_array_equal(ex["classes"], direct["classes"])
    np.testing.assert_array_equal(ex["boxes"], direct["boxes"])


def test_synthetic_instances_masks_boxes_and_classes(synthetic_set):
    _, paths = synthetic_set
    sources = si.load_synthetic_instances(synthetic_set[0], **SYN)
    for split, source in sources.items():
        assert source.class_names == ["blob", "polygon", "ring"] and source.category_ids == [1, 2, 3]
        assert sum(source.skipped.values()) == 0
        for index in range(len(source)):
            ex = source[index]
            assert ex["image"].shape == (SYN["image_size"], SYN["image_size"], 3)
            masks = ex["masks"]
            assert masks.sum(axis=0).max(initial=0) <= 1  # visible parts: disjoint
            assert (masks.sum(axis=(1, 2)) >= si.MIN_VISIBLE_AREA).all()
            assert ((ex["classes"] >= 0) & (ex["classes"] < 3)).all()
            np.testing.assert_array_equal(ex["boxes"], ia.mask_boxes(masks))
    data = json.loads(open(paths["val_json"]).read())
    assert {"info", "licenses", "images", "annotations", "categories"} <= data.keys()
    assert all(ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str) for ann in data["annotations"])


def test_synthetic_instances_counts_and_empty_images():
    counts = [len(si.render_instances(np.random.default_rng([7, i]), 64)[1]) for i in range(300)]
    assert max(counts) <= si.MAX_INSTANCES
    assert 1 <= counts.count(0) <= 25  # ~3% drawn empty
    assert np.mean(counts) > 3


def test_synthetic_instances_reuses_existing_files(synthetic_set):
    data_dir, paths = synthetic_set
    before = os.stat(paths["train_json"]).st_mtime_ns
    marker = os.path.join(paths["root"], "marker")
    open(marker, "w").close()
    again = si.prepare_synthetic_instances(data_dir, **SYN)
    assert again == paths and os.path.exists(marker)
    assert os.stat(paths["train_json"]).st_mtime_ns == before
    os.remove(marker)
    leftovers = [n for n in os.listdir(os.path.dirname(paths["root"])) if n.startswith(".tmp")]
    assert not leftovers
    # Other sizes get their own folder.
    other = si.prepare_synthetic_instances(data_dir, num_train=2, num_val=1, image_size=64)
    assert other["root"] != paths["root"]


def test_build_datasets_synthetic_instances(synthetic_set):
    data_dir, paths = synthetic_set
    cfg = ml_collections.ConfigDict({"name": "synthetic_instances", "data_dir": str(data_dir), **SYN,
                                     "seed": None, "num_classes": 3})
    spec = build_datasets(cfg)
    assert spec.num_classes == 3 and list(spec.class_names) == ["blob", "polygon", "ring"]
    assert len(spec.train) == SYN["num_train"] and len(spec.val) == SYN["num_val"]
    assert str(spec.train.json_path) == paths["train_json"]
    cfg.num_classes = 5
    with pytest.raises(ValueError, match="num_classes=5"):
        build_datasets(cfg)


# --------------------------------------------------------------------------------------
# Instance transforms.
# --------------------------------------------------------------------------------------


def _ellipse_example(rng, height, width, count):
    ys, xs = np.mgrid[:height, :width]
    masks = []
    for _ in range(count):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        # Round-ish (aspect <= 2, radius >= 3 px): no sub-pixel tips for resizing to erase.
        a = rng.uniform(3, max(4, min(height, width) / 3))
        b = a * rng.uniform(0.5, 2.0)
        mask = (((ys + 0.5 - cy) / a) ** 2 + ((xs + 0.5 - cx) / b) ** 2 <= 1).astype(np.uint8)
        if mask.sum() < 4:
            mask[int(cy) % height, int(cx) % width] = 1
            mask[int(cy) % height, (int(cx) + 1) % width] = 1
        masks.append(mask)
    masks = np.asarray(masks, np.uint8).reshape(count, height, width)
    return {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "masks": masks,
            "boxes": ia.mask_boxes(masks), "classes": rng.integers(0, 5, count).astype(np.int32),
            "image_id": 1, "stem": "x"}


def _check_shapes(out, crop, m):
    assert out["image"].shape == (*crop, 3) and out["image"].dtype == np.uint8
    assert out["masks"].shape == (m, *crop) and out["masks"].dtype == np.uint8
    assert out["boxes"].shape == (m, 4) and out["boxes"].dtype == np.float32
    assert out["classes"].shape == (m,) and out["classes"].dtype == np.int32
    assert out["valid"].shape == (m,) and out["valid"].dtype == bool
    assert out["image_size"].shape == (2,) and out["image_size"].dtype == np.int32


def test_augment_boxes_match_masks_and_shapes_are_fixed(np_rng):
    crop, m = (48, 56), 12
    cfg = ia.InstanceAugmentConfig(crop_size=crop, short_side=(24, 40, 64, 80), max_size=100, max_instances=m)
    for _ in range(20):
        h, w = int(np_rng.integers(20, 90)), int(np_rng.integers(20, 90))
        ex = _ellipse_example(np_rng, h, w, int(np_rng.integers(0, 8)))
        out = ia.augment_instances(ex, np.random.default_rng(np_rng.integers(1 << 30)), cfg)
        _check_shapes(out, crop, m)
        n = int(out["valid"].sum())
        assert out["valid"].tolist() == [True] * n + [False] * (m - n) and n <= len(ex["masks"])
        ch, cw = out["image_size"]
        assert ch <= crop[0] and cw <= crop[1]
        masks = out["masks"][:n]
        assert masks.any(axis=(1, 2)).all()  # no empty instance kept
        assert not out["masks"][:, ch:].any() and not out["masks"][:, :, cw:].any()
        assert not out["image"][ch:].any() and not out["image"][:, cw:].any()
        # Resized: the box is the scaled json box, the mask resampled; they agree within 1 px.
        np.testing.assert_allclose(out["boxes"][:n], ia.mask_boxes(masks), atol=1.0)
        assert not out["boxes"][n:].any() and not out["classes"][n:].any() and not out["masks"][n:].any()


def test_augment_crop_recomputes_cut_boxes_exactly(np_rng):
    cfg = ia.InstanceAugmentConfig(crop_size=(20, 24), flip=False, max_instances=10)
    for _ in range(10):
        ex = _ellipse_example(np_rng, 50, 60, 6)
        out = ia.augment_instances(ex, np.random.default_rng(np_rng.integers(1 << 30)), cfg)
        n = int(out["valid"].sum())
        assert out["image_size"].tolist() == [20, 24]
        # No resize: every box, cut or not, is exactly the tight box of its mask.
        np.testing.assert_array_equal(out["boxes"][:n], ia.mask_boxes(out["masks"][:n]))
        # The crop is a window of the input: find it from the image.
        img = ex["image"]
        hits = [(y, x) for y in range(31) for x in range(37)
                if np.array_equal(img[y:y + 20, x:x + 24], out["image"])]
        assert len(hits) == 1
        y, x = hits[0]
        window = ex["masks"][:, y:y + 20, x:x + 24]
        kept = window[window.reshape(6, -1).any(axis=1)]
        np.testing.assert_array_equal(out["masks"][:n], kept)


def test_augment_flip_mirrors_image_masks_and_boxes(np_rng):
    h, w = 30, 40
    ex = _ellipse_example(np_rng, h, w, 4)
    cfg = ia.InstanceAugmentConfig(crop_size=(h, w), flip=True, max_instances=4)
    seen = set()
    for seed in range(16):
        out = ia.augment_instances(ex, np.random.default_rng(seed), cfg)
        flipped = np.array_equal(out["image"], ex["image"][:, ::-1])
        if flipped:
            np.testing.assert_array_equal(out["masks"], ex["masks"][:, :, ::-1])
            want = np.stack([w - ex["boxes"][:, 2], ex["boxes"][:, 1], w - ex["boxes"][:, 0], ex["boxes"][:, 3]], 1)
            np.testing.assert_array_equal(out["boxes"], want)
        else:
            np.testing.assert_array_equal(out["image"], ex["image"])
            np.testing.assert_array_equal(out["masks"], ex["masks"])
            np.testing.assert_array_equal(out["boxes"], ex["boxes"])
        seen.add(flipped)
    assert seen == {True, False}
    cfg = ia.InstanceAugmentConfig(crop_size=(h, w), flip=False, max_instances=4)
    for seed in range(8):
        np.testing.assert_array_equal(ia.augment_instances(ex, np.random.default_rng(seed), cfg)["image"], ex["image"])


def test_augment_pads_small_images(np_rng):
    h, w = int(np_rng.integers(8, 20)), int(np_rng.integers(8, 20))
    ex = _ellipse_example(np_rng, h, w, 3)
    cfg = ia.InstanceAugmentConfig(crop_size=(32, 24), flip=False, max_instances=5)
    out = ia.augment_instances(ex, np_rng, cfg)
    _check_shapes(out, (32, 24), 5)
    assert out["image_size"].tolist() == [h, w]
    np.testing.assert_array_equal(out["image"][:h, :w], ex["image"])
    assert not out["image"][h:].any() and not out["image"][:, w:].any()
    np.testing.assert_array_equal(out["masks"][:3, :h, :w], ex["masks"])
    assert out["valid"].tolist() == [True, True, True, False, False]
    np.testing.assert_array_equal(out["classes"][:3], ex["classes"])


def test_augment_truncates_to_the_largest_instances(np_rng):
    ex = _ellipse_example(np_rng, 40, 40, 9)
    before = dict(ia.truncation_stats)
    cfg = ia.InstanceAugmentConfig(crop_size=(40, 40), flip=False, max_instances=4)
    out = ia.augment_instances(ex, np_rng, cfg)
    assert out["valid"].all()
    areas = ex["masks"].sum(axis=(1, 2))
    got = sorted(out["masks"].sum(axis=(1, 2)).tolist())
    assert got == sorted(areas.tolist())[-4:]
    assert ia.truncation_stats["examples"] == before["examples"] + 1
    assert ia.truncation_stats["instances"] == before["instances"] + 5


def test_augment_is_deterministic_and_pickles(np_rng):
    ex = _ellipse_example(np_rng, 60, 50, 5)
    cfg = ml_collections.ConfigDict({"crop_size": (32, 32), "short_side": (), "min_scale": 0.5, "max_scale": 2.0,
                                     "max_size": None, "flip": True, "max_instances": 6})
    transform = pickle.loads(pickle.dumps(ia.InstanceAugment(cfg)))
    assert transform.cfg.min_scale == 0.5 and transform.cfg.test_short_side is None
    seed = int(np_rng.integers(1 << 30))
    a = transform(ex, np.random.default_rng(seed))
    b = ia.augment_instances(ex, np.random.default_rng(seed), cfg)
    assert set(a) == set(b) - {"masks"} | {"mask_bits"}
    # the transform bit-packs the masks along W, first pixel in the highest bit
    unpacked = np.unpackbits(a.pop("mask_bits"), axis=-1)[..., :b["masks"].shape[-1]]
    np.testing.assert_array_equal(unpacked, b.pop("masks"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="max_instances"):
        ia.InstanceAugmentConfig(crop_size=(8, 8), max_instances=0)


def test_prepare_eval_instances_resizes_pads_and_reports_scale(np_rng):
    h, w = int(np_rng.integers(30, 70)), int(np_rng.integers(30, 70))
    ex = _ellipse_example(np_rng, h, w, 3)
    cfg = ia.InstanceAugmentConfig(crop_size=(8, 8), test_short_side=40, max_size=60, max_instances=4)
    out = ia.prepare_eval_instances(ex, cfg, 16)
    new_h, new_w = out["image_size"].tolist()
    assert min(new_h, new_w) == 40 or max(new_h, new_w) == 60
    assert out["image"].shape == (-(-new_h // 16) * 16, -(-new_w // 16) * 16, 3)
    assert not out["image"][new_h:].any() and not out["image"][:, new_w:].any()
    np.testing.assert_allclose(out["scale"], [new_h / h, new_w / w], rtol=1e-6)
    np.testing.assert_allclose(out["boxes"][:3], ex["boxes"] * np.asarray(out["scale"])[[1, 0, 1, 0]], rtol=1e-5)
    assert out["valid"].tolist() == [True] * 3 + [False] and out["image_id"] == 1 and "masks" not in out
    same = ia.prepare_eval_instances(ex, ia.InstanceAugmentConfig(crop_size=(8, 8)), 1, with_masks=True)
    np.testing.assert_array_equal(same["image"], ex["image"])
    np.testing.assert_array_equal(same["masks"][:3], ex["masks"])
    assert same["scale"].tolist() == [1.0, 1.0]


def test_train_iterator_with_instance_transform_yields_fixed_shapes(np_rng, synthetic_set):
    crop, m = (64, 72), 10
    transform = ia.InstanceAugment({"crop_size": crop, "short_side": (64, 96, 128), "max_size": 160,
                                    "max_instances": m})
    fakes = [_ellipse_example(np_rng, int(np_rng.integers(20, 80)), int(np_rng.integers(20, 80)),
                              int(np_rng.integers(0, 12))) for _ in range(6)]
    synthetic_source = CocoSource(synthetic_set[1]["train_images"], synthetic_set[1]["train_json"])
    for source in (fakes, synthetic_source):
        it = pipeline.train_iterator(source, global_batch_size=4, seed=3, transform=transform,
                                     num_threads=1, prefetch_batches=1)
        for _ in range(3):
            batch = next(it)
            assert set(batch) == {"image", "boxes", "classes", "mask_bits", "valid", "image_size"}
            assert batch["image"].shape == (4, *crop, 3)
            assert batch["mask_bits"].shape == (4, m, crop[0], -(-crop[1] // 8))
            assert batch["boxes"].shape == (4, m, 4) and batch["valid"].shape == (4, m)
            assert batch["image_size"].shape == (4, 2)
    # Same seed, same batches.
    a = next(pipeline.train_iterator(synthetic_source, global_batch_size=2, seed=5,
                                     transform=transform, num_threads=1))
    b = next(pipeline.train_iterator(synthetic_source, global_batch_size=2, seed=5,
                                     transform=transform, num_threads=1))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
