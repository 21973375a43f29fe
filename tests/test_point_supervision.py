"""Point supervision (detectron2's PointSup): PointSup-format json read with clear errors, the
points sampled from masks against a NumPy oracle, the transforms moving points as boxes, the
point-supervised mask losses against a torch re-statement of detectron2's, and a
point-supervised run end to end."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from pointrend_jax.data import DataError, build_datasets
from pointrend_jax.data.coco import CocoSource
from pointrend_jax.data.point_labels import sample_box_points
from pointrend_jax.instance import augment as ia
from pointrend_jax.instance import config as instance_config
from pointrend_jax.tasks import validated_task
from test_data_coco import make_fake_coco
from test_train_eval import read_jsonl, run_cli


def _write_pointsup(tmp_path, rng, counts=((3, 10), (2, 7), (0, 0))):
    """A PointSup-format set: per image (instances, points each) random boxes, 0/1 labels and
    integer pixel points (no segmentation); returns (images_dir, json_path, data)."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images, annotations = [], []
    for image_id, (num, points) in enumerate(counts, start=1):
        h, w = int(rng.integers(20, 50)), int(rng.integers(20, 50))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images_dir / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        for _ in range(num):
            q = int(rng.integers(1, points + 1))  # ragged: instances of one image differ
            x0, y0 = rng.uniform(0, w - 4), rng.uniform(0, h - 4)
            bw, bh = rng.uniform(2, w - x0), rng.uniform(2, h - y0)
            annotations.append({
                "id": 100 + len(annotations), "image_id": image_id, "category_id": int(rng.integers(1, 3)),
                "bbox": [x0, y0, bw, bh], "iscrowd": 0,
                "point_coords": np.stack([rng.integers(0, w, q), rng.integers(0, h, q)], 1).tolist(),
                "point_labels": rng.integers(0, 2, q).tolist()})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    json_path = tmp_path / "points.json"
    json_path.write_text(json.dumps(data))
    return images_dir, json_path, data


def test_pointsup_json_gives_point_labels_and_no_masks(tmp_path, np_rng):
    images_dir, json_path, data = _write_pointsup(tmp_path, np_rng)
    source = CocoSource(images_dir, json_path, points="json")
    assert sum(source.skipped.values()) == 0  # no segmentation is needed
    for index, image in enumerate(data["images"]):
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        ex = source[index]
        assert "masks" not in ex and ex["boxes"].shape == (len(anns), 4)
        q = max((len(a["point_labels"]) for a in anns), default=0)
        assert ex["point_coords"].shape == (len(anns), q, 2) and ex["point_labels"].shape == (len(anns), q)
        for k, ann in enumerate(anns):
            n = len(ann["point_labels"])
            assert ex["point_valid"][k].tolist() == [True] * n + [False] * (q - n)
            # PointSup's pixel indices become pixel centres
            np.testing.assert_array_equal(ex["point_coords"][k, :n], np.asarray(ann["point_coords"]) + 0.5)
            np.testing.assert_array_equal(ex["point_labels"][k, :n], ann["point_labels"])
    with pytest.raises(DataError, match="point labels only"):
        source.coco_gt()


MALFORMED = {
    "no labels": (lambda a: a.pop("point_labels"), "lacks point_labels"),
    "no fields": (lambda a: (a.pop("point_labels"), a.pop("point_coords")), "lacks point_coords and point_labels"),
    "not pairs": (lambda a: a.update(point_coords=[[1, 2, 3]]), "expected a non-empty list of"),
    "empty": (lambda a: a.update(point_coords=[], point_labels=[]), "expected a non-empty list"),
    "not numbers": (lambda a: a.update(point_coords=[["1", 2]], point_labels=[1]), "pairs of numbers"),
    "length": (lambda a: a.update(point_labels=a["point_labels"] + [0]), "expected a list of"),
    "label 2": (lambda a: a["point_labels"].__setitem__(0, 2), "must be 0 or 1"),
    "outside": (lambda a: a["point_coords"].__setitem__(0, [-1, 0]), "outside its"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_point_fields_name_the_file_and_annotation(case, tmp_path, np_rng):
    images_dir, json_path, data = _write_pointsup(tmp_path, np_rng)
    edit, message = MALFORMED[case]
    target = data["annotations"][int(np_rng.integers(len(data["annotations"])))]
    edit(target)
    json_path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as error:
        CocoSource(images_dir, json_path, points="json")
    assert str(error.value).startswith(f"{json_path}: annotation id {target['id']} ")


def test_point_supervision_config_errors_name_the_key():
    for key, value, head, message in (
            ("point_supervision", -1, "maskrcnn", "--config.data.point_supervision=-1"),
            ("point_source", "boxes", "maskrcnn", "--config.data.point_source"),
            ("point_source", "json", "pointrend", "--config.data.point_source='json' reads")):
        config = instance_config.instance_config()
        config.model.mask_head = head
        config.data.point_supervision = 4
        config.data[key] = value
        with pytest.raises(ValueError, match=message):
            validated_task(config)


# --------------------------------------------------------------------------------------
# Points sampled from masks: PointSup's rule.
# --------------------------------------------------------------------------------------


def _oracle_points(mask, box, num, seed, position):
    """PointSup's prepare script, restated: uniform in the box, floored, labelled by the mask;
    drawn from the annotation's own generator."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, position]))
    u = rng.random((num, 2))
    x = np.floor(box[0] + u[:, 0] * (box[2] - box[0])).astype(int)
    y = np.floor(box[1] + u[:, 1] * (box[3] - box[1])).astype(int)
    return np.stack([x, y], 1), mask[y, x]


def test_sampled_points_follow_pointsups_rule(np_rng):
    h, w = int(np_rng.integers(20, 60)), int(np_rng.integers(20, 60))
    mask = (np_rng.random((h, w)) < 0.5).astype(np.uint8)
    x0, y0 = np_rng.uniform(0, w / 2), np_rng.uniform(0, h / 2)
    box = (x0, y0, np_rng.uniform(x0 + 2, w), np_rng.uniform(y0 + 2, h))
    seed, position = int(np_rng.integers(1 << 20)), int(np_rng.integers(1000))
    rng = np.random.default_rng(np.random.SeedSequence([seed, position]))
    coords, labels = sample_box_points(mask, box, 20000, rng)
    want_coords, want_labels = _oracle_points(mask, box, 20000, seed, position)
    np.testing.assert_array_equal(coords, want_coords)
    np.testing.assert_array_equal(labels, mask[coords[:, 1], coords[:, 0]])
    np.testing.assert_array_equal(labels, want_labels)
    # uniform over the box: the share of label 1 is the mask's share of the box's area
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    weight_x = np.clip(np.minimum(xs + 0.5, box[2]) - np.maximum(xs - 0.5, box[0]), 0, None)
    weight_y = np.clip(np.minimum(ys + 0.5, box[3]) - np.maximum(ys - 0.5, box[1]), 0, None)
    share = (weight_y[:, None] * weight_x[None, :] * mask).sum() / (weight_x.sum() * weight_y.sum())
    assert abs(labels.mean() - share) < 0.02
    assert ((coords[:, 0] >= int(box[0])) & (coords[:, 0] <= box[2]) & (coords[:, 1] >= int(box[1]))
            & (coords[:, 1] <= box[3])).all()


def test_coco_source_samples_points_from_masks_deterministically(tmp_path, np_rng):
    images_dir, json_path, _ = make_fake_coco(tmp_path, np_rng)
    seed = int(np_rng.integers(1 << 20))
    source = CocoSource(images_dir, json_path, points="masks", num_points=12, point_seed=seed)
    data = json.loads(json_path.read_text())
    plain = CocoSource(images_dir, json_path)
    position = {ann["id"]: i for i, ann in enumerate(data["annotations"])}
    pointsup = dict(data, annotations=[])  # the same labels, written in PointSup's format
    for index, image_id in enumerate(plain.image_ids):
        ex, full = source[index], plain[index]
        assert "masks" not in ex and ex["point_valid"].all()
        # the kept annotations: make_fake_coco lists its bad ones last
        anns = [a for a in data["annotations"]
                if a["image_id"] == image_id and not a.get("iscrowd")][:len(full["boxes"])]
        for k, ann in enumerate(anns):
            coords, labels = _oracle_points(full["masks"][k], full["boxes"][k], 12, seed, position[ann["id"]])
            np.testing.assert_array_equal(ex["point_coords"][k], coords + 0.5)
            np.testing.assert_array_equal(ex["point_labels"][k], labels)
            pointsup["annotations"].append({key: v for key, v in ann.items() if key != "segmentation"}
                                           | {"point_coords": coords.tolist(), "point_labels": labels.tolist()})
        for key in ("boxes", "classes"):
            np.testing.assert_array_equal(ex[key], full[key])
    again = CocoSource(images_dir, json_path, points="masks", num_points=12, point_seed=seed)
    other = CocoSource(images_dir, json_path, points="masks", num_points=12, point_seed=seed + 1)
    np.testing.assert_array_equal(again[1]["point_coords"], source[1]["point_coords"])
    assert not np.array_equal(other[1]["point_coords"], source[1]["point_coords"])
    # Written out in PointSup's format and read back: the same examples.
    written = tmp_path / "pointsup.json"
    written.write_text(json.dumps(pointsup))
    read = CocoSource(images_dir, written, points="json")
    for index in range(len(read)):
        for key, value in source[index].items():
            np.testing.assert_array_equal(read[index][key], value)


# --------------------------------------------------------------------------------------
# Transforms: points move as the boxes do.
# --------------------------------------------------------------------------------------


def _point_example(rng, h, w, n, q_max):
    """n instances (class k = instance k, so outputs name their input) with random boxes and
    1..q_max points anywhere in the image."""
    x0, y0 = rng.uniform(0, w - 6, n), rng.uniform(0, h - 6, n)
    boxes = np.stack([x0, y0, rng.uniform(x0 + 3, w), rng.uniform(y0 + 3, h)], 1).astype(np.float32)
    q = rng.integers(1, q_max + 1, n)
    valid = np.arange(q_max)[None] < q[:, None]
    coords = np.stack([rng.uniform(0, w, (n, q_max)), rng.uniform(0, h, (n, q_max))], -1).astype(np.float32)
    return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "boxes": boxes,
            "classes": np.arange(n, dtype=np.int32), "point_coords": coords,
            "point_labels": rng.integers(0, 2, (n, q_max)).astype(np.uint8), "point_valid": valid}


def _check_points_moved(ex, out, mapping, num_points, out_size):
    """Every valid output point is `mapping` of one of its instance's points, with its label;
    not valid exactly when mapped outside the image; all points in order when the instance has
    `num_points`, distinct ones when it has more."""
    out_h, out_w = out_size
    for k in np.flatnonzero(out["valid"]):
        i = int(out["classes"][k])
        q = int(ex["point_valid"][i].sum())
        mapped = mapping(ex["point_coords"][i, :q])
        inside = (mapped[:, 0] >= 0) & (mapped[:, 0] <= out_w) & (mapped[:, 1] >= 0) & (mapped[:, 1] <= out_h)
        dist = np.abs(out["point_coords"][k][:, None] - mapped[None]).max(-1)  # (P, q)
        which = dist.argmin(1)
        np.testing.assert_allclose(dist.min(1), 0, atol=1e-3)
        np.testing.assert_array_equal(out["point_labels"][k], ex["point_labels"][i, which])
        np.testing.assert_array_equal(out["point_valid"][k], inside[which])
        if q == num_points:
            np.testing.assert_array_equal(which, np.arange(q))
        elif q > num_points:
            assert len(set(which.tolist())) == num_points
    assert not out["point_valid"][~out["valid"]].any()


def test_transforms_move_points_like_boxes_under_resize_and_flip(np_rng):
    p, m = 6, 8
    cfg = ia.InstanceAugmentConfig(crop_size=(96, 96), min_scale=0.6, max_scale=1.5, max_instances=m)
    seen = set()
    for _ in range(12):
        h, w = int(np_rng.integers(24, 64)), int(np_rng.integers(24, 64))
        ex = _point_example(np_rng, h, w, int(np_rng.integers(1, m + 1)), 9)
        out = ia.augment_instances(ex, np.random.default_rng(np_rng.integers(1 << 30)), cfg, num_points=p)
        assert "masks" not in out and out["point_coords"].shape == (m, p, 2)
        assert out["point_labels"].shape == (m, p) and out["point_valid"].shape == (m, p)
        out_h, out_w = (int(v) for v in out["image_size"])
        sx, sy = out_w / w, out_h / h
        n = int(out["valid"].sum())
        assert n == len(ex["boxes"])  # no crop: every box survives
        scaled = ex["boxes"] * np.asarray([sx, sy, sx, sy], np.float32)
        flipped = not np.allclose(out["boxes"][:n], scaled, atol=1e-3)
        if flipped:  # the boxes mirrored: x -> out_w - x
            np.testing.assert_allclose(out["boxes"][:n], np.stack(
                [out_w - scaled[:, 2], scaled[:, 1], out_w - scaled[:, 0], scaled[:, 3]], 1), atol=1e-3)
        seen.add(flipped)

        def mapping(xy, flipped=flipped, sx=sx, sy=sy, out_w=out_w):
            x, y = xy[:, 0] * sx, xy[:, 1] * sy
            return np.stack([out_w - x if flipped else x, y], 1)

        _check_points_moved(ex, out, mapping, p, (out_h, out_w))
    assert seen == {True, False}


def test_transforms_move_points_like_boxes_under_crop_and_flip(np_rng):
    p, m, crop = 5, 10, (20, 24)
    cfg = ia.InstanceAugmentConfig(crop_size=crop, max_instances=m)  # scale 1: crops only
    checked = 0
    for _ in range(10):
        ex = _point_example(np_rng, 40, 48, m, 5)
        out = ia.augment_instances(ex, np.random.default_rng(np_rng.integers(1 << 30)), cfg, num_points=p)
        img = ex["image"]
        hits = [(y, x, f) for y in range(21) for x in range(25) for f in (False, True)
                if np.array_equal(img[y:y + 20, x:x + 24][:, ::-1] if f else img[y:y + 20, x:x + 24],
                                  out["image"])]
        assert len(hits) == 1
        y0, x0, flipped = hits[0]
        # boxes: shifted, clipped to the window, mirrored; kept when not empty
        shifted = np.clip(ex["boxes"] - np.asarray([x0, y0, x0, y0], np.float32), 0, [24, 20, 24, 20])
        kept = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
        if flipped:
            shifted = np.stack([24 - shifted[:, 2], shifted[:, 1], 24 - shifted[:, 0], shifted[:, 3]], 1)
        n = int(out["valid"].sum())
        assert out["classes"][:n].tolist() == np.flatnonzero(kept).tolist()
        np.testing.assert_allclose(out["boxes"][:n], shifted[kept], atol=1e-4)

        def mapping(xy, flipped=flipped, x0=x0, y0=y0):
            x, y = xy[:, 0] - x0, xy[:, 1] - y0
            return np.stack([24 - x if flipped else x, y], 1)

        _check_points_moved(ex, out, mapping, p, crop)
        checked += n
    assert checked > 0


def test_point_batches_from_the_task(tmp_path):
    """The task's transform and loss keys with data.point_supervision: point arrays in the
    batch, no masks."""
    from pointrend_jax.config import load_config
    from pointrend_jax.data.pipeline import train_iterator

    config = load_config(os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                      "configs", "synthetic_instances.py:runlocal"))
    config.data.data_dir = str(tmp_path)
    config.data.point_supervision = 7
    task = validated_task(config)
    data = build_datasets(config.data)
    assert data.train.points == "masks" and data.val.points is None
    batch = next(train_iterator(data.train, global_batch_size=2, seed=0,
                                transform=task.train_transform(config), num_threads=1))
    m = config.augment.max_instances
    assert set(batch) == {"image", "boxes", "classes", "valid", "image_size", "point_coords",
                          "point_labels", "point_valid"}
    assert batch["point_coords"].shape == (2, m, 7, 2) and batch["point_valid"].shape == (2, m, 7)
    assert batch["point_valid"][batch["valid"]].any()


# --------------------------------------------------------------------------------------
# The point-supervised mask losses against detectron2's, restated in torch.
# --------------------------------------------------------------------------------------


def _torch_point_loss(logits, boxes, classes, valid, gt_index, coords, labels, point_valid):
    """detectron2 PointSup: gt points made box-relative (get_point_coords_wrt_box), those
    outside the box or unlabelled ignored, `point_sample` of the class's logits (grid_sample,
    align_corners=False), `roi_mask_point_loss` (BCE, weight 0 on ignored points, mean over all
    points). `logits` (N, R, S, S, K) numpy or a callable (rel (N, R, P, 2)) -> (N, R, P, K)."""
    import torch
    import torch.nn.functional as F

    n, r = classes.shape
    flat = np.asarray(valid).reshape(-1)
    pick = lambda a: torch.as_tensor(np.asarray(a).reshape(n * r, *np.asarray(a).shape[2:])[flat])  # noqa: E731
    gather = lambda a: np.take_along_axis(a, gt_index.reshape(n, r, *([1] * (a.ndim - 2))), axis=1)  # noqa: E731
    box = pick(boxes).double()
    rel = (pick(gather(coords)).double() - box[:, None, :2]) / (box[:, None, 2:] - box[:, None, :2])
    ignore = ((rel < 0) | (rel > 1)).any(-1) | ~pick(gather(point_valid))
    target = pick(gather(labels)).double()
    cls = pick(classes).long()
    if callable(logits):
        full = np.zeros((n * r, *rel.shape[1:]), np.float32)
        full[flat] = rel.numpy()
        at = pick(logits(full.reshape(n, r, -1, 2))).double().permute(0, 2, 1)  # (R', K, P)
    else:
        maps = pick(logits).double().permute(0, 3, 1, 2)  # (R', K, S, S)
        at = F.grid_sample(maps, (2 * rel - 1)[:, :, None, :], align_corners=False)[..., 0]
    own = at[torch.arange(len(cls)), cls]
    return float(F.binary_cross_entropy_with_logits(own, target, weight=(~ignore).double(),
                                                    reduction="mean"))


def _head_inputs(rng, n=2, r=5, m=3, p=9, k=3, size=64, channels=8):
    import jax.numpy as jnp

    features = {f"p{l}": jnp.asarray(rng.normal(size=(n, size >> l, size >> l, channels)), jnp.float32)
                for l in (2, 3, 4, 5)}
    x0, y0 = rng.uniform(0, size - 12, (n, r)), rng.uniform(0, size - 12, (n, r))
    boxes = np.stack([x0, y0, x0 + rng.uniform(6, 12, (n, r)), y0 + rng.uniform(6, 12, (n, r))], -1)
    valid = rng.random((n, r)) < 0.7
    valid[0, 0] = True
    gt_index = rng.integers(0, m, (n, r))
    coords = rng.uniform(0, size, (n, m, p, 2))
    # most points of instance gt_index[0, 0] inside region (0, 0)'s box, so some are kept
    box = boxes[0, 0]
    coords[0, gt_index[0, 0], :-2] = box[:2] + rng.uniform(0, 1, (p - 2, 2)) * (box[2:] - box[:2])
    return dict(features=features, boxes=boxes.astype(np.float32), classes=rng.integers(0, k, (n, r)),
                valid=valid, gt_index=gt_index, coords=coords.astype(np.float32),
                labels=rng.integers(0, 2, (n, m, p)).astype(np.float32),
                point_valid=rng.random((n, m, p)) < 0.8)


def _randomized(variables, rng):
    """Parameters drawn afresh at about unit activation scale (the predictors' 0.001 init
    would make every logit ~0 and every loss log 2)."""
    import jax
    import jax.numpy as jnp

    def draw(v):
        scale = 1.5 / np.sqrt(np.prod(v.shape[:-1])) if v.ndim > 1 else 0.1
        return jnp.asarray(rng.normal(size=v.shape) * scale, v.dtype)

    return jax.tree.map(draw, variables)


@pytest.mark.parametrize("head", ["maskrcnn", "pointrend", "implicit_pointrend"])
def test_point_supervised_losses_match_detectron2(head, np_rng):
    import jax
    import jax.numpy as jnp

    from pointrend_jax.models.implicit_mask_head import ImplicitPointRendMaskHead
    from pointrend_jax.models.mask_head import (MaskRCNNConvHead, PointRendMaskHead,
                                                region_point_targets)

    x = _head_inputs(np_rng)
    targets = region_point_targets(jnp.asarray(x["coords"]), jnp.asarray(x["labels"]),
                                   jnp.asarray(x["point_valid"]), jnp.asarray(x["gt_index"]),
                                   jnp.asarray(x["boxes"]))
    assert 0 < float(targets.weights.mean()) < 1  # some points kept, some ignored
    args = (x["features"], jnp.asarray(x["boxes"]), jnp.asarray(x["classes"]), jnp.asarray(x["valid"]),
            None, jnp.asarray(x["gt_index"]), (64, 64))
    reference = (x["boxes"], x["classes"], x["valid"], x["gt_index"], x["coords"], x["labels"],
                 x["point_valid"])
    if head == "maskrcnn":
        module = MaskRCNNConvHead(3, pooler_side=7, conv_dim=8)
    elif head == "pointrend":
        module = PointRendMaskHead(3, conv_dim=8, coarse_fc_dim=16, fc_dim=8, train_num_points=9)
    else:
        module = ImplicitPointRendMaskHead(3, fine_channels=8, conv_dim=8, parameter_fc_dim=16,
                                           fc_dim=8, train_num_points=9, params_l2_weight=0.5)
    variables = module.init(jax.random.key(0), *args, point_targets=targets, method=module.losses)
    variables = _randomized(variables, np_rng)
    got = module.apply(variables, *args, point_targets=targets, method=module.losses)
    if head == "maskrcnn":
        assert set(got) == {"loss_mask"}
        want = {"loss_mask": _torch_point_loss(np.asarray(module.apply(variables, x["features"], args[1])),
                                               *reference)}
    elif head == "implicit_pointrend":  # detectron2 PointSup's ImplicitPointRendPointSupHead
        params = module.apply(variables, x["features"], args[1], method=module.mlp_params)

        def point_logits(rel):
            return np.asarray(module.apply(variables, x["features"], args[1], jnp.asarray(rel),
                                           params, method=module.point_logits))

        on_regions = np.asarray(params, np.float64)[x["valid"]]  # (R', num_params)
        want = {"loss_mask_point": _torch_point_loss(point_logits, *reference),
                "loss_l2": 0.5 * float(np.mean(np.square(on_regions)))}
    else:
        coarse = module.apply(variables, x["features"], args[1], method=module.coarse_logits)

        def point_logits(rel):
            return np.asarray(module.apply(variables, x["features"], args[1], jnp.asarray(rel), coarse,
                                           method=module.point_logits))

        want = {"loss_mask": _torch_point_loss(np.asarray(coarse), *reference),
                "loss_mask_point": _torch_point_loss(point_logits, *reference)}
    assert set(got) == set(want)
    for key, value in want.items():
        assert key == "loss_l2" or abs(value - np.log(2)) > 1e-3  # the logits matter
        np.testing.assert_allclose(float(got[key]), value, rtol=1e-5)


# --------------------------------------------------------------------------------------
# End to end.
# --------------------------------------------------------------------------------------


def test_point_supervised_training_end_to_end(tmp_path):
    """train.py then eval.py under :runlocal with 10 labelled points per instance (the 28x28
    head: PointRend's point losses are checked above): the mask loss is logged, evaluation
    against the val masks reports AP."""
    workdir = str(tmp_path / "run")
    flags = [f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.point_supervision=10",
             "--config.model.mask_head=maskrcnn", "--config.eval.num_examples=0"]
    run_cli("train.py", "configs/synthetic_instances.py:runlocal", workdir, *flags)
    evaluated = run_cli("eval.py", "configs/synthetic_instances.py:runlocal", workdir, *flags)
    logged = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [m["step"] for m in logged] == [2, 4]
    assert all(np.isfinite(m["loss_mask"]) and "loss_mask_point" not in m for m in logged)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["config"]["data"]["point_supervision"] == 10
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        report = json.load(f)
    assert 0.0 <= report["coarse"]["segm_AP"] <= 1.0 and 0.0 <= report["coarse"]["bbox_AP"] <= 1.0
    assert report["pointrend"] is None and "segm_AP" in evaluated.stdout
