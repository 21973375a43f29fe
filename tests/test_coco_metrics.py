"""Tests for pointrend_jax/coco_metrics.py (and the instance pictures in visualize.py).

Oracles: a torch re-statement of detectron2's `_do_paste_mask` over the whole image; COCO
AP of hand-built cases worked out here (perfect predictions, known IoUs); Boundary IoU
regions by hand and a literal iterated 3x3 erosion.
"""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools.coco import COCO

from pointrend_jax.instance.coco_metrics import (
    ALL_KEYS,
    AP_SUFFIXES,
    BOUNDARY_KEYS,
    _erode,
    boundary_dilation,
    detections_to_coco,
    encode_rle,
    evaluate_coco,
    format_instance_table,
    mask_boundary,
    paste_masks,
)
from pointrend_jax.visualize import (
    blend_masks,
    instance_comparison_figure,
    instances_figure,
    palette,
    save_instance_comparison,
    save_instances,
)

THRESHOLDS = np.linspace(0.5, 0.95, 10)


# ----------------------------------------------------------------------------- paste_masks


def _d2_paste_probs(masks, boxes, h, w):
    """detectron2 `_do_paste_mask` on the whole image (skip_empty=False), float32."""
    m = torch.from_numpy(masks.astype(np.float32))[:, None]
    b = torch.from_numpy(boxes.astype(np.float32))
    x0, y0, x1, y1 = torch.split(b, 1, dim=1)
    img_y = torch.arange(0, h, dtype=torch.float32) + 0.5
    img_x = torch.arange(0, w, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    n = m.shape[0]
    gx = img_x[:, None, :].expand(n, h, w)
    gy = img_y[:, :, None].expand(n, h, w)
    grid = torch.stack([gx, gy], dim=3)
    return F.grid_sample(m, grid, align_corners=False)[:, 0].numpy()


@pytest.mark.parametrize("size,threshold", [(28, 0.5), (7, 0.5), (14, 0.3)])
def test_paste_masks_matches_detectron2(np_rng, size, threshold):
    h, w = 57, 83
    d = 40
    masks = np_rng.random((d, size, size))
    masks[: d // 2] = np.round(masks[: d // 2])  # some hard 0/1 masks, some soft
    cx = np_rng.uniform(-0.3 * w, 1.3 * w, d)
    cy = np_rng.uniform(-0.3 * h, 1.3 * h, d)
    bw = np_rng.uniform(0.2, 0.9 * w, d)
    bh = np_rng.uniform(0.2, 0.9 * h, d)
    bw[:5] = np_rng.uniform(0.05, 1.0, 5)  # boxes under a pixel wide or high
    bh[5:10] = np_rng.uniform(0.05, 1.0, 5)
    cx[10:15] = np_rng.uniform(0.0, w, 5)  # some surely inside
    cy[10:15] = np_rng.uniform(0.0, h, 5)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    ours = paste_masks(masks, boxes, (h, w), threshold=threshold)
    assert ours.shape == (d, h, w) and ours.dtype == bool
    probs = _d2_paste_probs(masks, boxes, h, w)
    sure = np.abs(probs - threshold) > 1e-5
    np.testing.assert_array_equal(ours[sure], probs[sure] >= threshold)
    assert ours[10:15].any()  # the comparison is not vacuous


def test_paste_masks_edge_cases():
    assert paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), (5, 6)).shape == (0, 5, 6)
    ones = np.ones((3, 7, 7))
    boxes = np.array([[2.0, 1.0, 6.0, 4.0],        # pixels whose centres lie in the box
                      [-10.0, -10.0, -3.0, -2.0],  # wholly outside
                      [3.0, 3.0, 3.0, 5.0]])       # zero width
    out = paste_masks(ones, boxes, (6, 8))
    expected = np.zeros((6, 8), bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(out[0], expected)
    assert not out[1].any() and not out[2].any()
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(ones, boxes[:2], (6, 8))
    with pytest.raises(ValueError, match="threshold"):
        paste_masks(ones, boxes, (6, 8), threshold=0.0)


# ----------------------------------------------------------------------------- RLE, results


def test_encode_rle_round_trip(np_rng):
    masks = np_rng.random((5, 23, 31)) < 0.4
    rles = encode_rle(masks)
    rles = json.loads(json.dumps(rles))  # JSON-able
    assert len(rles) == 5 and all(r["size"] == [23, 31] for r in rles)
    decoded = mask_util.decode(rles).transpose(2, 0, 1).astype(bool)
    np.testing.assert_array_equal(decoded, masks)
    assert encode_rle(np.zeros((0, 4, 4), bool)) == []


def test_detections_to_coco_maps_categories_and_xywh(np_rng):
    d = 6
    xy = np_rng.uniform(0, 30, (d, 2))
    wh = np_rng.uniform(1, 20, (d, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = np_rng.random(d).astype(np.float32)
    classes = np_rng.integers(0, 3, d)
    category_ids = [5, 11, 90]
    masks = np_rng.random((d, 40, 50)) < 0.3
    res = detections_to_coco(7, boxes, scores, classes, category_ids, masks)
    res = json.loads(json.dumps(res))
    assert len(res) == d
    for i, r in enumerate(res):
        assert r["image_id"] == 7 and r["category_id"] == category_ids[classes[i]]
        np.testing.assert_allclose(r["bbox"], [*xy[i], *wh[i]], rtol=1e-12, atol=1e-12)
        assert r["score"] == pytest.approx(float(scores[i]))
        np.testing.assert_array_equal(mask_util.decode(r["segmentation"]).astype(bool), masks[i])
    no_masks = detections_to_coco(7, boxes, scores, classes, category_ids)
    assert all("segmentation" not in r for r in no_masks)
    assert detections_to_coco(1, np.zeros((0, 4)), [], np.zeros(0, int), category_ids) == []
    with pytest.raises(ValueError, match="classes"):
        detections_to_coco(7, boxes, scores, classes + 1, category_ids)


# ----------------------------------------------------------------------------- COCO AP


def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0


def _coco(images, anns, category_ids):
    """In-memory COCO: images [(id, h, w)], anns [(image_id, category_id, mask, iscrowd)]."""
    dataset = {
        "images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"}
                   for i, h, w in images],
        "categories": [{"id": c, "name": f"c{c}"} for c in category_ids],
        "annotations": [],
    }
    for k, (image_id, cat, mask, crowd) in enumerate(anns):
        rle = encode_rle(mask[None])[0]
        dataset["annotations"].append({
            "id": k + 1, "image_id": image_id, "category_id": cat, "segmentation": rle,
            "area": float(mask.sum()), "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "iscrowd": int(crowd)})
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _random_gt(rng):
    category_ids = [3, 7, 12]
    images = [(10, 60, 80), (11, 130, 150), (12, 50, 50), (13, 90, 120), (14, 140, 140)]
    anns = []
    for image_id, h, w in images:
        if image_id == 12:
            continue  # an image without annotations
        for _ in range(rng.integers(1, 5)):
            ry, rx = rng.uniform(2.5, h / 2.2), rng.uniform(2.5, w / 2.2)
            cy, cx = rng.uniform(ry * 0.5, h - ry * 0.5), rng.uniform(rx * 0.5, w - rx * 0.5)
            mask = _ellipse(h, w, cy, cx, ry, rx)
            if mask.sum() >= 4:
                anns.append((image_id, int(rng.choice(category_ids)), mask, False))
    # One of each size for sure: small (< 32^2), medium, large (> 96^2) area.
    anns.append((11, 7, _ellipse(130, 150, 20, 20, 6, 8), False))
    anns.append((13, 3, _ellipse(90, 120, 45, 60, 20, 25), False))
    anns.append((14, 12, _ellipse(140, 140, 70, 70, 65, 66), False))
    return _coco(images, anns, category_ids), category_ids


def _results_from_gt(coco, category_ids, score=1.0):
    results = []
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        if not anns:
            continue
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns])
        classes = np.array([category_ids.index(a["category_id"]) for a in anns])
        results += detections_to_coco(image_id, boxes, np.full(len(anns), score), classes,
                                      category_ids, masks)
    return results


def _size_present(coco):
    areas = np.array([a["area"] for a in coco.dataset["annotations"]])
    # pycocotools' area ranges include both ends.
    return {"APs": (areas <= 32 ** 2).any(), "APm": ((areas >= 32 ** 2) & (areas <= 96 ** 2)).any(),
            "APl": (areas >= 96 ** 2).any(), "AP": True, "AP50": True, "AP75": True}


def test_perfect_prediction_scores_one_and_degraded_less(np_rng):
    coco, category_ids = _random_gt(np_rng)
    results = _results_from_gt(coco, category_ids)
    before = json.dumps(results)
    metrics = evaluate_coco(coco, results, boundary=True)
    assert json.dumps(results) == before  # the caller's results are left alone
    assert set(metrics) == set(ALL_KEYS)
    present = _size_present(coco)
    for t in ("bbox", "segm"):
        for s in AP_SUFFIXES:
            # 1.0 up to rounding: pycocotools averages over categories in floats.
            expected = 1.0 if present[s] else -1.0
            assert metrics[f"{t}_{s}"] == pytest.approx(expected, abs=1e-12), (t, s, metrics)
    for k in BOUNDARY_KEYS:
        assert metrics[k] == pytest.approx(1.0, abs=1e-12)
    json.dumps(metrics)

    # Degraded: masks eroded by one pixel, boxes shifted by 3 px, one detection dropped.
    worse = []
    for r in results[1:]:
        r = dict(r)
        m = mask_util.decode(r["segmentation"]).astype(bool)
        r["segmentation"] = encode_rle(_erode(m, 1)[None])[0]
        r["bbox"] = [r["bbox"][0] + 3.0] + r["bbox"][1:]
        worse.append(r)
    degraded = evaluate_coco(coco, worse, ("segm", "bbox"), boundary=True)
    for k in ("bbox_AP", "segm_AP", "boundary_AP"):
        assert 0.0 <= degraded[k] < 0.99


def test_image_ids_restrict_the_evaluation(np_rng):
    coco, category_ids = _random_gt(np_rng)
    results = _results_from_gt(coco, category_ids)
    keep = [r for r in results if r["image_id"] == 14]
    # Elsewhere only junk: a wrong class everywhere.
    junk = [dict(r, category_id=category_ids[(category_ids.index(r["category_id"]) + 1) % 3])
            for r in results if r["image_id"] != 14]
    m = evaluate_coco(coco, keep + junk, image_ids=[14])
    assert m["segm_AP"] == pytest.approx(1.0) and m["bbox_AP"] == pytest.approx(1.0)
    assert evaluate_coco(coco, keep + junk)["segm_AP"] < 0.99
    with pytest.raises(ValueError, match="image_ids"):
        evaluate_coco(coco, results, image_ids=[999])


def test_empty_results_give_zeros(np_rng):
    coco, _ = _random_gt(np_rng)
    m = evaluate_coco(coco, [], boundary=True)
    assert m == {k: 0.0 for k in ALL_KEYS}
    assert evaluate_coco(coco, [], ("bbox",)) == {f"bbox_{s}": 0.0 for s in AP_SUFFIXES}


def _square(h, w, y0, x0, side_y, side_x):
    m = np.zeros((h, w), bool)
    m[y0:y0 + side_y, x0:x0 + side_x] = True
    return m


# shift 10 gives IoU 30/50 = 0.6, on a threshold: left out.
@pytest.mark.parametrize("shift", [s for s in range(1, 30) if s != 10])
def test_ap_of_one_detection_with_known_iou(shift):
    # GT 40x40 square; the detection is the same square moved right by `shift` pixels:
    # IoU = (40 - s) / (40 + s) for both boxes and masks; AP = thresholds passed / 10.
    iou = (40 - shift) / (40 + shift)
    if np.min(np.abs(THRESHOLDS - iou)) < 1e-9:
        pytest.skip("IoU on a threshold")
    coco = _coco([(1, 100, 100)], [(1, 5, _square(100, 100, 10, 10, 40, 40), False)], [5])
    det = _square(100, 100, 10, 10 + shift, 40, 40)
    res = detections_to_coco(1, [[10.0 + shift, 10.0, 50.0 + shift, 50.0]], [0.9], [0], [5],
                             det[None])
    m = evaluate_coco(coco, res)
    expected = np.sum(iou >= THRESHOLDS) / 10.0
    for t in ("bbox", "segm"):
        assert m[f"{t}_AP"] == pytest.approx(expected, abs=1e-12)
        assert m[f"{t}_AP50"] == pytest.approx(float(iou >= 0.5), abs=1e-12)
        assert m[f"{t}_AP75"] == pytest.approx(float(iou >= 0.75), abs=1e-12)
        assert m[f"{t}_APm"] == pytest.approx(expected, abs=1e-12)  # area 1600: medium
        assert m[f"{t}_APs"] == -1.0 and m[f"{t}_APl"] == -1.0


def test_ap_with_a_missing_detection():
    # k GT squares of one class, k - 1 found exactly: precision 1 up to recall (k-1)/k, so
    # AP = the share of COCO's 101 recall thresholds r <= (k-1)/k, at every IoU threshold.
    k = 3
    gts = [(1, 2, _square(120, 120, 5 + 38 * i, 5 + 38 * i, 30, 30), False) for i in range(k)]
    coco = _coco([(1, 120, 120)], gts, [2])
    masks = np.stack([g[2] for g in gts[:-1]])
    boxes = [[5.0 + 38 * i, 5.0 + 38 * i, 35.0 + 38 * i, 35.0 + 38 * i] for i in range(k - 1)]
    res = detections_to_coco(1, boxes, [0.8, 0.7], [0, 0], [2], masks)
    m = evaluate_coco(coco, res)
    recall_thresholds = np.arange(101) / 100.0
    expected = np.sum(recall_thresholds <= (k - 1) / k) / 101.0
    assert m["segm_AP"] == pytest.approx(expected) and m["bbox_AP"] == pytest.approx(expected)


# ----------------------------------------------------------------------------- Boundary IoU


def _literal_boundary(mask, d):
    """boundary-iou-api's recipe step by step: pad by one background pixel, erode `d`
    times with a 3x3 square (outside the padded array counts as foreground, as cv2's
    erosion border), crop, subtract."""
    m = np.pad(mask, 1).astype(bool)
    for _ in range(d):
        p = np.pad(m, 1, constant_values=True)
        m = np.all([p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return mask & ~m[1:-1, 1:-1]


def test_boundary_of_a_square_by_hand():
    mask = _square(50, 50, 10, 5, 20, 20)  # diagonal 70.7 -> d = 1
    assert boundary_dilation(50, 50) == 1
    expected = mask.copy()
    expected[11:29, 6:24] = False
    np.testing.assert_array_equal(mask_boundary(mask), expected)
    mask = _square(100, 100, 0, 30, 40, 20)  # d = round(2.83) = 3; touches the top border
    assert boundary_dilation(100, 100) == 3
    expected = mask.copy()
    expected[3:37, 33:47] = False  # the image border counts as outside
    np.testing.assert_array_equal(mask_boundary(mask), expected)


def test_boundary_matches_literal_erosion(np_rng):
    for h, w in ((37, 52), (120, 90)):
        mask = np_rng.random((h, w)) < 0.8
        mask[: h // 3] |= _ellipse(h, w, h / 2, w / 2, h / 3, w / 4)[: h // 3]
        d = boundary_dilation(h, w)
        np.testing.assert_array_equal(mask_boundary(mask), _literal_boundary(mask, d))
        for dd in (1, 2, 4):
            np.testing.assert_array_equal(mask & ~_erode(mask, dd), _literal_boundary(mask, dd))
    assert not mask_boundary(np.zeros((8, 9), bool)).any()


def test_boundary_ap_with_a_shifted_border():
    # GT 60x60 square in a 200x200 image (d = round(0.02 * 282.8) = 6); the prediction has
    # the same interior with its border 1 px further out (62x62).
    h = w = 200
    d = boundary_dilation(h, w)
    assert d == 6
    gt = _square(h, w, 50, 50, 60, 60)
    det = _square(h, w, 49, 49, 62, 62)
    mask_iou = 60 ** 2 / 62 ** 2
    gt_ring = 60 ** 2 - (60 - 2 * d) ** 2
    det_ring = 62 ** 2 - (62 - 2 * d) ** 2
    both = 60 ** 2 - (62 - 2 * d) ** 2  # the det ring reaches d - 1 px inside the GT edge
    boundary_iou = both / (gt_ring + det_ring - both)
    coco = _coco([(1, h, w)], [(1, 4, gt, False)], [4])
    res = detections_to_coco(1, [[49.0, 49.0, 111.0, 111.0]], [0.9], [0], [4], det[None])
    m = evaluate_coco(coco, res, ("segm",), boundary=True)
    assert m["segm_AP"] == pytest.approx(np.sum(mask_iou >= THRESHOLDS) / 10)  # 0.9
    expected = np.sum(min(mask_iou, boundary_iou) >= THRESHOLDS) / 10  # 0.5
    assert m["boundary_AP"] == pytest.approx(expected)
    assert m["boundary_AP"] < m["segm_AP"]
    assert m["boundary_AP50"] == pytest.approx(1.0) and m["boundary_AP75"] == 0.0


def test_boundary_ap_uses_mask_iou_for_crowd_ground_truth():
    # A crowd region with a ragged-bordered detection inside it, scored above the true
    # positive: with the crowd IoU (intersection / detection area = 1) it is ignored, not a
    # false positive; a Boundary IoU there would make it one and lower the AP.
    h = w = 200
    person = _square(h, w, 10, 10, 50, 50)
    crowd = _square(h, w, 100, 100, 90, 90)
    inside = _square(h, w, 110, 110, 40, 40)
    inside[110:150:2, 110] = False  # a ragged border
    coco = _coco([(1, h, w)], [(1, 1, person, False), (1, 1, crowd, True)], [1])
    res = detections_to_coco(
        1, [[10.0, 10.0, 60.0, 60.0], [110.0, 110.0, 150.0, 150.0]], [0.5, 0.9], [0, 0], [1],
        np.stack([person, inside]))
    m = evaluate_coco(coco, res, ("segm",), boundary=True)
    assert m["segm_AP"] == pytest.approx(1.0) and m["boundary_AP"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- table


def test_format_instance_table():
    coarse = {"bbox_AP": 0.3512, "segm_AP": 0.3141, "segm_APs": -1.0}
    pointrend = {"bbox_AP": 0.3512, "segm_AP": 0.3333, "segm_APs": 0.12, "boundary_AP": 0.25}
    table = format_instance_table({"coarse": coarse, "pointrend": pointrend})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "coarse", "pointrend"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == ["bbox_AP", "segm_AP", "segm_APs", "boundary_AP"]
    assert rows["bbox_AP"] == ["35.1", "35.1"]
    assert rows["segm_AP"] == ["31.4", "33.3"]
    assert rows["segm_APs"] == ["-", "12.0"]
    assert rows["boundary_AP"] == ["-", "25.0"]
    with pytest.raises(ValueError):
        format_instance_table({})


# ----------------------------------------------------------------------------- pictures


def _png_pixel(png, fig, ax, x, y):
    """The PNG's colour at image-pixel coordinates (x, y) of axes `ax`."""
    dx, dy = ax.transData.transform((x, y))
    height = fig.canvas.get_width_height()[1]
    return png[int(height - dy), int(dx)]


def test_save_instances_draws_masks(tmp_path, np_rng):
    h, w = 64, 96
    image = np.full((h, w, 3), 128, np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, 8:30, 10:40] = True
    masks[1, 35:60, 55:90] = True
    boxes = np.array([[10.0, 8.0, 40.0, 30.0], [55.0, 35.0, 90.0, 60.0]])
    classes = np.array([0, 2])
    names = ["cat", "dog", "bird"]
    points = [np_rng.uniform([0, 40], [8, 64], (20, 2))]  # away from the pixels checked
    path = save_instances(tmp_path / "a" / "b.png", image, boxes, classes, [0.9, 0.75], masks,
                          names, points=points, title="x")
    png = np.asarray(Image.open(path).convert("RGB"))
    fig = instances_figure(image, boxes, classes, [0.9, 0.75], masks, names, points=points,
                           title="x")
    width, height = fig.canvas.get_width_height()
    assert png.shape == (height, width, 3)
    assert 256 <= width <= 600 and 200 <= height <= 600
    ax = fig.axes[0]
    blended = blend_masks(image, masks, classes, 3)
    for (x, y), m in (((20.0, 20.0), 0), ((75.0, 50.0), 1)):
        colour = _png_pixel(png, fig, ax, x, y).astype(int)
        expected = blended[int(y), int(x)].astype(int)
        assert np.abs(colour - expected).max() <= 3, (colour, expected)
        assert np.abs(colour - 128).max() > 20  # the mask is visible
        colour_of_class = palette(3)[classes[m]].astype(int)
        assert np.abs(expected - colour_of_class).max() < np.abs(128 - colour_of_class).max()
    # Far from every mask, box and label the image shows through unchanged.
    assert np.abs(_png_pixel(png, fig, ax, 80.0, 15.0).astype(int) - 128).max() <= 2


def test_save_instance_comparison_three_panels(tmp_path):
    h, w = 48, 48
    image = np.full((h, w, 3), 200, np.uint8)
    gt_masks = np.zeros((1, h, w), bool)
    gt_masks[0, 10:40, 10:40] = True
    coarse_masks = np.zeros((1, h, w), bool)
    coarse_masks[0, 12:30, 12:30] = True
    box = np.array([[10.0, 10.0, 40.0, 40.0]])
    gt = {"boxes": box, "classes": np.array([1]), "scores": None, "masks": gt_masks}
    coarse = {"boxes": box, "classes": np.array([1]), "scores": [0.8], "masks": coarse_masks}
    pointrend = {"boxes": box, "classes": np.array([1]), "scores": [0.8], "masks": gt_masks}
    path = save_instance_comparison(tmp_path / "cmp" / "c.png", image, gt, coarse, pointrend,
                                    ["a", "b"], points=[np.array([[20.0, 20.0]])])
    png = np.asarray(Image.open(path).convert("RGB"))
    fig = instance_comparison_figure(image, gt, coarse, pointrend, ["a", "b"],
                                     points=[np.array([[20.0, 20.0]])])
    width, height = fig.canvas.get_width_height()
    assert png.shape == (height, width, 3) and width > 2.5 * height
    gt_ax, coarse_ax, pr_ax = fig.axes
    inside_gt_only = (35.0, 35.0)  # in the GT and PointRend masks, not the coarse one
    grey = np.array([200, 200, 200])
    assert np.abs(_png_pixel(png, fig, gt_ax, *inside_gt_only).astype(int) - grey).max() > 20
    assert np.abs(_png_pixel(png, fig, pr_ax, *inside_gt_only).astype(int) - grey).max() > 20
    assert np.abs(_png_pixel(png, fig, coarse_ax, *inside_gt_only).astype(int) - grey).max() <= 2
    with pytest.raises(ValueError, match="masks"):
        save_instance_comparison(tmp_path / "x.png", image, gt, coarse,
                                 dict(pointrend, masks=gt_masks[:, :10]), ["a", "b"])
