"""box_ops against independent oracles: NumPy loops (float64), torch re-statement of
torchvision's ROIAlign, and NumPy re-statements of d2's Matcher and subsample_labels."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pointrend_jax.models import box_ops as B


# ----------------------------------------------------------------------------- helpers


def random_boxes(rng, n, lo=-20.0, hi=100.0, min_size=0.5, max_size=60.0):
    xy = rng.uniform(lo, hi, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def integer_boxes(rng, n, extent=40, max_size=24):
    """Boxes on the integer grid (exact IoUs in float32: comparisons against thresholds
    agree with float64), including exact duplicates and empty boxes."""
    xy = rng.integers(0, extent, size=(n, 2))
    wh = rng.integers(1, max_size, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float64)
    boxes[n // 3] = boxes[0]  # duplicate box
    boxes[n // 2, 2] = boxes[n // 2, 0]  # empty box
    return boxes


def np_iou(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
            ih = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


# ----------------------------------------------------------------------------- anchors


def np_anchors(height, width, stride, sizes, ratios, offset):
    out = []
    for y in range(height):
        for x in range(width):
            sx, sy = (x + offset) * stride, (y + offset) * stride
            for size in sizes:
                for ratio in ratios:
                    w = math.sqrt(size * size / ratio)
                    h = ratio * w
                    out.append([sx - w / 2, sy - h / 2, sx + w / 2, sy + h / 2])
    return np.asarray(out)


@pytest.mark.parametrize("height,width,stride,sizes,ratios,offset", [
    (3, 5, 4, (32,), (0.5, 1.0, 2.0), 0.0),
    (4, 2, 16, (128, 181.0), (1.0,), 0.5),
    (1, 1, 64, (512, 256, 300), (0.25, 1.0, 3.0), 0.5),
    (7, 6, 8, (64,), (0.5, 2.0), 0.0),
])
def test_anchors_for_level_equal_loop(height, width, stride, sizes, ratios, offset):
    got = B.anchors_for_level(height, width, stride, sizes, ratios, offset)
    assert got.dtype == np.float32
    assert got.shape == (height * width * len(sizes) * len(ratios), 4)
    np.testing.assert_allclose(got, np_anchors(height, width, stride, sizes, ratios, offset),
                               rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("kwargs,name", [
    (dict(height=0), "height"), (dict(stride=0), "stride"), (dict(sizes=()), "sizes"),
    (dict(aspect_ratios=(0.0,)), "aspect_ratios"), (dict(offset=1.0), "offset"),
])
def test_anchors_for_level_bad_args(kwargs, name):
    args = dict(height=2, width=2, stride=4, sizes=(32,), aspect_ratios=(1.0,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        B.anchors_for_level(**args)


# ------------------------------------------------------------------------ encode/decode


def np_encode(src, dst, weights):
    wx, wy, ww, wh = weights
    sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
    sx, sy = src[:, 0] + 0.5 * sw, src[:, 1] + 0.5 * sh
    tw, th = dst[:, 2] - dst[:, 0], dst[:, 3] - dst[:, 1]
    tx, ty = dst[:, 0] + 0.5 * tw, dst[:, 1] + 0.5 * th
    return np.stack([wx * (tx - sx) / sw, wy * (ty - sy) / sh,
                     ww * np.log(tw / sw), wh * np.log(th / sh)], axis=1)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip_and_numpy(np_rng, weights):
    src = random_boxes(np_rng, 50, min_size=2.0)
    dst = random_boxes(np_rng, 50, min_size=2.0)
    encode = jax.jit(functools.partial(B.encode_boxes, weights=weights))
    decode = jax.jit(functools.partial(B.decode_boxes, weights=weights))
    deltas = encode(jnp.asarray(src, jnp.float32), jnp.asarray(dst, jnp.float32))
    np.testing.assert_allclose(deltas, np_encode(src, dst, weights), rtol=1e-4, atol=1e-4)
    back = decode(deltas, jnp.asarray(src, jnp.float32))
    np.testing.assert_allclose(back, dst, rtol=1e-5, atol=1e-3)
    # Broadcasting leading axes: one set of deltas on (2, 50) boxes.
    back2 = B.decode_boxes(deltas, jnp.stack([jnp.asarray(src, jnp.float32)] * 2), weights)
    assert back2.shape == (2, 50, 4)


def test_decode_clamps_scale():
    box = jnp.asarray([[10.0, 20.0, 30.0, 60.0]])  # w 20, h 40, centre (20, 40)
    clamp = math.log(1000.0 / 16)
    deltas = jnp.asarray([[0.0, 0.0, 50.0, -3.0]])
    out = np.asarray(B.decode_boxes(deltas, box))[0]
    w = 20 * math.exp(clamp)
    h = 40 * math.exp(-3.0)
    np.testing.assert_allclose(out, [20 - w / 2, 40 - h / 2, 20 + w / 2, 40 + h / 2], rtol=1e-5)
    out = np.asarray(B.decode_boxes(deltas * 5, box, (1.0, 1.0, 5.0, 5.0), scale_clamp=1.0))[0]
    np.testing.assert_allclose(out[2] - out[0], 20 * math.e, rtol=1e-5)
    np.testing.assert_allclose(out[3] - out[1], 40 * math.exp(-3.0), rtol=1e-5)
    with pytest.raises(ValueError, match="deltas"):
        B.decode_boxes(jnp.zeros((3, 5)), box)
    with pytest.raises(ValueError, match="weights"):
        B.encode_boxes(box, box, weights=(1.0, 1.0, 1.0))


# ------------------------------------------------------------------------------ geometry


def test_pairwise_iou_area_clip_nonempty(np_rng):
    a = random_boxes(np_rng, 13)
    b = random_boxes(np_rng, 9)
    b[0] = [5, 5, 5, 9]  # empty
    a[1] = [5, 5, 5, 9]  # the same empty box: union 0
    b[1] = a[2]
    got = jax.jit(B.pairwise_iou)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    assert got.shape == (13, 9)
    np.testing.assert_allclose(got, np_iou(a, b), atol=2e-6)
    assert float(got[2, 1]) == pytest.approx(1.0)
    assert float(got[1, 0]) == 0.0
    np.testing.assert_allclose(B.box_area(jnp.asarray(a, jnp.float32)),
                               (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), rtol=1e-5)
    nonempty = np.asarray(B.box_is_nonempty(jnp.asarray(b, jnp.float32)))
    assert not nonempty[0] and nonempty[1:].all()

    # Clip with traced per-image sizes: (B,) aligned on the leading axis.
    boxes = np.stack([random_boxes(np_rng, 6, lo=-50, hi=150)] * 2).astype(np.float32)
    heights = np.asarray([40.0, 70.0], np.float32)
    widths = np.asarray([90.0, 30.0], np.float32)
    clipped = np.asarray(jax.jit(B.clip_boxes)(boxes, heights, widths))
    for i in range(2):
        want = boxes[i].copy()
        want[:, 0::2] = np.clip(want[:, 0::2], 0, widths[i])
        want[:, 1::2] = np.clip(want[:, 1::2], 0, heights[i])
        np.testing.assert_array_equal(clipped[i], want)
    np.testing.assert_array_equal(B.clip_boxes(boxes, heights[:, None], widths[:, None]), clipped)
    scalar = np.asarray(B.clip_boxes(boxes[0], 40, 90))
    np.testing.assert_array_equal(scalar, clipped[0])
    with pytest.raises(ValueError, match="height"):
        B.clip_boxes(boxes[0], np.ones((6, 2)), 5.0)


# ----------------------------------------------------------------------------------- NMS


def np_nms(boxes, scores, iou_threshold, valid, groups=None):
    iou = np_iou(boxes, boxes)
    order = sorted((i for i in range(len(boxes)) if valid[i]), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou[i, k] <= iou_threshold or (groups is not None and groups[i] != groups[k])
               for k in keep):
            keep.append(i)
    return keep


def check_nms_output(indices, keep_valid, want, max_output):
    indices, keep_valid = np.asarray(indices), np.asarray(keep_valid)
    assert indices.shape == (max_output,) and indices.dtype == np.int32
    assert keep_valid.shape == (max_output,) and keep_valid.dtype == bool
    want = want[:max_output]
    assert keep_valid.sum() == len(want)
    assert keep_valid[:len(want)].all()
    np.testing.assert_array_equal(indices[:len(want)], want)
    np.testing.assert_array_equal(indices[len(want):], 0)


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_equals_numpy_greedy(np_rng, iou_threshold):
    n = 80
    boxes = integer_boxes(np_rng, n)
    scores = np_rng.integers(0, 12, size=n) / 12.0  # many duplicate scores
    valid = np_rng.uniform(size=n) > 0.15
    want = np_nms(boxes, scores, iou_threshold, valid)
    assert len(want) > 5
    for max_output in (n + 5, max(len(want) - 4, 1)):
        run = jax.jit(functools.partial(B.nms, iou_threshold=iou_threshold, max_output=max_output))
        got = run(jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32),
                  valid=jnp.asarray(valid))
        check_nms_output(*got, want, max_output)
    got = B.nms(jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32),
                iou_threshold=iou_threshold, max_output=n)
    check_nms_output(*got, np_nms(boxes, scores, iou_threshold, np.ones(n, bool)), n)


def test_batched_nms_equals_numpy_greedy_per_group(np_rng):
    n = 90
    boxes = integer_boxes(np_rng, n)
    scores = np_rng.integers(0, 15, size=n) / 15.0
    groups = np_rng.integers(0, 4, size=n)
    valid = np_rng.uniform(size=n) > 0.1
    want = np_nms(boxes, scores, 0.5, valid, groups)
    assert len(want) > len(np_nms(boxes, scores, 0.5, valid))
    for max_output in (n, len(want) // 2):
        got = jax.jit(functools.partial(B.batched_nms, iou_threshold=0.5, max_output=max_output))(
            jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32),
            jnp.asarray(groups, jnp.int32), valid=jnp.asarray(valid))
        check_nms_output(*got, want, max_output)


def test_nms_edge_cases():
    boxes = jnp.asarray([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], jnp.float32)
    scores = jnp.asarray([0.5, 0.5, 0.9])
    idx, ok = B.nms(boxes, scores, iou_threshold=0.5, max_output=4)
    np.testing.assert_array_equal(idx, [2, 0, 0, 0])
    np.testing.assert_array_equal(ok, [True, True, False, False])
    idx, ok = B.nms(boxes, scores, iou_threshold=0.5, max_output=2, valid=jnp.zeros(3, bool))
    assert not np.asarray(ok).any() and not np.asarray(idx).any()
    idx, ok = B.nms(jnp.zeros((0, 4)), jnp.zeros((0,)), iou_threshold=0.5, max_output=3)
    assert idx.shape == (3,) and not np.asarray(ok).any()
    with pytest.raises(ValueError, match="max_output"):
        B.nms(boxes, scores, iou_threshold=0.5, max_output=0)
    with pytest.raises(ValueError, match="scores"):
        B.nms(boxes, scores[:2], iou_threshold=0.5, max_output=2)
    with pytest.raises(ValueError, match="boxes"):
        B.nms(boxes[:, :3], scores, iou_threshold=0.5, max_output=2)
    with pytest.raises(ValueError, match="groups"):
        B.batched_nms(boxes, scores, jnp.zeros(2, jnp.int32), iou_threshold=0.5, max_output=2)


# ----------------------------------------------------------------------------- ROIAlign


def torch_roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned,
                    cap=None):
    """torchvision's ROIAlign forward (roi_align_kernel.cpp) re-stated in float64: the
    bilinear weights are built by the same loops, the weighted sum is a torch product so
    that autograd gives the features' gradient. features: float64 torch (N, H, W, C).
    `sampling_ratio` 0 is torchvision's adaptive ceil(roi side / output_size) per side;
    `cap` (not torchvision's) limits that count."""
    n, h, w, c = features.shape
    r = boxes.shape[1]
    o = output_size
    weights = np.zeros((n, r, o, o, h * w))
    offset = 0.5 if aligned else 0.0

    def bilinear(y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return []
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= h - 1:
            y_high = y_low = h - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= w - 1:
            x_high = x_low = w - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1.0 - ly, 1.0 - lx
        return [(y_low * w + x_low, hy * hx), (y_low * w + x_high, hy * lx),
                (y_high * w + x_low, ly * hx), (y_high * w + x_high, ly * lx)]

    for b in range(n):
        for k in range(r):
            x1, y1, x2, y2 = (float(v) for v in boxes[b, k])
            start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
            roi_w = x2 * spatial_scale - offset - start_w
            roi_h = y2 * spatial_scale - offset - start_h
            if not aligned:
                roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
            bin_h, bin_w = roi_h / o, roi_w / o
            grid_h = sampling_ratio or max(math.ceil(roi_h / o), 0)
            grid_w = sampling_ratio or max(math.ceil(roi_w / o), 0)
            if cap is not None:
                grid_h, grid_w = min(grid_h, cap), min(grid_w, cap)
            count = max(grid_h * grid_w, 1)
            for ph in range(o):
                for pw in range(o):
                    for iy in range(grid_h):
                        y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                        for ix in range(grid_w):
                            x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                            for idx, wt in bilinear(y, x):
                                weights[b, k, ph, pw, idx] += wt / count
    flat = features.reshape(n, h * w, c)
    return torch.einsum("nrijp,npc->nrijc", torch.from_numpy(weights), flat)


def roi_boxes(rng, n, r, h, w, stride):
    """Boxes in image pixels for a (h, w) map of `stride`: inside, partly and wholly
    outside, tiny and empty."""
    img_h, img_w = h * stride, w * stride
    boxes = random_boxes(rng, n * r, lo=-0.3 * img_w, hi=1.1 * img_w, min_size=0.1,
                         max_size=0.8 * img_w).reshape(n, r, 4)
    boxes[:, 0] = [-3 * img_w, -3 * img_h, -2 * img_w, -2 * img_h]  # wholly outside
    boxes[:, 1] = [0.3 * img_w, 0.4 * img_h, 0.3 * img_w + 0.2, 0.4 * img_h + 0.1]  # tiny
    boxes[:, 2] = [0.5 * img_w, 0.5 * img_h, 0.5 * img_w, 0.5 * img_h]  # empty
    boxes[:, 3] = [-stride, -stride, img_w + stride, img_h + stride]  # the whole map and more
    boxes[:, 4] = [img_w - 0.5 * stride, 2, img_w + 3 * stride, img_h - 1]  # straddles the right edge
    return boxes


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_roi_align_equals_torchvision_restatement(np_rng, aligned, sampling_ratio):
    n, h, w, c, r, o, stride = 2, 9, 11, 3, 10, 3, 4
    feats = np_rng.normal(size=(n, h, w, c))
    boxes = roi_boxes(np_rng, n, r, h, w, stride)
    run = jax.jit(functools.partial(B.roi_align, output_size=o, spatial_scale=1.0 / stride,
                                    sampling_ratio=sampling_ratio, aligned=aligned))
    got = run(jnp.asarray(feats, jnp.float32), jnp.asarray(boxes, jnp.float32))
    assert got.shape == (n, r, o, o, c) and got.dtype == jnp.float32
    want = torch_roi_align(torch.from_numpy(feats), boxes.astype(np.float32).astype(np.float64),
                           o, 1.0 / stride, sampling_ratio, aligned).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.asarray(got[:, 0]).any()  # wholly outside -> 0


def test_adaptive_roi_align_counts_and_cap(np_rng):
    """sampling_ratio 0: ceil(bin side) samples per side as torchvision, elongated and large
    boxes included; above max_sampling_ratio the cap's samples are spread over the bin."""
    n, h, w, c, o, stride = 1, 40, 48, 2, 3, 2
    feats = np_rng.normal(size=(n, h, w, c))
    x0, y0 = np_rng.uniform(0, 10, size=2)
    sizes = [(70.0, 9.0), (9.0, 70.0), (80.0, 75.0), (4.0, 3.0), (30.5, 6.2)]
    boxes = np.asarray([[[x0, y0, x0 + bw, y0 + bh] for bw, bh in sizes]], np.float32)
    counts = np.asarray(B.sample_counts(jnp.asarray(boxes[..., 2] - boxes[..., 0]) / stride, o, 0, 8))
    want_counts = [min(math.ceil(bw / stride / o), 8) for bw, _ in sizes]
    np.testing.assert_array_equal(counts, [want_counts])
    assert max(want_counts) == 8 and min(want_counts) == 1
    for cap in (4, 16):
        got = B.roi_align(jnp.asarray(feats, jnp.float32), jnp.asarray(boxes), output_size=o,
                          spatial_scale=1.0 / stride, sampling_ratio=0, max_sampling_ratio=cap)
        want = torch_roi_align(torch.from_numpy(feats), boxes.astype(np.float64), o,
                               1.0 / stride, 0, True, cap=cap).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    exact = torch_roi_align(torch.from_numpy(feats), boxes.astype(np.float64), o, 1.0 / stride,
                            0, True).numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)  # cap 16 covers every box


def test_roi_align_gradient_equals_torch_autograd(np_rng):
    n, h, w, c, r, o = 1, 6, 7, 2, 6, 2
    feats = np_rng.normal(size=(n, h, w, c))
    boxes = roi_boxes(np_rng, n, r, h, w, 2).astype(np.float32)
    cot = np_rng.normal(size=(n, r, o, o, c))

    def loss(f):
        out = B.roi_align(f, jnp.asarray(boxes), output_size=o, spatial_scale=0.5,
                          sampling_ratio=2, aligned=True)
        return jnp.sum(out * cot)

    got = jax.grad(loss)(jnp.asarray(feats, jnp.float32))
    f = torch.from_numpy(feats).requires_grad_(True)
    (torch_roi_align(f, boxes.astype(np.float64), o, 0.5, 2, True) * torch.from_numpy(cot)).sum().backward()
    np.testing.assert_allclose(got, f.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_roi_align_bad_args():
    f = jnp.zeros((1, 4, 4, 2))
    b = jnp.zeros((1, 3, 4))
    kw = dict(output_size=2, spatial_scale=1.0, sampling_ratio=2)
    with pytest.raises(ValueError, match="output_size"):
        B.roi_align(f, b, **{**kw, "output_size": 0})
    with pytest.raises(ValueError, match="sampling_ratio"):
        B.roi_align(f, b, **{**kw, "sampling_ratio": -1})
    with pytest.raises(ValueError, match="max_sampling_ratio"):
        B.roi_align(f, b, **{**kw, "sampling_ratio": 0, "max_sampling_ratio": 0})
    with pytest.raises(ValueError, match="spatial_scale"):
        B.roi_align(f, b, **{**kw, "spatial_scale": 0.0})
    with pytest.raises(ValueError, match="boxes"):
        B.roi_align(f, jnp.zeros((3, 4)), **kw)
    with pytest.raises(ValueError, match="batch"):
        B.roi_align(f, jnp.zeros((2, 3, 4)), **kw)
    with pytest.raises(ValueError, match="strides"):
        B.multilevel_roi_align([f, f], [4, 16], b, output_size=2, sampling_ratio=1)


def test_multilevel_roi_align_levels_and_values(np_rng):
    n, c, r, o = 2, 3, 24, 3
    strides = [4, 8, 16, 32]
    img_h, img_w = 200, 136
    feats = [np_rng.normal(size=(n, math.ceil(img_h / s), math.ceil(img_w / s), c)).astype(np.float32)
             for s in strides]
    centre = np_rng.uniform(0, [img_w, img_h], size=(n, r, 2))
    size = np.exp(np_rng.uniform(np.log(10), np.log(600), size=(n, r, 1)))
    aspect = np.exp(np_rng.uniform(-0.7, 0.7, size=(n, r, 1)))
    half = np.concatenate([size * aspect, size / aspect], axis=-1) / 2
    boxes = np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)

    want_level = np.clip(np.floor(4 + np.log2(np.sqrt(
        (boxes[..., 2].astype(np.float64) - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
        / 224 + 1e-8)), 2, 5).astype(int) - 2
    got_level = np.asarray(B.assign_levels(jnp.asarray(boxes), 2, 5))
    np.testing.assert_array_equal(got_level, want_level)
    assert len(np.unique(want_level)) >= 3

    run = jax.jit(functools.partial(B.multilevel_roi_align, strides=strides, output_size=o,
                                    sampling_ratio=2))
    got = np.asarray(run([jnp.asarray(f) for f in feats], boxes=jnp.asarray(boxes)))
    assert got.shape == (n, r, o, o, c)
    per_level = [np.asarray(B.roi_align(jnp.asarray(f), jnp.asarray(boxes), output_size=o,
                                        spatial_scale=1.0 / s, sampling_ratio=2))
                 for f, s in zip(feats, strides)]
    want = np.take_along_axis(np.stack(per_level), want_level[None, ..., None, None, None], 0)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)

    # Empty boxes go to the finest level; one level is plain roi_align.
    assert int(B.assign_levels(jnp.zeros((4,)), 2, 5)) == 0
    one = B.multilevel_roi_align([feats[1]], [8], jnp.asarray(boxes), output_size=o, sampling_ratio=1)
    np.testing.assert_allclose(one, B.roi_align(jnp.asarray(feats[1]), jnp.asarray(boxes), output_size=o,
                                                spatial_scale=1 / 8, sampling_ratio=1))


# ------------------------------------------------------------------------------ Matcher


def np_matcher(iou, gt_valid, thresholds, labels, low_quality):
    """d2's Matcher.__call__ on the valid ground-truth rows (NumPy). Thresholds are compared
    in float32, as torch compares a float32 tensor with a Python float."""
    m, n = iou.shape
    rows = np.flatnonzero(gt_valid)
    if len(rows) == 0:
        return np.zeros(n, int), np.full(n, labels[0])
    q = iou[rows].astype(np.float32)
    matched_vals = q.max(axis=0)
    matches = rows[q.argmax(axis=0)]
    match_labels = np.ones(n, int)
    bounds = np.asarray([-np.inf] + list(thresholds) + [np.inf], np.float32)
    for label, low, high in zip(labels, bounds[:-1], bounds[1:]):
        match_labels[(matched_vals >= low) & (matched_vals < high)] = label
    if low_quality:
        best = q.max(axis=1)
        for g in range(len(rows)):
            if best[g] > 0:
                match_labels[q[g] == best[g]] = 1
    return matches, match_labels


@pytest.mark.parametrize("thresholds,labels,low_quality", [
    ((0.3, 0.7), (0, -1, 1), True),
    ((0.5,), (0, 1), False),
    ((0.4, 0.5), (0, -1, 1), False),
])
def test_match_boxes_equals_d2_matcher(np_rng, thresholds, labels, low_quality):
    m, n = 7, 60
    iou = (np_rng.integers(0, 11, size=(m, n)) / 10.0 * (np_rng.uniform(size=(m, n)) < 0.4))
    iou = iou.astype(np.float32)
    iou[2] = 0.0  # a ground truth that overlaps nothing
    iou[4, :] = np.minimum(iou[4, :], 0.2)  # one whose best match is low quality
    run = jax.jit(functools.partial(B.match_boxes, thresholds=thresholds, labels=labels,
                                    allow_low_quality_matches=low_quality))
    for gt_valid in (np.ones(m, bool), np_rng.uniform(size=m) < 0.6, np.zeros(m, bool)):
        idx, lab = run(jnp.asarray(iou), jnp.asarray(gt_valid))
        assert idx.dtype == jnp.int32 and lab.dtype == jnp.int8
        want_idx, want_lab = np_matcher(iou, gt_valid, thresholds, labels, low_quality)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(lab, want_lab)
    # No ground truth rows at all.
    idx, lab = B.match_boxes(jnp.zeros((0, 5)), jnp.zeros((0,), bool), thresholds=thresholds,
                             labels=labels, allow_low_quality_matches=low_quality)
    np.testing.assert_array_equal(lab, [labels[0]] * 5)
    with pytest.raises(ValueError, match="labels"):
        B.match_boxes(jnp.asarray(iou), jnp.ones(m, bool), thresholds=thresholds, labels=(0, 1, 1, 1),
                      allow_low_quality_matches=low_quality)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("num_pos,num_neg,num_samples,fraction", [
    (5, 200, 64, 0.25), (40, 200, 64, 0.25), (30, 10, 64, 0.5), (0, 0, 16, 0.5), (3, 100, 256, 1.0),
])
def test_subsample_labels_counts_and_choice(np_rng, num_pos, num_neg, num_samples, fraction):
    n = 300
    labels = np.full(n, -1)
    labels[:num_pos] = 1
    labels[num_pos:num_pos + num_neg] = 0
    labels = np_rng.permutation(labels)
    want_pos = min(num_pos, int(num_samples * fraction))
    want_neg = min(num_neg, num_samples - want_pos)

    run = jax.jit(functools.partial(B.subsample_labels, num_samples=num_samples,
                                    positive_fraction=fraction))
    key = jax.random.PRNGKey(int(np_rng.integers(2**31)))
    pos, neg = (np.asarray(x) for x in run(key, jnp.asarray(labels, jnp.int32)))
    assert pos.sum() == want_pos and neg.sum() == want_neg
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    pos2, neg2 = run(key, jnp.asarray(labels, jnp.int32))
    np.testing.assert_array_equal(pos, pos2)
    np.testing.assert_array_equal(neg, neg2)
    if 0 < want_neg < num_neg:
        _, neg3 = run(jax.random.fold_in(key, 1), jnp.asarray(labels, jnp.int32))
        assert (np.asarray(neg3) != neg).any()

    sample = jax.jit(functools.partial(B.sample_indices, num_samples=num_samples,
                                       positive_fraction=fraction))
    idx, is_pos, is_valid = (np.asarray(x) for x in sample(key, jnp.asarray(labels, jnp.int32)))
    assert idx.shape == is_pos.shape == is_valid.shape == (num_samples,)
    assert idx.dtype == np.int32
    np.testing.assert_array_equal(is_pos, np.arange(num_samples) < want_pos)
    np.testing.assert_array_equal(is_valid, np.arange(num_samples) < want_pos + want_neg)
    np.testing.assert_array_equal(np.sort(idx[is_pos]), np.flatnonzero(pos))
    np.testing.assert_array_equal(np.sort(idx[is_valid & ~is_pos]), np.flatnonzero(neg))
    np.testing.assert_array_equal(idx[~is_valid], 0)


def test_subsample_labels_is_uniform(np_rng):
    labels = np.asarray([1] * 6 + [0] * 10 + [-1] * 4)
    keys = jax.random.split(jax.random.PRNGKey(int(np_rng.integers(2**31))), 4000)
    pos, neg = jax.jit(jax.vmap(lambda k: B.subsample_labels(
        k, jnp.asarray(labels), num_samples=8, positive_fraction=0.25)))(keys)
    # 2 of 6 positives and 6 of 10 negatives: each chosen with probability 1/3 and 3/5.
    freq_pos = np.asarray(pos).mean(0)[:6]
    freq_neg = np.asarray(neg).mean(0)[6:16]
    np.testing.assert_allclose(freq_pos, 1 / 3, atol=5 * math.sqrt(2 / 9 / 4000))
    np.testing.assert_allclose(freq_neg, 3 / 5, atol=5 * math.sqrt(6 / 25 / 4000))
    with pytest.raises(ValueError, match="positive_fraction"):
        B.subsample_labels(keys[0], jnp.asarray(labels), num_samples=8, positive_fraction=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        B.sample_indices(keys[0], jnp.asarray(labels), 0, 0.5)
