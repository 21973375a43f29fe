"""The instance mask heads against torch re-statements of detectron2's PointRend mask head:
the subdivision loop of `PointRendMaskHead._subdivision_inference`, `sample_point_labels`,
`BitMasks.crop_and_resize`; plus the property that subdivision re-predicting every cell
equals the point head evaluated densely."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointrend_jax.models.mask_head import (MaskRCNNConvHead, PointRendMaskHead,
                                            crop_and_resize_masks, regular_grid,
                                            sample_instance_masks)
from test_box_ops import torch_roi_align
from torch_reference import TorchPointHead

K, C, STRIDE = 3, 6, 4
IMAGE = 64  # padded image side; p2 is 16x16


def _boxes(rng, n, lo=-6.0, hi=70.0):
    xy = rng.uniform(lo, hi - 12, (n, 2))
    wh = rng.uniform(3.0, 40.0, (n, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


def _head(**kw):
    args = dict(num_classes=K, conv_dim=8, coarse_fc_dim=16, fc_dim=12, subdivision_steps=3,
                subdivision_num_points=300, train_num_points=20)
    args.update(kw)
    return PointRendMaskHead(**args)


def _inputs(rng, r=5):
    p2 = rng.standard_normal((1, IMAGE // STRIDE, IMAGE // STRIDE, C)).astype(np.float32)
    boxes = _boxes(rng, r)[None]
    classes = rng.integers(0, K, (1, r)).astype(np.int32)
    return {"p2": jnp.asarray(p2)}, jnp.asarray(boxes), jnp.asarray(classes)


def _torch_point_sample(x, coords):
    """detectron2's point_sample: (R, C, H, W), (R, P, 2) in [0, 1] -> (R, C, P)."""
    return F.grid_sample(x, 2.0 * coords[:, :, None, :] - 1.0, align_corners=False)[..., 0]


def d2_subdivision(p2, boxes, classes, coarse, point_head, steps, num_points):
    """detectron2's mask subdivision loop, all K channels carried like detectron2.
    p2 (1, C, H, W); boxes (R, 4); classes (R,); coarse (R, K, 7, 7) -> (R, S, S)."""
    r, k, side, _ = coarse.shape
    extent = torch.tensor([p2.shape[3] * STRIDE, p2.shape[2] * STRIDE], dtype=p2.dtype)

    def logits(coords):  # box-relative (R, P, 2) -> (R, K, P)
        image_xy = boxes[:, None, :2] + coords * (boxes[:, None, 2:] - boxes[:, None, :2])
        p = coords.shape[1]
        fine = _torch_point_sample(p2, (image_xy / extent).reshape(1, -1, 2))
        fine = fine.reshape(p2.shape[1], r, p).permute(1, 0, 2)
        return point_head(fine, _torch_point_sample(coarse, coords))

    c = (torch.arange(side, dtype=p2.dtype) + 0.5) / side
    grid = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(1, -1, 2).expand(r, -1, -1)
    mask = logits(grid).reshape(r, k, side, side)
    for _ in range(steps):
        mask = F.interpolate(mask, scale_factor=2, mode="bilinear", align_corners=False)
        h, w = mask.shape[2:]
        uncertainty = -mask[torch.arange(r), classes].abs().reshape(r, h * w)
        idx = torch.topk(uncertainty, k=min(h * w, num_points), dim=1)[1]
        coords = torch.stack([(idx % w).to(p2.dtype) / w + 0.5 / w,
                              (idx // w).to(p2.dtype) / h + 0.5 / h], -1)
        point_logits = logits(coords)
        mask = mask.reshape(r, k, h * w).scatter_(2, idx[:, None, :].expand(-1, k, -1),
                                                  point_logits).view(r, k, h, w)
    return mask[torch.arange(r), classes]


def test_regular_grid_is_d2_cell_centres():
    grid = np.asarray(regular_grid(3))
    want = [((x + 0.5) / 3, (y + 0.5) / 3) for y in range(3) for x in range(3)]
    np.testing.assert_allclose(grid, want, rtol=1e-6)


def test_subdivision_equals_detectron2_loop(np_rng):
    head = _head()
    features, boxes, classes = _inputs(np_rng)
    variables = head.init(jax.random.key(int(np_rng.integers(1 << 30))), features, boxes, classes,
                          method=head.predict)
    out = head.apply(variables, features, boxes, classes, method=head.predict)
    coarse = head.apply(variables, features, boxes, method=head.coarse_logits)
    assert out["masks"].shape == (1, 5, 56, 56) and out["coarse_masks"].shape == (1, 5, 7, 7)

    torch_head = TorchPointHead(C, K, 3, 12, True, "relu").load_flax(
        variables["params"]["point_head"])
    t = lambda x: torch.from_numpy(np.asarray(x, np.float64))
    with torch.no_grad():
        want = d2_subdivision(t(features["p2"]).permute(0, 3, 1, 2), t(boxes[0]),
                              torch.from_numpy(np.asarray(classes[0], np.int64)),
                              t(coarse[0]).permute(0, 3, 1, 2), torch_head, 3, 300)
    np.testing.assert_allclose(np.asarray(out["masks"][0]), want.numpy(), atol=2e-4, rtol=1e-4)
    # the coarse masks are the coarse head's logits of each box's class
    own = np.take_along_axis(np.asarray(coarse[0]), np.asarray(classes[0])[:, None, None, None], -1)
    np.testing.assert_allclose(np.asarray(out["coarse_masks"][0]), own[..., 0], rtol=1e-6)


def test_subdivision_with_every_cell_equals_dense_point_head(np_rng):
    head = _head(subdivision_steps=2, subdivision_num_points=28 * 28)
    features, boxes, classes = _inputs(np_rng, r=3)
    variables = head.init(jax.random.key(0), features, boxes, classes,
                          method=head.predict)
    out = head.apply(variables, features, boxes, classes, method=head.predict)

    def dense(module):
        coarse = module.coarse_logits(features, boxes)
        grid = jnp.broadcast_to(regular_grid(28), (1, 3, 28 * 28, 2))
        return module.point_logits(features, boxes, grid, coarse)

    logits = head.apply(variables, method=dense)
    want = np.take_along_axis(np.asarray(logits), np.asarray(classes)[..., None, None], -1)
    np.testing.assert_allclose(np.asarray(out["masks"]).reshape(1, 3, -1), want[..., 0],
                               atol=1e-5, rtol=1e-5)


def _random_masks(rng, n, m, h, w):
    masks = np.zeros((n, m, h, w), np.uint8)
    for b in range(n):
        for i in range(m):
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            masks[b, i, y0:y0 + rng.integers(2, h // 2), x0:x0 + rng.integers(2, w // 2)] = 1
            masks[b, i] ^= (rng.random((h, w)) < 0.1).astype(np.uint8)  # ragged edges
    return masks


def test_point_labels_equal_grid_sample_on_the_full_mask(np_rng):
    n, m, r, p, h, w = 2, 4, 6, 30, 24, 37  # W not a multiple of 8: padded bits
    masks = _random_masks(np_rng, n, m, h, w)
    gt_index = np_rng.integers(0, m, (n, r)).astype(np.int32)
    points = np_rng.uniform(-3.0, [w + 3, h + 3], (n, r, p, 2)).astype(np.float32)
    got = np.asarray(sample_instance_masks(jnp.asarray(np.packbits(masks, axis=-1)), w,
                                           jnp.asarray(gt_index), jnp.asarray(points)))
    for b in range(n):
        chosen = torch.from_numpy(masks[b][gt_index[b]].astype(np.float64))[:, None]  # (R,1,H,W)
        norm = torch.from_numpy(points[b].astype(np.float64)) / torch.tensor([w, h])
        want = _torch_point_sample(chosen, norm)[:, 0]
        np.testing.assert_allclose(got[b], want.numpy(), atol=1e-5)


@pytest.mark.parametrize("size,sampling_ratio", [(7, 2), (28, 1), (7, 0)])
def test_mask_targets_equal_roi_align_of_the_bitmask(np_rng, size, sampling_ratio):
    n, m, r, h, w = 2, 3, 5, 20, 28
    masks = _random_masks(np_rng, n, m, h, w)
    gt_index = np_rng.integers(0, m, (n, r)).astype(np.int32)
    boxes = np.stack([_boxes(np_rng, r, lo=-4.0, hi=32.0) for _ in range(n)])
    got = np.asarray(crop_and_resize_masks(jnp.asarray(np.packbits(masks, axis=-1)), w,
                                           jnp.asarray(gt_index), jnp.asarray(boxes), size,
                                           sampling_ratio))
    for b in range(n):
        for k in range(r):
            feature = torch.from_numpy(masks[b, gt_index[b, k]].astype(np.float64))[None, :, :, None]
            value = torch_roi_align(feature, boxes[b, k][None, None], size, 1.0, sampling_ratio,
                                    True)[0, 0, ..., 0].numpy()
            decided = np.abs(value - 0.5) > 1e-5  # a value at the threshold may round either way
            np.testing.assert_array_equal(got[b, k][decided], (value >= 0.5)[decided])


def test_training_losses_are_finite_and_use_the_points_rng(np_rng):
    head = _head()
    features, boxes, classes = _inputs(np_rng, r=4)
    masks = jnp.asarray(np.packbits(_random_masks(np_rng, 1, 3, IMAGE, IMAGE), axis=-1))
    gt_index = jnp.asarray(np_rng.integers(0, 3, (1, 4)).astype(np.int32))
    valid = jnp.asarray([[True, True, False, True]])
    args = (features, boxes, classes, valid, masks, gt_index, (IMAGE, IMAGE))
    variables = head.init({"params": jax.random.key(0), "points": jax.random.key(1)}, *args,
                          method=head.losses)
    run = lambda seed: head.apply(variables, *args, method=head.losses,
                                  rngs={"points": jax.random.key(seed)})
    a, b, c = run(1), run(1), run(2)
    assert set(a) == {"loss_mask", "loss_mask_point"}
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in a.values())
    assert float(a["loss_mask_point"]) == float(b["loss_mask_point"])
    assert float(a["loss_mask_point"]) != float(c["loss_mask_point"])
    # zero-init-like predictor: every mask logit is near 0, so BCE is near log 2
    np.testing.assert_allclose(float(a["loss_mask"]), np.log(2.0), atol=0.05)


def test_maskrcnn_head_shapes_and_loss(np_rng):
    head = MaskRCNNConvHead(K, conv_dim=8)
    maps = {f"p{l}": jnp.asarray(np_rng.standard_normal((1, IMAGE >> l, IMAGE >> l, C)),
                                 jnp.float32) for l in (2, 3, 4, 5)}
    _, boxes, classes = _inputs(np_rng, r=4)
    variables = head.init(jax.random.key(0), maps, boxes, classes,
                          method=head.predict)
    out = head.apply(variables, maps, boxes, classes, method=head.predict)
    assert out["masks"].shape == (1, 4, 28, 28)
    masks = jnp.asarray(np.packbits(_random_masks(np_rng, 1, 2, IMAGE, IMAGE), axis=-1))
    loss = head.apply(variables, maps, boxes, classes, jnp.ones((1, 4), bool), masks,
                      jnp.zeros((1, 4), jnp.int32), (IMAGE, IMAGE), method=head.losses)
    np.testing.assert_allclose(float(loss["loss_mask"]), np.log(2.0), atol=0.05)


def test_upsample_2x2_equals_torch_conv_transpose(np_rng):
    from pointrend_jax.models.mask_head import Upsample2x2

    x = np_rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    up = Upsample2x2(5)
    variables = up.init(jax.random.key(int(np_rng.integers(1 << 30))), x)
    params = {"kernel": np_rng.standard_normal((6, 2, 2, 5)), "bias": np_rng.standard_normal(5)}
    got = np.asarray(up.apply({"params": jax.tree.map(jnp.float32, params)}, x))
    assert variables["params"]["kernel"].shape == (6, 2, 2, 5)
    deconv = torch.nn.ConvTranspose2d(6, 5, kernel_size=2, stride=2).double()
    with torch.no_grad():
        deconv.weight.copy_(torch.from_numpy(params["kernel"].transpose(0, 3, 1, 2)))
        deconv.bias.copy_(torch.from_numpy(params["bias"]))
        want = deconv(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- class-agnostic
def _randomized(variables, rng, scale=0.3):
    """`variables` with every parameter drawn afresh (predictors far from their 0.001 init),
    so a mask that depended on the class would show it."""
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape) * scale, p.dtype),
                        variables)


def _other_classes(rng, classes):
    return (classes + jnp.asarray(rng.integers(1, K, classes.shape), jnp.int32)) % K


@pytest.mark.parametrize("agnostic", [True, False])
def test_class_agnostic_pointrend_head_masks_do_not_depend_on_the_class(np_rng, agnostic):
    head = _head(cls_agnostic_mask=agnostic)
    features, boxes, classes = _inputs(np_rng, r=4)
    # arrays as jit arguments, not constants: the compilation cache then serves every run
    init = jax.jit(lambda k, f, b, c: head.init(k, f, b, c, method=head.predict))
    variables = _randomized(init(jax.random.key(0), features, boxes, classes), np_rng)
    params = variables["params"]
    m = 1 if agnostic else K
    # as detectron2's: the coarse head stays class-specific, the point head predicts M
    assert params["coarse_head"]["prediction"]["kernel"].shape[-1] == 7 * 7 * K
    assert params["point_head"]["predictor"]["kernel"].shape[-1] == m
    assert params["point_head"]["fc1"]["kernel"].shape[0] == C + K  # fine + coarse logits
    predict = jax.jit(lambda v, f, b, c: head.apply(v, f, b, c, method=head.predict))
    a = predict(variables, features, boxes, classes)
    b = predict(variables, features, boxes, _other_classes(np_rng, classes))
    assert a["masks"].shape == (1, 4, 56, 56) and a["coarse_masks"].shape == (1, 4, 7, 7)
    assert np.isfinite(np.asarray(a["masks"])).all()
    if agnostic:
        np.testing.assert_array_equal(np.asarray(a["masks"]), np.asarray(b["masks"]))
        for pa, pb in zip(a["points"], b["points"]):
            np.testing.assert_array_equal(np.asarray(pa), np.asarray(pb))
    else:  # the contrast: one mask per class, so another class gives another mask
        assert np.abs(np.asarray(a["masks"]) - np.asarray(b["masks"])).max() > 1e-2


def test_class_agnostic_pointrend_head_trains_both_heads(np_rng):
    head = _head(cls_agnostic_mask=True)
    features, boxes, classes = _inputs(np_rng, r=4)
    masks = jnp.asarray(np.packbits(_random_masks(np_rng, 1, 3, IMAGE, IMAGE), axis=-1))
    gt_index = jnp.asarray(np_rng.integers(0, 3, (1, 4)).astype(np.int32))
    valid = jnp.asarray([[True, True, False, True]])
    args = (features, boxes, classes, valid, masks, gt_index)
    variables = jax.jit(lambda k, *a: head.init({"params": k, "points": k}, *a, (IMAGE, IMAGE),
                                                method=head.losses))(jax.random.key(0), *args)

    def loss(params, features, boxes, classes, *rest):
        parts = head.apply({"params": params}, features, boxes, classes, *rest, (IMAGE, IMAGE),
                           method=head.losses, rngs={"points": jax.random.key(7)})
        return parts["loss_mask"] + parts["loss_mask_point"], parts

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (total, parts), grads = step(variables["params"], *args)
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in parts.values())
    # The coarse head stays class-specific, as detectron2's: its loss is the region's class
    # channel, so another class gives another loss (and other training points).
    (_, other), _ = step(variables["params"], features, boxes, _other_classes(np_rng, classes),
                         *args[3:])
    assert float(parts["loss_mask"]) != float(other["loss_mask"])
    for part in ("coarse_head", "point_head"):
        leaves = jax.tree.leaves(grads[part])
        assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
        assert any(np.abs(np.asarray(g)).max() > 0 for g in leaves), part


def test_class_agnostic_maskrcnn_head_has_one_channel_for_every_class(np_rng):
    head = MaskRCNNConvHead(K, conv_dim=8, cls_agnostic_mask=True)
    maps = {f"p{l}": jnp.asarray(np_rng.standard_normal((1, IMAGE >> l, IMAGE >> l, C)),
                                 jnp.float32) for l in (2, 3, 4, 5)}
    _, boxes, classes = _inputs(np_rng, r=4)
    init = jax.jit(lambda k, f, b, c: head.init(k, f, b, c, method=head.predict))
    variables = _randomized(init(jax.random.key(0), maps, boxes, classes), np_rng)
    assert variables["params"]["predictor"]["kernel"].shape == (1, 1, 8, 1)
    predict = jax.jit(lambda v, f, b, c: head.apply(v, f, b, c, method=head.predict))
    a = predict(variables, maps, boxes, classes)
    b = predict(variables, maps, boxes, _other_classes(np_rng, classes))
    assert a["masks"].shape == (1, 4, 28, 28)
    np.testing.assert_array_equal(np.asarray(a["masks"]), np.asarray(b["masks"]))
    masks = jnp.asarray(np.packbits(_random_masks(np_rng, 1, 2, IMAGE, IMAGE), axis=-1))
    args = (maps, boxes, classes, jnp.ones((1, 4), bool), masks,
            jnp.asarray(np_rng.integers(0, 2, (1, 4)).astype(np.int32)))
    loss = jax.jit(jax.value_and_grad(lambda p, *a: head.apply(
        {"params": p}, *a, (IMAGE, IMAGE), method=head.losses)["loss_mask"]))
    value, grads = loss(variables["params"], *args)
    assert np.isfinite(float(value)) and float(value) > 0
    assert np.abs(np.asarray(grads["predictor"]["kernel"])).max() > 0


@pytest.mark.parametrize("mask_head", ["pointrend", "maskrcnn"])
def test_config_key_makes_both_mask_heads_class_agnostic(mask_head):
    from pointrend_jax.instance import config as instance_config
    from pointrend_jax.models.mask_rcnn import build_instance_model

    c = instance_config.instance_runlocal(instance_config.instance_config())
    c.model.mask_head = mask_head
    c.model.roi_heads.cls_agnostic_mask = True
    model = build_instance_model(c.model, c.pointrend, K)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.uint8)
    out, variables = jax.eval_shape(
        lambda r, x: model.init_with_output({"params": r, "points": r}, x), jax.random.key(0),
        images)
    shapes = variables["params"]["mask_head"]
    if mask_head == "pointrend":
        assert shapes["coarse_head"]["prediction"]["kernel"].shape[-1] == 7 * 7 * K
        assert shapes["point_head"]["predictor"]["kernel"].shape[-1] == 1
    else:
        assert shapes["predictor"]["kernel"].shape[-1] == 1
    side = 7 * 2 ** c.pointrend.subdivision_steps if mask_head == "pointrend" else 28
    d = c.model.roi_heads.detections_per_image
    assert out["masks"].shape == (1, d, side, side)
