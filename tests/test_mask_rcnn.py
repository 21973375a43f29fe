"""MaskRCNN's pieces against NumPy (float64) re-statements of detectron2 (d2): proposal
selection (find_top_rpn_proposals), box inference (fast_rcnn_inference_single_image), RPN
losses (label_and_sample_anchors + losses), ROI sampling (label_and_sample_proposals);
plus training on images without instances, determinism in the "points" rng and gradient
flow into every parameter group. Every input is drawn fresh from `np_rng`."""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pointrend_jax.instance import config as instance_config
from pointrend_jax.models import box_ops as B
from pointrend_jax.models.mask_rcnn import (BOX_WEIGHTS, RPN_LEVELS, FastRCNNHead, MaskRCNN,
                                            build_instance_model)
from test_box_ops import np_anchors, np_iou, np_matcher, np_nms

K = 3  # classes
SCALE_CLAMP = math.log(1000.0 / 16)


def tiny_model(**roi) -> MaskRCNN:
    c = instance_config.instance_runlocal(instance_config.instance_config())
    model = build_instance_model(c.model, c.pointrend, K)
    return model.clone(roi=dataclasses.replace(model.roi, **roi)) if roi else model


def call(model, method, *args, rngs=None, **kwargs):
    """A parameter-free MaskRCNN method, by name, under `apply` (setup-style submodules)."""
    return model.apply({}, *args, method=lambda m, *a: getattr(m, method)(*a, **kwargs),
                       rngs=rngs)


# ------------------------------------------------------------------- NumPy d2 helpers


def np_decode(deltas, boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """d2's Box2BoxTransform.apply_deltas in float64."""
    deltas = np.asarray(deltas, np.float64)
    boxes = np.asarray(boxes, np.float64)
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h
    dx, dy = deltas[..., 0] / weights[0], deltas[..., 1] / weights[1]
    dw = np.minimum(deltas[..., 2] / weights[2], SCALE_CLAMP)
    dh = np.minimum(deltas[..., 3] / weights[3], SCALE_CLAMP)
    pcx, pcy, pw, ph = dx * w + cx, dy * h + cy, np.exp(dw) * w, np.exp(dh) * h
    return np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], axis=-1)


def np_encode(boxes, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """d2's Box2BoxTransform.get_deltas in float64."""
    boxes = np.asarray(boxes, np.float64)
    targets = np.asarray(targets, np.float64)
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    tw, th = targets[..., 2] - targets[..., 0], targets[..., 3] - targets[..., 1]
    dx = ((targets[..., 0] + tw / 2) - (boxes[..., 0] + w / 2)) / w
    dy = ((targets[..., 1] + th / 2) - (boxes[..., 1] + h / 2)) / h
    return np.stack([weights[0] * dx, weights[1] * dy, weights[2] * np.log(tw / w),
                     weights[3] * np.log(th / h)], axis=-1)


def np_clip(boxes, h, w):
    out = np.array(boxes, np.float64)
    out[..., 0::2] = out[..., 0::2].clip(0, w)
    out[..., 1::2] = out[..., 1::2].clip(0, h)
    return out


def np_bce(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


def well_separated(rng, shape, step=0.25):
    """Distinct values `step` apart (no ties in float32), in random order."""
    return (rng.permutation(int(np.prod(shape))) * step - 20.0).reshape(shape)


# ------------------------------------------------------------- anchors and proposals


def test_anchors_follow_d2_levels():
    model = tiny_model()
    sizes = {2: 16, 3: 8, 4: 4, 5: 2, 6: 1}  # a 64x64 image
    features = {f"p{l}": jnp.zeros((1, s, s, 2)) for l, s in sizes.items()}
    anchors = call(model, "_anchors", features)
    assert len(anchors) == len(RPN_LEVELS)
    for a, level, size in zip(anchors, RPN_LEVELS, model.rpn.anchor_sizes):
        want = np_anchors(sizes[level], sizes[level], 2 ** level, (size,),
                          model.rpn.aspect_ratios, 0.0)
        np.testing.assert_allclose(np.asarray(a), want, rtol=1e-6, atol=1e-4)


def np_find_top_rpn_proposals(logits, deltas, anchors, image_size, pre, post, nms_thresh):
    """d2's find_top_rpn_proposals for one image (min_box_size 0), float64."""
    boxes_all, scores_all, levels_all = [], [], []
    for level, (lg, dl, an) in enumerate(zip(logits, deltas, anchors)):
        idx = np.argsort(-lg, kind="stable")[:min(pre, len(lg))]
        boxes_all.append(np_decode(dl[idx], an[idx]))
        scores_all.append(lg[idx])
        levels_all.append(np.full(len(idx), level))
    boxes, scores, levels = (np.concatenate(x) for x in (boxes_all, scores_all, levels_all))
    boxes = np_clip(boxes, *image_size)
    keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    order = np_nms(boxes, scores, nms_thresh, np.ones(len(boxes), bool), groups=levels)
    return boxes[order[:post]], scores[order[:post]]


@pytest.mark.parametrize("train", [True, False])
def test_proposals_equal_d2_find_top_rpn_proposals(np_rng, train):
    model = tiny_model()
    # pre/post chosen so that post binds in training and pads (valid False) at test time.
    model = model.clone(rpn=dataclasses.replace(
        model.rpn, pre_nms_topk_train=30, post_nms_topk_train=20, pre_nms_topk_test=20,
        post_nms_topk_test=60))
    pre, post = (30, 20) if train else (20, 60)
    levels = [(8, 8, 8, 16.0), (4, 4, 16, 32.0), (2, 2, 32, 64.0)]  # h, w, stride, size
    anchors = [B.anchors_for_level(h, w, s, (size,), model.rpn.aspect_ratios)
               for h, w, s, size in levels]
    n = 2
    image_sizes = np.asarray([[64, 64], [40, 52]], np.int32)
    logits, deltas = [], []
    for an in anchors:
        t = len(an)
        logits.append(np.stack([well_separated(np_rng, (t,)) for _ in range(n)]).astype(np.float32))
        d = np_rng.normal(0, 0.3, size=(n, t, 4))
        far = np_rng.uniform(size=(n, t)) < 0.15  # moved out of the image: empty after clipping
        d[..., 0] = np.where(far, np_rng.choice([-6.0, 6.0], size=(n, t)), d[..., 0])
        d[..., 2] = np.where(np_rng.uniform(size=(n, t)) < 0.05, 9.0, d[..., 2])  # scale clamp
        deltas.append(d.astype(np.float32))

    run = jax.jit(lambda lg, dl, sz: call(model, "_proposals", lg, dl,
                                          [jnp.asarray(a) for a in anchors], sz, train))
    boxes, valid = (np.asarray(x) for x in run(logits, deltas, jnp.asarray(image_sizes)))
    r = min(post, sum(min(pre, len(a)) for a in anchors))  # static: at most all candidates
    assert boxes.shape == (n, r, 4) and valid.shape == (n, r)
    for i in range(n):
        want_boxes, want_scores = np_find_top_rpn_proposals(
            [lg[i].astype(np.float64) for lg in logits], [dl[i] for dl in deltas], anchors,
            image_sizes[i], pre, post, model.rpn.nms_thresh)
        k = len(want_boxes)
        assert 0 < k <= r
        if train:
            assert k == r == post  # the post-NMS cap binds
        else:
            assert k < r  # padding
        np.testing.assert_array_equal(valid[i], np.arange(r) < k)
        np.testing.assert_allclose(boxes[i, :k], want_boxes, rtol=1e-5, atol=1e-3)
        h, w = image_sizes[i]
        assert (boxes[i, :k, 0::2] <= w).all() and (boxes[i, :k, 1::2] <= h).all()


# -------------------------------------------------------------------- box inference


def np_fast_rcnn_inference(logits, deltas, proposals, image_size, score_thresh, nms_thresh,
                           topk, candidates=None):
    """d2's fast_rcnn_inference_single_image on the valid proposals, float64. With
    `candidates`, only the best `candidates` (proposal, class) pairs above the threshold
    enter NMS (the model's static cap)."""
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    scores = (e / e.sum(-1, keepdims=True))[:, :-1]  # background is last
    boxes = np_clip(np_decode(deltas, proposals[:, None, :], BOX_WEIGHTS), *image_size)
    r_idx, k_idx = np.nonzero(scores > score_thresh)
    boxes, scores = boxes[r_idx, k_idx], scores[r_idx, k_idx]
    if candidates is not None:
        top = np.argsort(-scores, kind="stable")[:candidates]
        boxes, scores, k_idx = boxes[top], scores[top], k_idx[top]
    keep = np_nms(boxes, scores, nms_thresh, np.ones(len(boxes), bool), groups=k_idx)[:topk]
    return boxes[keep], scores[keep], k_idx[keep]


def clustered_boxes(rng, n, extent, centres=4):
    """Boxes around a few centres (so NMS suppresses), some reaching out of the image."""
    c = rng.uniform(0, extent, size=(centres, 2))
    pick = c[rng.integers(0, centres, size=n)] + rng.normal(0, 3, size=(n, 2))
    wh = rng.uniform(6, 30, size=(n, 2))
    return np.concatenate([pick - wh / 2, pick + wh / 2], axis=1)


@pytest.mark.parametrize("candidates", [None, 40])
def test_detect_equals_d2_fast_rcnn_inference(np_rng, candidates):
    n, r = 2, 40
    roi = dict(detections_per_image=12, test_topk_candidates=candidates or r * K)
    model = tiny_model(**roi)
    cfg = model.roi
    proposals = np.stack([clustered_boxes(np_rng, r, 60) for _ in range(n)]).astype(np.float32)
    proposal_valid = np_rng.uniform(size=(n, r)) < 0.85
    logits = (np_rng.normal(0, 2.0, size=(n, r, K + 1))).astype(np.float32)
    deltas = np_rng.normal(0, 0.8, size=(n, r, K, 4)).astype(np.float32)
    image_sizes = np.asarray([[64, 64], [48, 56]], np.int32)
    features = {f"p{l}": jnp.asarray(np_rng.normal(size=(n, 64 >> l, 64 >> l, 4)), jnp.float32)
                for l in (2, 3, 4, 5)}

    def box_head_outputs(next_fun, args, kwargs, context):
        if isinstance(context.module, FastRCNNHead) and context.method_name == "__call__":
            assert args[0].shape[:2] == (n, r)  # pooled features of every proposal
            return jnp.asarray(logits), jnp.asarray(deltas)
        return next_fun(*args, **kwargs)

    def detect(*args):
        with nn.intercept_methods(box_head_outputs):
            return call(model, "_detect", *args)

    boxes, scores, classes, valid = (np.asarray(x) for x in jax.jit(detect)(
        features, jnp.asarray(proposals), jnp.asarray(proposal_valid), jnp.asarray(image_sizes)))
    d = cfg.detections_per_image
    assert boxes.shape == (n, d, 4) and scores.shape == classes.shape == valid.shape == (n, d)
    assert classes.dtype == np.int32
    counts = []
    for i in range(n):
        v = proposal_valid[i]
        want_boxes, want_scores, want_classes = np_fast_rcnn_inference(
            logits[i][v], deltas[i][v], proposals[i][v], image_sizes[i], cfg.score_thresh_test,
            cfg.nms_thresh_test, d, candidates)
        k = len(want_boxes)
        counts.append(k)
        np.testing.assert_array_equal(valid[i], np.arange(d) < k)
        np.testing.assert_allclose(scores[i, :k], want_scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(classes[i, :k], want_classes)
        np.testing.assert_allclose(boxes[i, :k], want_boxes, rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(boxes[i, k:], 0.0)
        np.testing.assert_array_equal(scores[i, k:], 0.0)
    assert max(counts) > 0


# ------------------------------------------------------------------------ RPN losses


def random_gt(rng, m, h, w, min_size=8, max_size=40):
    xy = rng.uniform(0, [w - min_size, h - min_size], size=(m, 2))
    wh = rng.uniform(min_size, max_size, size=(m, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)


def clear_of(iou, thresholds, eps=1e-4):
    """No IoU within eps of a threshold and each ground truth's best IoU unique (float32
    rounding can then not change any label)."""
    if any(np.any(np.abs(iou - t) < eps) for t in thresholds):
        return False
    for row in iou:
        top = np.sort(row)[::-1]
        if top[0] > 0 and top[0] - top[1] < eps:
            return False
    return True


def test_rpn_losses_equal_d2(np_rng):
    model = tiny_model()  # d2's default sampling: 256 per image, half positive
    model = model.clone(rpn=dataclasses.replace(model.rpn, batch_size_per_image=256,
                                                positive_fraction=0.5))
    levels = [(4, 4, 16, 24.0), (2, 2, 32, 48.0), (1, 1, 64, 96.0)]
    anchors = [B.anchors_for_level(h, w, s, (size,), model.rpn.aspect_ratios)
               for h, w, s, size in levels]
    all_anchors = np.concatenate(anchors).astype(np.float64)
    t = len(all_anchors)
    assert t <= model.rpn.batch_size_per_image // 2  # everything labelled is sampled
    m, n = 3, 2
    while True:  # image 0: two instances (and one padding row), image 1: none
        gt = np.zeros((n, m, 4))
        gt[0, :2] = random_gt(np_rng, 2, 64, 64)
        if clear_of(np_iou(gt[0, :2], all_anchors), model.rpn.iou_thresholds):
            break
    gt_valid = np.asarray([[True, True, False], [False, False, False]])
    logits = [np_rng.normal(0, 2, size=(n, len(a))).astype(np.float32) for a in anchors]
    deltas = [np_rng.normal(0, 0.5, size=(n, len(a), 4)).astype(np.float32) for a in anchors]
    targets = {"boxes": jnp.asarray(gt, jnp.float32), "valid": jnp.asarray(gt_valid)}
    key = jax.random.PRNGKey(int(np_rng.integers(2**31)))
    got = jax.jit(lambda lg, dl, tg, k: call(
        model, "_rpn_losses", lg, dl, [jnp.asarray(a) for a in anchors], tg,
        rngs={"points": k}))(logits, deltas, targets, key)

    # d2: Matcher(0.3, 0.7, labels (0, -1, 1), low-quality matches), subsample_labels,
    # BCE over the sampled and L1 (smooth_l1 beta 0) over the positives, both / (256 * N).
    all_logits = np.concatenate(logits, axis=1).astype(np.float64)
    all_deltas = np.concatenate(deltas, axis=1).astype(np.float64)
    cls = loc = 0.0
    num_pos = 0
    for i in range(n):
        iou = np_iou(gt[i], all_anchors)
        matched, labels = np_matcher(iou, gt_valid[i], model.rpn.iou_thresholds, (0, -1, 1), True)
        pos, sampled = labels == 1, labels >= 0
        num_pos += pos.sum()
        cls += np_bce(all_logits[i], pos.astype(np.float64))[sampled].sum()
        target = np_encode(all_anchors[pos], gt[i][matched[pos]])
        loc += np.abs(all_deltas[i][pos] - target).sum()
    assert num_pos >= 2  # at least one per instance (low-quality matches)
    normalizer = model.rpn.batch_size_per_image * n
    np.testing.assert_allclose(got["loss_rpn_cls"], cls / normalizer, rtol=1e-5)
    np.testing.assert_allclose(got["loss_rpn_loc"], loc / normalizer, rtol=1e-5)


# ---------------------------------------------------------------------- ROI sampling


def jittered(rng, boxes, count, scale):
    out = np.repeat(boxes, count, axis=0)
    wh = np.repeat(boxes[:, 2:] - boxes[:, :2], count, axis=0)
    return out + rng.normal(0, scale, size=out.shape) * np.concatenate([wh, wh], axis=1)


def sampling_case(rng, r=40, m=4):
    """Image 0: 2 instances, few positives (all fit); image 1: 4 instances, more positives
    than fit; image 2: no instances. Proposals: jittered instances plus random boxes."""
    n = 3
    gt = np.zeros((n, m, 4))
    gt_valid = np.zeros((n, m), bool)
    gt_classes = rng.integers(0, K, size=(n, m))
    props = np.stack([clustered_boxes(rng, r, 60, centres=6) for _ in range(n)])
    gt[0, :2] = random_gt(rng, 2, 64, 64, min_size=12)
    gt_valid[0, :2] = True
    props[0, :4] = jittered(rng, gt[0, :2], 2, 0.04)
    gt[1] = random_gt(rng, m, 64, 64, min_size=12)
    gt_valid[1] = True
    props[1, :3 * m] = jittered(rng, gt[1], 3, 0.03)
    props_valid = rng.uniform(size=(n, r)) < 0.9
    props_valid[:2, :12] = True
    props_valid[0, :34] = True  # image 0 has more negatives than fit: they are subsampled
    return props, props_valid, gt, gt_classes, gt_valid


def np_roi_labels(props, props_valid, gt, gt_valid, threshold):
    """d2's label_and_sample_proposals labels: ground truth appended to the proposals,
    Matcher((0.5,), (0, 1)); -1 for padding (never sampled)."""
    boxes = np.concatenate([props, gt])
    valid = np.concatenate([props_valid, gt_valid])
    iou = np_iou(gt, boxes)
    matched, labels = np_matcher(iou, gt_valid, (threshold,), (0, 1), False)
    return boxes, np.where(valid, labels, -1), matched, iou


def test_sample_regions_follow_d2(np_rng):
    model = tiny_model()
    cfg = model.roi
    while True:
        props, props_valid, gt, gt_classes, gt_valid = sampling_case(np_rng)
        cases = [np_roi_labels(props[i], props_valid[i], gt[i], gt_valid[i], cfg.iou_threshold)
                 for i in range(3)]
        cap = int(cfg.batch_size_per_image * cfg.positive_fraction)
        if (all(not np.any(np.abs(c[3] - cfg.iou_threshold) < 1e-4) for c in cases)
                and (cases[0][1] == 1).sum() <= cap < (cases[1][1] == 1).sum()):
            break
    targets = {"boxes": jnp.asarray(gt, jnp.float32), "classes": jnp.asarray(gt_classes),
               "valid": jnp.asarray(gt_valid)}
    run = jax.jit(lambda p, v, t, k: call(model, "_sample_regions", p, v, t, rngs={"points": k}))
    key = jax.random.PRNGKey(int(np_rng.integers(2**31)))
    out = run(jnp.asarray(props, jnp.float32), jnp.asarray(props_valid), targets, key)
    regions, classes, gt_idx, positive, chosen, box_targets = (np.asarray(x) for x in out)
    s = cfg.batch_size_per_image
    assert regions.shape == (3, s, 4) and box_targets.shape == (3, s, 4)
    sizes = []
    for i in range(3):
        boxes, labels, matched, _ = cases[i]
        n_pos = min((labels == 1).sum(), cap)
        n_neg = min((labels == 0).sum(), s - n_pos)
        sizes.append(((labels == 1).sum(), (labels == 0).sum()))
        np.testing.assert_array_equal(positive[i], np.arange(s) < n_pos)  # positives first
        np.testing.assert_array_equal(chosen[i], np.arange(s) < n_pos + n_neg)
        # Each chosen region is a distinct candidate with the right label, class and target.
        picked = []
        for j in range(n_pos + n_neg):
            where = np.flatnonzero(np.all(boxes.astype(np.float32) == regions[i, j], axis=1)
                                   & (labels >= 0))
            assert len(where) >= 1
            c = where[0]
            picked.append(c)
            if positive[i, j]:
                assert labels[c] == 1 and gt_idx[i, j] == matched[c]
                assert classes[i, j] == gt_classes[i, matched[c]]
                np.testing.assert_allclose(
                    box_targets[i, j], np_encode(regions[i, j], gt[i, matched[c]], BOX_WEIGHTS),
                    rtol=1e-4, atol=1e-4)
            else:
                assert labels[c] == 0 and classes[i, j] == K
        assert len(set(picked)) == len(picked)
        if i == 0:  # all positives fit: every ground-truth box is itself a positive sample
            assert 0 < n_pos <= cap
            for g in np.flatnonzero(gt_valid[i]):
                hit = np.all(regions[i, :n_pos] == gt[i, g].astype(np.float32), axis=1)
                assert hit.any() and (gt_idx[i, :n_pos][hit] == g).all()
        if i == 1:
            assert n_pos == cap
        if i == 2:  # no instances: background only
            assert n_pos == 0 and n_neg == min(props_valid[i].sum(), s)
            assert (classes[i, :n_neg] == K).all()
    assert sizes[0][1] > s - sizes[0][0]  # image 0's negatives are subsampled

    # Another rng picks other negatives; the same one the same regions.
    again = run(jnp.asarray(props, jnp.float32), jnp.asarray(props_valid), targets, key)
    np.testing.assert_array_equal(np.asarray(again[0]), regions)
    other = run(jnp.asarray(props, jnp.float32), jnp.asarray(props_valid), targets,
                jax.random.fold_in(key, 1))
    assert (np.asarray(other[0]) != regions).any()


# --------------------------------------------------------------- whole training step


@pytest.fixture(scope="module")
def trained_step():
    """The runlocal-sized model (PointRend head), its variables and a jitted
    `(params, batch_stats, images, targets, key) -> ((total, parts), grads)`."""
    model = tiny_model()
    rng = np.random.default_rng(0)
    images, targets = instance_batch(rng, valid=True)
    variables = jax.jit(lambda r: model.init({"params": r, "points": r}, images, targets,
                                             train=True))(jax.random.PRNGKey(0))

    def loss(params, batch_stats, images, targets, key):
        parts, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, targets,
                               train=True, rngs={"points": key}, mutable=["batch_stats"])
        return sum(parts.values()), parts

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    return model, variables, step


def instance_batch(rng, valid: bool, n=2, m=3, size=64):
    images = rng.integers(0, 256, size=(n, size, size, 3)).astype(np.uint8)
    boxes = np.zeros((n, m, 4), np.float32)
    masks = np.zeros((n, m, size, size), np.uint8)
    is_valid = np.zeros((n, m), bool)
    if valid:
        for i in range(n):
            for j in range(2):
                x0, y0 = rng.integers(0, size - 24, size=2)
                w, h = rng.integers(12, 24, size=2)
                boxes[i, j] = (x0, y0, x0 + w, y0 + h)
                masks[i, j, y0:y0 + h, x0:x0 + w] = 1
                is_valid[i, j] = True
    targets = {"boxes": boxes, "classes": rng.integers(0, K, size=(n, m)).astype(np.int32),
               "mask_bits": np.packbits(masks, axis=-1), "valid": is_valid,
               "image_size": np.asarray([[size, size], [size - 8, size]], np.int32)}
    return jnp.asarray(images), jax.tree.map(jnp.asarray, targets)


def test_training_without_instances_is_finite(trained_step, np_rng):
    model, variables, step = trained_step
    images, targets = instance_batch(np_rng, valid=False)
    key = jax.random.PRNGKey(int(np_rng.integers(2**31)))
    (total, parts), grads = step(variables["params"], variables["batch_stats"], images, targets, key)
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"} <= set(parts)
    for name, value in parts.items():
        assert np.isfinite(float(value)), name
    # Nothing to regress or segment: only the classifiers learn "background".
    assert float(parts["loss_rpn_loc"]) == 0.0 and float(parts["loss_box_reg"]) == 0.0
    assert float(parts["loss_rpn_cls"]) > 0.0 and float(parts["loss_cls"]) > 0.0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_training_step_deterministic_in_points_rng_and_reaches_every_group(trained_step, np_rng):
    model, variables, step = trained_step
    images, targets = instance_batch(np_rng, valid=True)
    key = jax.random.PRNGKey(int(np_rng.integers(2**31)))
    args = (variables["params"], variables["batch_stats"], images, targets)
    (total, parts), grads = step(*args, key)
    (total2, parts2), grads2 = step(*args, key)
    for name in parts:
        assert float(parts[name]) == float(parts2[name]), name
    jax.tree.map(np.testing.assert_array_equal, grads, grads2)
    (total3, _), _ = step(*args, jax.random.fold_in(key, 1))
    assert float(total3) != float(total)  # other sampled anchors, regions and points

    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    groups = {
        "backbone": grads["net"]["backbone"], "fpn": grads["net"]["fpn"],
        "rpn_head": grads["rpn_head"], "box_head": grads["box_head"],
        **{f"mask_head/{k}": v for k, v in grads["mask_head"].items()},
    }
    assert set(grads) == {"net", "rpn_head", "box_head", "mask_head"}
    for name, tree in groups.items():
        norm = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(tree))
        assert norm > 0, f"no gradient reaches {name}"
    # Every RPN and box-head layer (none is dead), and the backbone's stem.
    for tree in (grads["rpn_head"], grads["box_head"]):
        for layer, g in tree.items():
            assert float(jnp.abs(g["kernel"]).sum()) > 0, layer
    assert float(jnp.abs(grads["net"]["backbone"]["conv1"]["kernel"]).sum()) > 0


def test_mask_head_trains_on_the_regressed_boxes_of_each_regions_class(trained_step, np_rng):
    """TRAIN_ON_PRED_BOXES: the mask head's boxes are the box head's own-class regression of
    the sampled regions (detectron2's predict_boxes_for_gt_classes); off, the regions."""
    model, variables, _ = trained_step
    images, targets = instance_batch(np_rng, valid=True)
    key = jax.random.PRNGKey(int(np_rng.integers(2**31)))
    # a box regressor that moves boxes visibly (its init, std 0.001, barely does)
    params = jax.tree.map(lambda x: x, variables["params"])
    kernel = params["box_head"]["bbox_pred"]["kernel"]
    params["box_head"]["bbox_pred"]["kernel"] = jnp.asarray(
        np_rng.normal(0, 0.05, kernel.shape), kernel.dtype)
    variables = {**variables, "params": params}
    seen = {}

    def spy(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, FastRCNNHead):
            seen["deltas"] = out[1]
        elif context.method_name == "losses" and context.module is not None and \
                type(context.module).__name__ == "PointRendMaskHead":
            seen["boxes"], seen["classes"], seen["valid"] = args[1], args[2], args[3]
        return out

    def mask_inputs(flag):
        m = model.clone(roi=dataclasses.replace(model.roi, train_on_pred_boxes=flag))
        with nn.intercept_methods(spy):
            m.apply(variables, images, targets, train=True, rngs={"points": key},
                    mutable=["batch_stats"])
        return {k: np.asarray(v) for k, v in seen.items()}

    plain, regressed = mask_inputs(False), mask_inputs(True)
    num_fg = plain["boxes"].shape[1]
    own = np.take_along_axis(plain["deltas"][:, :num_fg], plain["classes"][..., None, None],
                             axis=2)[:, :, 0]
    want = np_decode(own, plain["boxes"], BOX_WEIGHTS)
    valid = plain["valid"]
    assert valid.any()
    np.testing.assert_allclose(regressed["boxes"][valid], want[valid], rtol=1e-5, atol=1e-3)
    assert np.abs(regressed["boxes"][valid] - plain["boxes"][valid]).max() > 0.5  # pixels
