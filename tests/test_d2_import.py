"""Importing detectron2's trained models: detectron2-format checkpoints of tiny PointRend and
Mask R-CNN models (tests/d2_reference.py, detectron2's modules re-stated in torch with its
parameter names, random weights) go through `python -m pointrend_jax.convert MODEL --config
--workdir`, and `pointrend_jax.load(workdir)` must predict what the torch model predicts:
piece by piece (backbone + FPN, SemSegFPNHead, the point heads, RPN, box head, coarse mask
head, 28x28 head) and whole, on an image of a multiple of 32 and on one detectron2 pads.
The reference runs in float64, the models here in float32.
"""
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import d2_reference as R
import pointrend_jax
from conftest import SEED
from pointrend_jax import convert, detectron2_models
from pointrend_jax.checkpointing import Checkpointer
from pointrend_jax.config import load_config

K_SEMANTIC = 19  # Cityscapes' classes: their names are known
K_INSTANCE = 3  # needs --class-names
PIXEL_MEAN_RGB, PIXEL_STD_RGB = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
BGR = lambda rgb: list(rgb[::-1])  # noqa: E731

SEMANTIC_CONFIG = '''
from pointrend_jax.semantic.config import runlocal, semantic_config


def get_config(arg=""):
    """detectron2's semantic PointRend (ResNet-50 FPN, SemSegFPNHead, point head on p2)
    at tiny widths."""
    c = runlocal(semantic_config())
    c.data.name = "cityscapes"
    c.augment.crop_size = (64, 64)
    c.model.head = "semantic_fpn"
    c.model.backbone.update(depth=50, width=8, norm="frozen_bn", stride_in_1x1=True)
    c.model.pixel_mean = {mean}
    c.model.pixel_std = {std}
    c.model.fpn_channels = 16
    c.model.head_channels = 32
    c.model.head_norm = "gn"
    c.pointrend.update(fine_features=("p2",), num_fc=3, fc_dim=16, subdivision_steps=2,
                       subdivision_num_points=128)
    return c
'''.format(mean=PIXEL_MEAN_RGB, std=PIXEL_STD_RGB)

INSTANCE_CONFIG = '''
from pointrend_jax.instance.config import instance_config, instance_runlocal


def get_config(arg=""):
    """detectron2's Mask R-CNN R50-FPN with the PointRend (arg "pointrend") or the 28x28 head
    (arg "maskrcnn") at tiny widths, images at their own size."""
    c = instance_runlocal(instance_config())
    c.data.name = "coco"
    c.augment.crop_size = (64, 64)
    c.augment.test_short_side = None
    head, _, backbone = arg.partition("-")
    c.model.mask_head = head
    c.model.backbone.update(depth=50, width=8, norm="frozen_bn", stride_in_1x1=True)
    if backbone == "resnext":  # X-101-32x8d's kind: 4 groups of 2 channels in res2 (16 of
        # 64 at width 8), the stride in the 3x3
        c.model.backbone.update(num_groups=4, width_per_group=16, stride_in_1x1=False)
    c.model.pixel_mean = {mean}
    c.model.pixel_std = {std}
    c.model.fpn_channels = 16
    c.model.rpn.update(anchor_sizes=(8, 16, 32, 64, 128), pre_nms_topk_test=200,
                       post_nms_topk_test=50)
    h = c.model.roi_heads
    h.update(detections_per_image=8, test_topk_candidates=150, box_fc_dim=32, sampling_ratio=0,
             mask_conv_dim=16, coarse_mask_fc_dim=32, mask_pooler_side=14)
    c.pointrend.update(fc_dim=16, subdivision_steps=5, subdivision_num_points=196)
    return c
'''.format(mean=PIXEL_MEAN_RGB, std=PIXEL_STD_RGB)


def semantic_reference(coarse_pred_each_layer=False):
    head = R.PointRendSemSegHead(16, K_SEMANTIC, 32, fc_dim=16, num_fc=3,
                                 coarse_pred_each_layer=coarse_pred_each_layer,
                                 subdivision_steps=2, subdivision_num_points=128)
    return R.SemanticSegmentor(R.resnet_fpn(50, 8, 16, norm="FrozenBN", stride_in_1x1=True),
                               head, BGR(PIXEL_MEAN_RGB), BGR(PIXEL_STD_RGB))


def instance_reference(mask_head, num_classes=K_INSTANCE, depth=50, **resnet_kw):
    """Tiny GeneralizedRCNN; `resnet_kw` (num_groups, width_per_group, stride_in_1x1) makes
    its backbone a ResNeXt."""
    resnet_kw = {"norm": "FrozenBN", "stride_in_1x1": True, **resnet_kw}
    if mask_head == "pointrend":
        head = R.PointRendMaskHead(16, num_classes, conv_dim=16, coarse_fc_dim=32,
                                   coarse_num_fc=2, side=7, pooler=14, fc_dim=16, num_fc=3,
                                   coarse_pred_each_layer=True, steps=5, num_points=196)
    else:
        head = R.MaskRCNNConvUpsampleHead(16, num_classes, conv_dim=16, num_conv=4, pooler=14,
                                          sampling_ratio=0)
    return R.GeneralizedRCNN(
        R.resnet_fpn(depth, 8, 16, **resnet_kw),
        R.RPN(16, (8, 16, 32, 64, 128), (0.5, 1.0, 2.0), pre_nms_topk=200, post_nms_topk=50,
              nms_thresh=0.7),
        R.ROIHeads(16, num_classes, pooler=7, sampling_ratio=0, fc_dim=32, num_fc=2,
                   mask_head=head, score_thresh=0.05, nms_thresh=0.5, detections_per_image=8),
        BGR(PIXEL_MEAN_RGB), BGR(PIXEL_STD_RGB))


def torch_generator(name):
    return torch.Generator().manual_seed(SEED * 1000 + sum(map(ord, name)))


def bgr(image):
    """uint8 RGB (H, W, 3) -> detectron2's input: float64 BGR (3, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))).double()


def nhwc(x):
    return np.asarray(x.detach().permute(0, 2, 3, 1), np.float64)


def assert_close(ours, want, rtol=1e-4):
    """Equal within float32 noise of the arrays' scale."""
    ours, want = np.asarray(ours, np.float64), np.asarray(want, np.float64)
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=rtol, atol=rtol * np.abs(want).max())


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    (folder / "semantic.py").write_text(SEMANTIC_CONFIG)
    (folder / "instance.py").write_text(INSTANCE_CONFIG)
    (folder / "classes.txt").write_text("cat\ndog\n\nbird\n")
    return folder


def run_convert(*argv):
    assert convert.main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def semantic(configs, tmp_path_factory):
    """A random semantic PointRend saved as a model zoo .pkl and as a training .pth, both
    imported (the config's coarse_pred_each_layer fixed on the command line)."""
    folder = tmp_path_factory.mktemp("semantic")
    ref = R.randomize_(semantic_reference().eval(), torch_generator("semantic")).double()
    R.save_pkl(ref, folder / "model_final.pkl")
    R.save_pth(ref, folder / "model_0000099.pth", iteration=99)
    for name in ("model_final.pkl", "model_0000099.pth"):
        run_convert(folder / name, "--config", configs / "semantic.py", "--workdir",
                    folder / name.split(".")[0], "--config.pointrend.coarse_pred_each_layer=False")
    return ref, str(folder / "model_final"), str(folder / "model_0000099")


def random_instance_reference(mask_head, **resnet_kw):
    """`instance_reference` with random weights (float64, eval mode)."""
    ref = R.randomize_(instance_reference(mask_head, **resnet_kw).eval(),
                       torch_generator(mask_head + str(sorted(resnet_kw.items())))).double()
    with torch.no_grad():  # box regressions of a trained model's size: boxes near their
        # anchors and proposals, not random slivers that clipping empties
        for layer in (ref.proposal_generator.rpn_head.anchor_deltas,
                      ref.roi_heads.box_predictor.bbox_pred):
            layer.weight.mul_(0.05)
            layer.bias.mul_(0.05)
    return ref


@pytest.fixture(scope="module", params=["pointrend", "maskrcnn"])
def instance(request, configs, tmp_path_factory):
    """A random Mask R-CNN (PointRend or 28x28 mask head) imported from a .pkl with the
    PointRend heads under their pre-version-2 names and the pixel mean/std buffers old
    checkpoints carry (PointRend), or from a training .pth (28x28)."""
    mask_head = request.param
    folder = tmp_path_factory.mktemp(mask_head)
    ref = random_instance_reference(mask_head)
    if mask_head == "pointrend":
        path = folder / "model_final.pkl"
        legacy = (("roi_heads.mask_head.point_head", "roi_heads.mask_point_head"),
                  ("roi_heads.mask_head.coarse_head.fc",
                   "roi_heads.mask_coarse_head.coarse_mask_fc"),
                  ("roi_heads.mask_head.coarse_head", "roi_heads.mask_coarse_head"))
        buffers = {"pixel_mean": np.asarray(BGR(PIXEL_MEAN_RGB), np.float32).reshape(3, 1, 1),
                   "pixel_std": np.asarray(BGR(PIXEL_STD_RGB), np.float32).reshape(3, 1, 1)}
        R.save_pkl(ref, path, renames=legacy, extra=buffers)
    else:
        path = folder / "model_0000007.pth"
        R.save_pth(ref, path, iteration=7)
    workdir = folder / "run"
    run_convert(path, "--config", f"{configs / 'instance.py'}:{mask_head}", "--workdir", workdir,
                "--class-names", configs / "classes.txt")
    return mask_head, ref, str(workdir)


# ------------------------------------------------------------------------------ the files
def test_imported_runs_hold_config_class_names_and_a_resumable_checkpoint(semantic, configs):
    from pointrend_jax.tasks import get_task
    from pointrend_jax.train import optimizer as optimizer_lib
    from pointrend_jax.train import state as state_lib
    from pointrend_jax.train.loop import check_data_position

    _, from_pkl, from_pth = semantic
    with open(os.path.join(from_pkl, "config.json")) as f:
        saved = json.load(f)
    assert saved["class_names"][0] == "road" and len(saved["class_names"]) == K_SEMANTIC
    assert saved["config"]["pointrend"]["coarse_pred_each_layer"] is False
    assert Checkpointer(from_pkl, read_only=True).latest_step() == 0  # the zoo has no iteration
    # train.py's resume path: the state it creates restores from the .pth's iteration
    config = load_config(str(configs / "semantic.py"))
    config.pointrend.coarse_pred_each_layer = False
    task = get_task(config)
    model = task.build_model(config, K_SEMANTIC)
    tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.train.num_steps,
                                         config.model.backbone.freeze_at)
    mesh = state_lib.make_mesh(config.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(1), (64, 64), mesh,
                                         config.mesh)
    checkpointer = Checkpointer(from_pth, read_only=True)
    restored, position, step = checkpointer.restore_latest_good(state)
    checkpointer.close()
    assert step == 99 and int(restored.step) == 99
    check_data_position(position, step, config, checkpointer.directory)
    same = pointrend_jax.load(from_pkl).variables
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params),
                 jax.device_get(same["params"]))


# ------------------------------------------------------------------------------ semantic
def test_semantic_pieces_equal_detectron2s(semantic, np_rng):
    """Backbone + FPN, SemSegFPNHead and the point head, on the same inputs."""
    ref, workdir, _ = semantic
    predictor = pointrend_jax.load(workdir)
    model, variables = predictor.model, predictor.variables
    image = np_rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x, _ = R.preprocess(bgr(image), ref.pixel_mean, ref.pixel_std)
    with torch.no_grad():
        want = ref.backbone(x)
        want_coarse = ref.sem_seg_head.coarse_sem_seg_head.layers(want)
    features, coarse = model.apply(variables, image[None], method=lambda m, im: m.net(im))
    for name in ("res2", "res3", "res4", "res5"):
        assert_close(features[name], nhwc(ref.backbone.bottom_up(x)[name]))
    for name in ("p2", "p3", "p4", "p5"):
        assert_close(features[name], nhwc(want[name]))
    assert_close(coarse, nhwc(want_coarse))
    fine = np_rng.normal(size=(2, 40, 16)).astype(np.float32)
    coarse_points = np_rng.normal(size=(2, 40, K_SEMANTIC)).astype(np.float32)
    ours = model.apply(variables, fine, coarse_points, method=lambda m, f, c: m.point_head(f, c))
    with torch.no_grad():
        as_ncp = lambda a: torch.from_numpy(a).double().transpose(1, 2)  # noqa: E731
        theirs = ref.sem_seg_head.point_head(as_ncp(fine), as_ncp(coarse_points))
    assert_close(ours, theirs.transpose(1, 2).numpy())


@pytest.mark.parametrize("size", [(64, 64), (50, 70)], ids=["no_padding", "padded"])
def test_semantic_predict_equals_detectron2(semantic, np_rng, size):
    """load().predict on an image of a multiple of 32, and on one both pad to 64x96."""
    ref, workdir, _ = semantic
    image = np_rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    out = pointrend_jax.load(workdir).predict(image, return_logits=True)
    with torch.no_grad():
        want, _ = ref(bgr(image))
    want = want.permute(1, 2, 0).numpy()
    diff = np.abs(out["logits"] - want).max(axis=-1)
    # cells where float32 and float64 chose different subdivision points differ; no other
    close = diff <= 1e-4 * np.abs(want).max()
    assert close.mean() >= 0.99, (close.mean(), diff.max())
    assert np.mean(out["classes"] == want.argmax(-1)) >= 0.99


# ------------------------------------------------------------------------------ instance
def test_instance_pieces_equal_detectron2s(instance, np_rng):
    """Backbone + FPN (with the padding outside the image zeroed whatever the uint8 there),
    RPN head, box head and predictor, and the mask head's parts, on the same inputs."""
    mask_head, ref, workdir = instance
    predictor = pointrend_jax.load(workdir)
    model, variables = predictor.model, predictor.variables
    image = np_rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    sizes = np.asarray([[50, 70]], np.int32)
    x, _ = R.preprocess(bgr(image[:50, :70]), ref.pixel_mean, ref.pixel_std)
    with torch.no_grad():
        want = ref.backbone(x)
    features = model.apply(variables, image[None], sizes,
                           method=lambda m, im, s: m.net(im, image_sizes=s))
    for name in ("p2", "p3", "p4", "p5", "p6"):
        assert_close(features[name], nhwc(want[name]))
    maps = [features[f"p{l}"] for l in range(2, 7)]
    logits, deltas = model.apply(variables, maps, method=lambda m, f: m.rpn_head(f))
    with torch.no_grad():
        want_logits, want_deltas = ref.proposal_generator.rpn_head(
            [want[f"p{l}"] for l in range(2, 7)])
    for ours, theirs in zip(logits, want_logits):
        assert_close(ours[0], theirs.permute(0, 2, 3, 1).flatten(1)[0].numpy())
    for ours, theirs, fmap in zip(deltas, want_deltas, maps):
        h, w = fmap.shape[1:3]
        anchor_major = theirs.view(1, -1, 4, h, w).permute(0, 3, 4, 1, 2).flatten(1, -2)
        assert_close(ours[0], anchor_major[0].numpy())

    corners = np.sort(np_rng.uniform(0, 49, (6, 2, 2)), axis=1)  # (box, corner, xy)
    boxes = (corners + [[0.0, 0.0], [1.0, 1.0]]).reshape(6, 4)  # x0 < x1, y0 < y1
    boxes_t = torch.from_numpy(boxes)
    pooled = np_rng.normal(size=(1, 6, 7, 7, 16)).astype(np.float32)
    cls, reg = model.apply(variables, pooled, method=lambda m, p: m.box_head(p))
    with torch.no_grad():
        hidden = ref.roi_heads.box_head(torch.from_numpy(pooled[0]).double().permute(0, 3, 1, 2))
        want_cls = ref.roi_heads.box_predictor.cls_score(hidden)
        want_reg = ref.roi_heads.box_predictor.bbox_pred(hidden)
    assert_close(cls[0], want_cls.numpy())
    assert_close(reg[0].reshape(6, -1), want_reg.numpy())

    classes = np_rng.integers(0, K_INSTANCE, (1, 6)).astype(np.int32)
    feats = {k: jnp.asarray(v) for k, v in features.items()}
    p2 = torch.from_numpy(np.asarray(features["p2"], np.float64)).permute(0, 3, 1, 2)
    if mask_head == "pointrend":
        coarse = model.apply(variables, feats, boxes[None].astype(np.float32),
                             method=lambda m, f, b: m.mask_head.coarse_logits(f, b))
        with torch.no_grad():
            grid = R.regular_grid(6, 14, torch.float64)
            pooled_mask = R.fine_grained_features([p2], [4], boxes_t, grid).reshape(6, 16, 14, 14)
            want_coarse = ref.roi_heads.mask_head.coarse_head(pooled_mask)
        assert_close(coarse[0], want_coarse.permute(0, 2, 3, 1).numpy())
        fine = np_rng.normal(size=(6, 30, 16)).astype(np.float32)
        at = np_rng.normal(size=(6, 30, K_INSTANCE)).astype(np.float32)
        ours = model.apply(variables, fine, at, method=lambda m, f, c: m.mask_head.point_head(f, c))
        with torch.no_grad():
            theirs = ref.roi_heads.mask_head.point_head(
                torch.from_numpy(fine).double().transpose(1, 2),
                torch.from_numpy(at).double().transpose(1, 2))
        assert_close(ours, theirs.transpose(1, 2).numpy())
    else:
        ours = model.apply(variables, feats, boxes[None].astype(np.float32),
                           method=lambda m, f, b: m.mask_head(f, b))
        with torch.no_grad():
            _, theirs = ref.roi_heads.mask_head(
                {k: torch.from_numpy(np.asarray(v, np.float64)).permute(0, 3, 1, 2)
                 for k, v in features.items()}, boxes_t, torch.from_numpy(classes[0]).long())
        assert_close(ours[0], theirs.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("size", [(64, 64), (50, 70)], ids=["no_padding", "padded"])
def test_instance_predict_equals_detectron2(instance, np_rng, size):
    """load().predict: the same detections (boxes, scores, classes) and masks."""
    mask_head, ref, workdir = instance
    if mask_head == "maskrcnn" and size != (64, 64):
        pytest.skip("the padded image is checked with the PointRend head")
    image = np_rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    with torch.no_grad():
        want = ref(bgr(image))
    assert len(want["scores"]) > 0
    out = pointrend_jax.load(workdir).predict(image)
    np.testing.assert_array_equal(out["classes"], want["classes"].numpy())
    # float32 against float64 through a whole random network: scores agree to 5e-5
    np.testing.assert_allclose(out["scores"], want["scores"].numpy(), atol=5e-5)
    np.testing.assert_allclose(out["boxes"], want["boxes"].numpy(), atol=1e-3)
    agreement = (out["masks"] == want["masks"].numpy()).mean(axis=(1, 2))
    assert agreement.min() >= 0.99, agreement


def test_a_resnext_model_predicts_what_detectron2_predicts(configs, tmp_path, np_rng):
    """The X-101-32x8d zoo model's kind (grouped 3x3 convolutions, FAIR's stride in the 3x3),
    from a zoo .pkl, whole: detections and masks as detectron2's."""
    ref = random_instance_reference("pointrend", num_groups=4, width_per_group=2,
                                    stride_in_1x1=False)
    path = tmp_path / "model_final.pkl"
    R.save_pkl(ref, path)
    workdir = tmp_path / "run"
    run_convert(path, "--config", f"{configs / 'instance.py'}:pointrend-resnext", "--workdir",
                workdir, "--class-names", configs / "classes.txt")
    image = np_rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        want = ref(bgr(image))
    assert len(want["scores"]) > 0
    out = pointrend_jax.load(str(workdir)).predict(image)
    np.testing.assert_array_equal(out["classes"], want["classes"].numpy())
    np.testing.assert_allclose(out["scores"], want["scores"].numpy(), atol=5e-5)
    np.testing.assert_allclose(out["boxes"], want["boxes"].numpy(), atol=1e-3)
    agreement = (out["masks"] == want["masks"].numpy()).mean(axis=(1, 2))
    assert agreement.min() >= 0.99, agreement


# ------------------------------------------------------------------------------ mismatches
def _instance_weights(mask_head="pointrend", num_classes=K_INSTANCE, depth=50):
    ref = instance_reference(mask_head, num_classes, depth)
    return {k: v.float().numpy() for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("change, config_change, message", [
    ("cls_agnostic", None, "cls_agnostic_mask"),
    ("extra", None, "'roi_heads.box_head.fc3.weight'"),
    ("missing", None, "no tensor 'backbone.fpn_output3.bias'"),
    ("maskrcnn", None, "--config.model.mask_head=maskrcnn"),
    (None, ("model.backbone.depth", 101), "--config.model.backbone.depth=50"),
    (None, ("model.fpn_channels", 32), "model.fpn_channels"),
    (None, ("pointrend.fc_dim", 8), "pointrend"),
    ("anchors", None, "--config.model.rpn.anchor_sizes=(8, 16, 32, 64, 128)"),
    ("pixel_mean", None, "--config.model.pixel_mean is (123.675, 116.28, 103.53)"),
])
def test_a_checkpoint_that_does_not_fit_names_the_config_key(configs, change, config_change,
                                                            message):
    weights = _instance_weights("maskrcnn" if change == "maskrcnn" else "pointrend")
    if change == "cls_agnostic":
        for key in ("roi_heads.mask_head.point_head.predictor.weight",
                    "roi_heads.mask_head.point_head.predictor.bias"):
            weights[key] = weights[key][:1]
    elif change == "extra":
        weights["roi_heads.box_head.fc3.weight"] = np.zeros((32, 32), np.float32)
    elif change == "missing":
        del weights["backbone.fpn_output3.bias"]
    elif change == "anchors":  # old checkpoints carry the cell anchors: these are p2's of 16
        weights["proposal_generator.anchor_generator.cell_anchors.0"] = R.anchors_for_level(
            16, (0.5, 1.0, 2.0), 4, 1, 1, torch.float32).numpy()
    elif change == "pixel_mean":  # an RGB mean where detectron2 stores BGR
        weights["pixel_mean"] = np.asarray(PIXEL_MEAN_RGB, np.float32).reshape(3, 1, 1)
    config = load_config(f"{configs / 'instance.py'}:pointrend")
    if config_change:
        key, value = config_change
        *groups, leaf = key.split(".")
        node = config
        for group in groups:
            node = node[group]
        node[leaf] = value
    with pytest.raises(detectron2_models.CheckpointMismatch) as error:
        detectron2_models.import_variables(config, weights, K_INSTANCE, where="model.pkl")
    assert message in str(error.value), str(error.value)
    assert "model.pkl" in str(error.value)


def test_class_count_and_task_are_checked(configs, tmp_path):
    weights = _instance_weights()
    with pytest.raises(detectron2_models.CheckpointMismatch, match="--class-names"):
        detectron2_models.class_names_for("instance", 3, None, "model.pkl")
    assert detectron2_models.class_names_for("instance", 80, None, "m")[:2] == ["person",
                                                                               "bicycle"]
    # detectron2's Cityscapes instance classes, in its order (cityscapes_fine_instance_seg)
    assert detectron2_models.class_names_for("instance", 8, None, "m") == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert detectron2_models.class_names_for("semantic", 19, None, "m")[:2] == ["road",
                                                                               "sidewalk"]
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(detectron2_models.CheckpointMismatch, match="lists 2"):
        detectron2_models.class_names_for("instance", 3, str(tmp_path / "two.txt"), "m")
    with pytest.raises(detectron2_models.CheckpointMismatch, match="--config.task"):
        detectron2_models.num_classes_of("semantic", weights, "model.pkl")
    semantic = load_config(str(configs / "semantic.py"))  # coarse_pred_each_layer True
    ref = semantic_reference(coarse_pred_each_layer=False)
    sem_weights = {k: v.float().numpy() for k, v in ref.state_dict().items()}
    with pytest.raises(detectron2_models.CheckpointMismatch,
                       match="pointrend.coarse_pred_each_layer"):
        detectron2_models.import_variables(semantic, sem_weights, K_SEMANTIC)


def test_the_command_line_reports_errors_and_keeps_the_backbone_conversion(configs, tmp_path,
                                                                          capsys):
    assert convert.main([str(tmp_path / "none.pkl"), "--config", str(configs / "instance.py"),
                         "--workdir", str(tmp_path / "run")]) == 1
    assert "none.pkl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert.main([str(tmp_path / "model.pkl"), "--config", str(configs / "instance.py")])
    with pytest.raises(SystemExit):
        convert.main([str(tmp_path / "model.pkl")])  # neither DST nor a config
    with open(tmp_path / "R-50.pkl", "wb") as f:  # an ImageNet pickle is no model checkpoint
        pickle.dump({"conv1_w": np.zeros((8, 3, 7, 7), np.float32)}, f)
    assert convert.main([str(tmp_path / "R-50.pkl"), "--config", str(configs / "instance.py"),
                         "--workdir", str(tmp_path / "run")]) == 1
    assert "python -m pointrend_jax.convert SRC DST" in capsys.readouterr().err
