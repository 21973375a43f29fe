"""Tests for pointrend_jax/metrics.py against NumPy/SciPy restatements of the definitions."""
import jax
import numpy as np
import pytest
from scipy import ndimage

from pointrend_jax.semantic.metrics import (
    SegmentationMetrics,
    boundary_dilation,
    boundary_iou_stats,
    confusion_matrix,
    format_table,
)

IGNORE = 255


def blob_labels(rng, n, h, w, num_classes, sigma=3.0):
    """Random label maps made of smooth blobs: argmax of smoothed noise, (n, h, w) int32."""
    noise = rng.normal(size=(n, num_classes, h, w))
    smooth = ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma))
    return np.argmax(smooth, axis=1).astype(np.int32)


def add_ignore(rng, label):
    """Sets a random rectangle and a few random pixels of each map to 255."""
    label = label.copy()
    n, h, w = label.shape
    for i in range(n):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        label[i, y0:y0 + rng.integers(2, 8), x0:x0 + rng.integers(2, 8)] = IGNORE
        flat = rng.choice(h * w, size=5, replace=False)
        label[i].reshape(-1)[flat] = IGNORE
    return label


def noisy_prediction(rng, label, num_classes, flip=0.1):
    """A prediction close to label: the label shifted by a pixel, with random flips."""
    pred = np.where(label == IGNORE, 0, label)
    pred = np.roll(pred, shift=(1, -1), axis=(1, 2))
    flips = rng.random(pred.shape) < flip
    pred = np.where(flips, rng.integers(0, num_classes, pred.shape), pred)
    return pred.astype(np.int32)


def test_confusion_matrix_matches_numpy_count_and_skips_ignore(np_rng):
    k = 6
    label = add_ignore(np_rng, blob_labels(np_rng, 2, 23, 31, k))
    label[0, 0, :3] = k + 3  # out of range labels are ignored like 255
    pred = np_rng.integers(0, k, label.shape).astype(np.int32)

    expected = np.zeros((k, k), np.int64)
    for g, p in zip(label.reshape(-1), pred.reshape(-1)):
        if 0 <= g < k:
            expected[g, p] += 1

    got = np.asarray(jax.jit(confusion_matrix, static_argnums=2)(pred, label, k))
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == np.sum(label < k)


def semseg_reference(pred, label, num_classes):
    """detectron2 SemSegEvaluator, restated from its definition over raw pixels."""
    valid = label != IGNORE
    ious, tps, gts = [], [], []
    for c in range(num_classes):
        g = (label == c) & valid
        p = (pred == c) & valid
        tp, n_gt = np.sum(g & p), np.sum(g)
        tps.append(tp)
        gts.append(n_gt)
        ious.append(tp / np.sum(g | p) if n_gt > 0 else None)
    present = [v for v in ious if v is not None]
    return ious, float(np.mean(present)), float(np.sum(tps) / np.sum(gts))


def test_miou_and_pixel_accuracy_follow_semseg_evaluator_with_class_absent_from_gt(np_rng):
    k = 5
    label = add_ignore(np_rng, blob_labels(np_rng, 4, 19, 27, k - 1))  # class 4 never in gt
    pred = noisy_prediction(np_rng, label, k, flip=0.2)
    assert np.any(pred == k - 1) and not np.any(label == k - 1)

    names = ["road", "car", "tree", "sky", "boat"]
    metrics = SegmentationMetrics(k, names)
    for half in (slice(0, 2), slice(2, 4)):  # two batches add up to the whole split
        metrics.update(confusion_matrix(pred[half], label[half], k),
                       *boundary_iou_stats(pred[half], label[half], k))
    result = metrics.compute()

    ious, miou, pacc = semseg_reference(pred, label, k)
    assert result["per_class_iou"]["boat"] is None
    assert result["per_class_boundary_iou"]["boat"] is None
    for name, ref in zip(names, ious):
        if ref is not None:
            assert result["per_class_iou"][name] == pytest.approx(ref, abs=1e-12)
    assert result["miou"] == pytest.approx(miou, abs=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(pacc, abs=1e-12)
    for key in ("miou", "boundary_iou", "pixel_accuracy"):
        assert type(result[key]) is float and 0.0 <= result[key] <= 1.0


def boundary_oracle(pred, label, num_classes, d):
    """Boundary IoU counts with SciPy's iterated 3x3 erosion, outside the image = 0."""
    inter = np.zeros(num_classes, np.int64)
    union = np.zeros(num_classes, np.int64)
    square = np.ones((3, 3), bool)
    for g_img, p_img in zip(label, pred):
        valid = g_img != IGNORE
        for c in range(num_classes):
            edges = []
            for mask in (g_img == c, p_img == c):
                eroded = ndimage.binary_erosion(mask, structure=square, iterations=d,
                                                border_value=0)
                edges.append(mask & ~eroded & valid)
            inter[c] += np.sum(edges[0] & edges[1])
            union[c] += np.sum(edges[0] | edges[1])
    return inter, union


@pytest.mark.parametrize("shape, ratio, d", [((3, 37, 53), 0.02, 1), ((2, 41, 29), 0.06, 3)])
def test_boundary_iou_stats_match_scipy_erosion_oracle(np_rng, shape, ratio, d):
    k = 4
    n, h, w = shape
    assert boundary_dilation(h, w, ratio) == d
    label = add_ignore(np_rng, blob_labels(np_rng, n, h, w, k))
    pred = noisy_prediction(np_rng, label, k, flip=0.05)

    inter, union = boundary_iou_stats(pred, label, k, dilation_ratio=ratio)
    ref_inter, ref_union = boundary_oracle(pred, label, k, d)
    np.testing.assert_array_equal(np.asarray(inter), ref_inter)
    np.testing.assert_array_equal(np.asarray(union), ref_union)
    assert np.all(ref_union > 0) and np.any(ref_inter < ref_union)


def test_perfect_prediction_gives_one_everywhere(np_rng):
    k = 5
    label = add_ignore(np_rng, blob_labels(np_rng, 2, 33, 35, k - 1))
    # On ignored pixels the prediction is a class absent from the ground truth: pred == c
    # is then gt == c for every class c in the ground truth, ignored pixels included,
    # which the boundary regions need, as ignored pixels count as "not c" when eroding.
    pred = np.where(label == IGNORE, k - 1, label).astype(np.int32)
    metrics = SegmentationMetrics(k)
    metrics.update(confusion_matrix(pred, label, k),
                   *boundary_iou_stats(pred, label, k, dilation_ratio=0.05))
    result = metrics.compute()
    assert result["miou"] == result["boundary_iou"] == result["pixel_accuracy"] == 1.0
    for per_class in (result["per_class_iou"], result["per_class_boundary_iou"]):
        assert per_class == {"0": 1.0, "1": 1.0, "2": 1.0, "3": 1.0, "4": None}


def test_predicting_into_ignored_region_only_changes_boundary_iou():
    # gt: left half class 0, right half class 1, a 255 band between them (cols 30..33).
    # Predicting class 0 over the band leaves mIoU at 1 (ignored pixels are not counted)
    # but moves class 0's predicted boundary off the band's edge: the ignored pixels
    # count as outside gt == 0 when eroding, as Boundary IoU defines it (docs/design.md).
    label = np.zeros((1, 64, 64), np.int32)
    label[0, :, 32:] = 1
    label[0, :, 30:34] = IGNORE
    pred = np.where(label == IGNORE, 0, label).astype(np.int32)
    conf = confusion_matrix(pred, label, 2)
    inter, union = boundary_iou_stats(pred, label, 2, dilation_ratio=0.01)
    metrics = SegmentationMetrics(2)
    metrics.update(conf, inter, union)
    result = metrics.compute()
    assert result["miou"] == 1.0
    assert result["per_class_boundary_iou"]["1"] == 1.0
    # Class 0, d = 1: gt ring = frame of cols 0..29 (2*30 + 2*62 = 184 px), col 29 is on
    # it. The prediction covers cols 0..33; its ring loses col 29 rows 1..62 (62 px) and
    # gains col 33 (ignored, dropped) -> intersection 122, union 184.
    assert (int(inter[0]), int(union[0])) == (122, 184)


@pytest.mark.parametrize("top_left, background", [((20, 30), 296), ((0, 0), 252)])
def test_square_in_64x64_has_boundary_ring_of_36_pixels(top_left, background):
    # At d = 1 the ring of a 10x10 square is 10*10 - 8*8 = 36 pixels, also at the image
    # corner, because the border counts as outside.
    # Background, square inside: the image frame (4*64 - 4 = 252) plus the ring around the
    # square (12*12 - 10*10 = 44). Square in the corner: the frame minus the 19 frame pixels
    # the square covers (233), plus the 19 ring pixels off the frame (row 10 cols 1..10,
    # col 10 rows 1..9) = 252.
    assert boundary_dilation(64, 64, 0.01) == 1
    y, x = top_left
    label = np.zeros((1, 64, 64), np.int32)
    label[0, y:y + 10, x:x + 10] = 1
    inter, union = boundary_iou_stats(label, label, 2, dilation_ratio=0.01)
    assert int(inter[1]) == int(union[1]) == 36
    assert int(inter[0]) == int(union[0]) == background


def test_shifted_square_boundary_iou_by_hand():
    # gt square rows/cols 20..29, prediction shifted right by 2 (cols 22..31), d = 1.
    # The two 36-pixel rings share only their top and bottom rows over cols 22..29:
    # intersection 2 * 8 = 16, union 36 + 36 - 16 = 56.
    label = np.zeros((1, 64, 64), np.int32)
    label[0, 20:30, 20:30] = 1
    pred = np.zeros_like(label)
    pred[0, 20:30, 22:32] = 1
    inter, union = boundary_iou_stats(pred, label, 2, dilation_ratio=0.01)
    assert (int(inter[1]), int(union[1])) == (16, 56)


def test_boundary_dilation_follows_image_diagonal():
    assert boundary_dilation(512, 512) == 14  # 0.02 * 724.08 = 14.48
    assert boundary_dilation(1024, 2048) == 46  # 0.02 * 2289.7 = 45.8
    assert boundary_dilation(8, 8) == 1  # at least one pixel


def test_update_rejects_wrong_shapes_and_compute_needs_data():
    metrics = SegmentationMetrics(3, ["a", "b", "c"])
    with pytest.raises(ValueError, match="no labelled pixels"):
        metrics.compute()
    with pytest.raises(ValueError, match="confusion"):
        metrics.update(np.zeros((2, 2), np.int32), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="boundary_union"):
        metrics.update(np.eye(3, dtype=np.int32), np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetrics(3, ["a", "b"])


def test_format_table_puts_results_side_by_side_in_percent():
    coarse = {"miou": 0.5, "boundary_iou": 0.25, "pixel_accuracy": 0.9,
              "per_class_iou": {"road": 0.75, "boat": None}}
    pointrend = {"miou": 0.5123, "boundary_iou": 0.3, "pixel_accuracy": 0.91,
                 "per_class_iou": {"road": 0.8, "boat": None}}
    table = format_table({"coarse": coarse, "pointrend": pointrend})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "coarse", "pointrend"]
    assert lines[2].split() == ["mIoU", "50.00", "51.23"]
    assert lines[3].split() == ["boundary", "IoU", "25.00", "30.00"]
    assert lines[4].split() == ["pixel", "acc", "90.00", "91.00"]
    assert lines[5].split() == ["IoU", "road", "75.00", "80.00"]
    assert lines[6].split() == ["IoU", "boat", "-", "-"]
