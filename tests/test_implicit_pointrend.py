"""Implicit PointRend's mask head (`model.mask_head="implicit_pointrend"`) against detectron2's.

tests/d2_reference.py re-states detectron2's ImplicitPointRendMaskHead and ImplicitPointHead in
torch with detectron2's names (checked against detectron2's own modules, imports stubbed, on
the same state dict: equal masks and losses). A tiny GeneralizedRCNN with that head, random
weights, saved in detectron2's two formats, goes through `python -m pointrend_jax.convert`;
the imported head's parameter head, positional encoding, dynamic MLP, losses on the same points
and subdivision inference must equal the torch head's (float64 there, float32 here), also
class-agnostic and with either MLP input off (through `import_variables`, the converter's
core). Then the converter's errors, the config checks, and train.py + eval.py under
`:runlocal`.
"""
import json
import os

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
from pointrend_jax.instance.serving import serving_outputs
from pointrend_jax.models.implicit_mask_head import fourier_features
from pointrend_jax.models.mask_head import PointTargets
from pointrend_jax.tasks import validated_task
from test_d2_import import assert_close
from test_train_eval import ROOT, read_jsonl, run_cli

K, C = 3, 16  # classes, FPN channels
L2 = 1e-3  # PARAMS_L2_REGULARIZER, large enough to show in the comparison
STEPS, NUM_POINTS = 3, 196  # 14x14 grid -> 112x112 masks
PIXEL_MEAN_RGB, PIXEL_STD_RGB = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)

CONFIG = '''
from pointrend_jax.instance.config import instance_config, instance_runlocal


def get_config(arg=""):
    """detectron2's Mask R-CNN R50-FPN with Implicit PointRend's mask head at tiny widths."""
    c = instance_runlocal(instance_config())
    c.data.name = "coco"
    c.augment.crop_size = (64, 64)
    c.augment.test_short_side = None
    c.model.mask_head = "implicit_pointrend"
    c.model.backbone.update(depth=50, width=8, norm="frozen_bn", stride_in_1x1=True)
    c.model.pixel_mean = {mean}
    c.model.pixel_std = {std}
    c.model.fpn_channels = {c}
    c.model.roi_heads.update(box_fc_dim=32, mask_conv_dim={c}, coarse_mask_fc_dim=32)
    c.model.implicit_pointrend.params_l2_regularizer = {l2}
    c.pointrend.update(fc_dim=16, num_fc=3, train_num_points=20, subdivision_steps={steps},
                       subdivision_num_points={points})
    return c
'''.format(mean=PIXEL_MEAN_RGB, std=PIXEL_STD_RGB, c=C, l2=L2, steps=STEPS, points=NUM_POINTS)

# variant -> (cls_agnostic_mask, image_feature_enabled, pos_enc_enabled)
VARIANTS = {"default": (False, True, True), "class_agnostic": (True, True, True),
            "no_image_features": (False, False, True),
            "no_positional_encoding": (False, True, False)}


def reference(variant="default", generator=None):
    """The torch GeneralizedRCNN with Implicit PointRend's head; random weights of an O(1)
    scale when a generator is given."""
    agnostic, image, pos = VARIANTS[variant]
    head = R.ImplicitPointRendMaskHead(
        C, K, conv_dim=C, fc_dim=32, num_fc=2, pooler=14, point_fc_dim=16, point_num_fc=3,
        steps=STEPS, num_points=NUM_POINTS, regularizer=L2, image_feature_enabled=image,
        pos_enc_enabled=pos, cls_agnostic_mask=agnostic)
    model = R.GeneralizedRCNN(
        R.resnet_fpn(50, 8, C, norm="FrozenBN", stride_in_1x1=True),
        R.RPN(C, (8, 16, 32, 64, 128), (0.5, 1.0, 2.0), pre_nms_topk=200, post_nms_topk=50,
              nms_thresh=0.7),
        R.ROIHeads(C, K, pooler=7, sampling_ratio=2, fc_dim=32, num_fc=2, mask_head=head,
                   score_thresh=0.05, nms_thresh=0.5, detections_per_image=8),
        list(PIXEL_MEAN_RGB[::-1]), list(PIXEL_STD_RGB[::-1])).eval()
    if generator is not None:
        R.randomize_(model, generator)
        with torch.no_grad():  # predicted MLP weights that keep its activations O(1)
            head.parameter_head.prediction.weight.mul_(0.3)
            if pos:  # detectron2 draws the matrix from N(0, 1)
                head.point_head.positional_encoding_gaussian_matrix.normal_(generator=generator)
    return model.double()


def torch_generator(name):
    return torch.Generator().manual_seed(SEED * 1000 + sum(map(ord, name)))


def weights_of(model):
    return {k: v.float().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    (folder / "implicit.py").write_text(CONFIG)
    (folder / "classes.txt").write_text("cat\ndog\nbird\n")
    return folder


@pytest.fixture(scope="module")
def imported(config_file, tmp_path_factory):
    """A random model saved as a zoo .pkl and as a training .pth, both converted through the
    command line."""
    folder = tmp_path_factory.mktemp("implicit")
    ref = reference(generator=torch_generator("implicit"))
    R.save_pkl(ref, folder / "model_final.pkl")
    R.save_pth(ref, folder / "model_0000011.pth", iteration=11)
    for name in ("model_final.pkl", "model_0000011.pth"):
        argv = [folder / name, "--config", config_file / "implicit.py", "--workdir",
                folder / name.split(".")[0], "--class-names", config_file / "classes.txt"]
        assert convert.main([str(a) for a in argv]) == 0
    return ref, str(folder / "model_final"), str(folder / "model_0000011")


@pytest.fixture(scope="module", params=list(VARIANTS))
def head(request, imported, config_file):
    """(variant, torch model, our model, its variables): the CLI-converted default, the other
    variants through `import_variables` with the config keys set as detectron2's."""
    variant = request.param
    if variant == "default":
        ref, workdir, _ = imported
        predictor = pointrend_jax.load(workdir)
        return variant, ref, predictor.model, predictor.variables
    ref = reference(variant, torch_generator(variant))
    config = load_config(str(config_file / "implicit.py"))
    agnostic, image, pos = VARIANTS[variant]
    config.model.roi_heads.cls_agnostic_mask = agnostic
    config.model.implicit_pointrend.image_feature_enabled = image
    config.model.implicit_pointrend.pos_enc_enabled = pos
    model, variables = detectron2_models.import_variables(config, weights_of(ref), K)
    return variant, ref, model, variables


def _inputs(rng, r=6):
    """p2 `(1, 16, 16, C)` (ours, channels-last) and `(1, C, 16, 16)` (torch), boxes, classes."""
    p2 = rng.standard_normal((1, 16, 16, C)).astype(np.float32)
    xy = rng.uniform(-4.0, 44.0, (r, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4.0, 24.0, (r, 2))], -1).astype(np.float32)
    classes = rng.integers(0, K, r).astype(np.int32)
    ours = ({"p2": jnp.asarray(p2)}, jnp.asarray(boxes[None]), jnp.asarray(classes[None]))
    theirs = ({"p2": torch.from_numpy(p2).double().permute(0, 3, 1, 2)},
              torch.from_numpy(boxes).double(), torch.from_numpy(classes).long())
    return ours, theirs


def _apply(model, variables, fn, *arrays, **kw):
    """`fn(model.mask_head, *arrays)`, jitted: one compilation each (cached across runs)."""
    run = jax.jit(lambda v, *a: model.apply(v, *a, method=lambda m, *b: fn(m.mask_head, *b),
                                            **kw))
    return run(variables, *arrays)


# ------------------------------------------------------------------------------ pieces
def test_parameter_head_encoding_and_dynamic_mlp_equal_detectron2s(head, np_rng):
    variant, ref, model, variables = head
    torch_head = ref.roi_heads.mask_head
    (feats, boxes, _), (feats_t, boxes_t, _) = _inputs(np_rng)
    params = _apply(model, variables, lambda m, f, b: m.mlp_params(f, b), feats, boxes)
    with torch.no_grad():
        want_params = torch_head.predict_parameters(feats_t, boxes_t)
    assert params.shape == (1, 6, torch_head.point_head.num_params)
    assert_close(params[0], want_params.numpy())

    rel = np_rng.uniform(0.0, 1.0, (6, 30, 2)).astype(np.float32)
    rel_t = torch.from_numpy(rel).double()
    if VARIANTS[variant][2]:
        gaussian = variables["batch_stats"]["mask_head"]["point_head"][
            "positional_encoding_gaussian_matrix"]
        with torch.no_grad():
            want = torch_head.point_head.encode(rel_t)
        assert_close(fourier_features(jnp.asarray(rel), gaussian), want.permute(0, 2, 1).numpy())
    # the MLP alone on random inputs, then at points of the boxes through the feature maps
    fine = np_rng.standard_normal((6, 30, C)).astype(np.float32)
    mlp = np_rng.normal(0.0, 0.2, (6, torch_head.point_head.num_params)).astype(np.float32)
    ours = _apply(model, variables, lambda m, f, p, w: m.point_head(f, p, w), fine, rel, mlp)
    with torch.no_grad():
        theirs = torch_head.point_head(torch.from_numpy(fine).double().transpose(1, 2), rel_t,
                                       torch.from_numpy(mlp).double())
    assert ours.shape == (6, 30, 1 if VARIANTS[variant][0] else K)
    assert np.abs(theirs.numpy()).max() > 0.1  # the comparison compares logits, not zeros
    assert_close(ours, theirs.transpose(1, 2).numpy())
    ours = _apply(model, variables, lambda m, f, b, p, w: m.point_logits(f, b, p, w), feats,
                  boxes, jnp.asarray(rel[None]), params)
    with torch.no_grad():
        theirs = torch_head.point_logits(feats_t, boxes_t, rel_t, want_params)
    assert_close(ours[0], theirs.transpose(1, 2).numpy())


def test_training_losses_on_the_same_points_equal_detectron2s(head, np_rng):
    """`losses` on uniform points of its own draw: detectron2's losses at those points, labels
    bilinear on the full ground-truth masks, over the valid regions only."""
    _, ref, model, variables = head
    (feats, boxes, classes), (feats_t, boxes_t, classes_t) = _inputs(np_rng)
    masks = np_rng.uniform(size=(4, 64, 64)) < 0.5  # M = 4 instances of a 64x64 image
    gt_index = np_rng.integers(0, 4, (1, 6)).astype(np.int32)
    valid = np.asarray([[True, True, False, True, True, False]])
    mask_bits = np.packbits(masks, axis=-1)[None]
    out, state = _apply(model, variables, lambda m, *a: m.losses(*a, (64, 64)), feats, boxes,
                        classes, jnp.asarray(valid), jnp.asarray(mask_bits),
                        jnp.asarray(gt_index), rngs={"points": jax.random.key(SEED)},
                        mutable=["choices"])
    rel = np.asarray(state["choices"]["mask_head"]["mask_points"][0], np.float64)[0]
    assert rel.shape == (6, 20, 2) and rel.min() >= 0.0 and rel.max() < 1.0
    keep = torch.from_numpy(valid[0])
    rel_t = torch.from_numpy(rel)[keep]
    labels = R.sample_point_labels(torch.from_numpy(masks[gt_index[0]])[keep],
                                   R.point_coords_wrt_image(boxes_t[keep], rel_t))
    assert 0.1 < labels.mean() < 0.9
    with torch.no_grad():
        want = ref.roi_heads.mask_head.losses(feats_t, boxes_t[keep], classes_t[keep], rel_t,
                                              labels)
    assert set(out) == {"loss_mask_point", "loss_l2"}
    for name in out:
        np.testing.assert_allclose(out[name], want[name].item(), rtol=1e-4)


def test_labelled_points_replace_the_drawn_ones(imported, np_rng):
    """Point supervision's targets, some points to ignore: detectron2's losses on those points
    with label -1 where ignored (PointSup's ImplicitPointRendPointSupHead)."""
    ref, workdir, _ = imported
    predictor = pointrend_jax.load(workdir)
    (feats, boxes, classes), (feats_t, boxes_t, classes_t) = _inputs(np_rng)
    rel = np_rng.uniform(size=(1, 6, 10, 2)).astype(np.float32)
    labels = (np_rng.uniform(size=(1, 6, 10)) < 0.5).astype(np.float32)
    weights = (np_rng.uniform(size=(1, 6, 10)) < 0.7).astype(np.float32)
    targets = PointTargets(jnp.asarray(rel), jnp.asarray(labels), jnp.asarray(weights))
    out = _apply(predictor.model, predictor.variables,
                 lambda m, *a: m.losses(*a[:4], None, None, (64, 64), point_targets=a[4]),
                 feats, boxes, classes, jnp.ones((1, 6), bool), targets)
    with torch.no_grad():
        want = ref.roi_heads.mask_head.losses(
            feats_t, boxes_t, classes_t, torch.from_numpy(rel[0]).double(),
            torch.from_numpy(np.where(weights[0] > 0, labels[0], -1.0)).double())
    for name in ("loss_mask_point", "loss_l2"):
        np.testing.assert_allclose(out[name], want[name].item(), rtol=1e-4)


def test_subdivision_inference_equals_detectron2s(head, np_rng):
    """predict: the MLP on the 14x14 grid, 3 steps of 196 points -> 112x112."""
    variant, ref, model, variables = head
    assert model.mask_head.output_side == 112
    (feats, boxes, classes), (feats_t, boxes_t, classes_t) = _inputs(np_rng)
    out = _apply(model, variables, lambda m, f, b, c: m.predict(f, b, c), feats, boxes, classes)
    with torch.no_grad():
        probs, first = ref.roi_heads.mask_head(feats_t, boxes_t, classes_t)
    own = first[:, 0] if VARIANTS[variant][0] else first[torch.arange(6), classes_t]
    assert_close(out["coarse_masks"][0], own.numpy())
    assert out["masks"].shape == (1, 6, 112, 112)
    diff = np.abs(jax.nn.sigmoid(out["masks"][0]) - probs[:, 0].numpy())
    # cells where float32 and float64 chose different subdivision points differ; no other
    assert np.mean(diff <= 1e-4) >= 0.99, diff.max()
    assert [p.shape for p in out["points"]] == [(1, 6, 196, 2)] * 4


# ------------------------------------------------------------------------------ checkpoints
def test_both_checkpoint_formats_import_every_tensor(imported):
    ref, from_pkl, from_pth = imported
    pkl, pth = pointrend_jax.load(from_pkl), pointrend_jax.load(from_pth)
    assert Checkpointer(from_pth, read_only=True).latest_step() == 11
    with open(os.path.join(from_pkl, "config.json")) as f:
        assert json.load(f)["class_names"] == ["cat", "dog", "bird"]
    jax.tree.map(np.testing.assert_array_equal, pkl.variables, pth.variables)
    head = pkl.variables["params"]["mask_head"]["parameter_head"]
    torch_head = ref.roi_heads.mask_head
    np.testing.assert_array_equal(
        pkl.variables["batch_stats"]["mask_head"]["point_head"][
            "positional_encoding_gaussian_matrix"],
        torch_head.point_head.positional_encoding_gaussian_matrix.detach().float().numpy())
    np.testing.assert_array_equal(head["prediction"]["kernel"],
                                  torch_head.parameter_head.prediction.weight.detach().float().numpy().T)
    count = sum(np.size(v) for v in jax.tree.leaves(pkl.variables))
    assert count == sum(v.numel() for v in ref.state_dict().values())


@pytest.mark.parametrize("checkpoint, change, message", [
    ("implicit", ("model.mask_head", "pointrend"), "--config.model.mask_head=implicit_pointrend"),
    ("pointrend", None, "--config.model.mask_head=pointrend"),
    ("no_positional_encoding", None, "--config.model.implicit_pointrend.pos_enc_enabled=False"),
    ("implicit", ("pointrend.fc_dim", 8), "pointrend.num_fc / fc_dim"),
    ("implicit", ("model.roi_heads.coarse_mask_fc_dim", 16), "coarse_mask_fc_dim"),
])
def test_a_checkpoint_that_does_not_fit_names_the_config_key(config_file, checkpoint, change,
                                                            message):
    if checkpoint == "pointrend":
        weights = {k: v.float().numpy() for k, v in R.PointRendMaskHead(
            C, K, conv_dim=C, coarse_fc_dim=32, coarse_num_fc=2, side=7, pooler=14, fc_dim=16,
            num_fc=3, coarse_pred_each_layer=True, steps=5, num_points=196
        ).state_dict().items()}
        weights = {f"roi_heads.mask_head.{k}": v for k, v in weights.items()}
        weights.update({k: v for k, v in weights_of(reference()).items()
                        if not k.startswith("roi_heads.mask_head.")})
    else:
        weights = weights_of(reference("default" if checkpoint == "implicit" else checkpoint))
    config = load_config(str(config_file / "implicit.py"))
    if change:
        *groups, leaf = change[0].split(".")
        node = config
        for group in groups:
            node = node[group]
        node[leaf] = change[1]
    with pytest.raises(detectron2_models.CheckpointMismatch) as error:
        detectron2_models.import_variables(config, weights, K, where="model.pkl")
    assert message in str(error.value), str(error.value)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("key, value, message", [
    ("pointrend.subdivision_num_points", 200, "--config.pointrend.subdivision_num_points=200 "
     "must be a square"),
    ("pointrend.num_fc", 0, "--config.pointrend.num_fc=0 must be >= 1"),
    ("pointrend.activation", "elu", "--config.pointrend.activation='elu'"),
    ("model.implicit_pointrend.params_l2_regularizer", -1.0,
     "--config.model.implicit_pointrend.params_l2_regularizer must be >= 0"),
    ("both_inputs_off", None, "image_feature_enabled and pos_enc_enabled are both False"),
])
def test_the_implicit_keys_are_checked_with_the_key_named(key, value, message):
    config = load_config(os.path.join(ROOT, "configs/coco_implicit_pointrend_r50_fpn.py:runlocal"))
    validated_task(config)
    if key == "both_inputs_off":
        config.model.implicit_pointrend.update(image_feature_enabled=False, pos_enc_enabled=False)
    else:
        *groups, leaf = key.split(".")
        node = config
        for group in groups:
            node = node[group]
        node[leaf] = value
    with pytest.raises(ValueError) as error:
        validated_task(config)
    assert message in str(error.value)
    if key != "pointrend.num_fc":  # checks the other heads do not need
        config.model.mask_head = "pointrend"
        validated_task(config)


# ------------------------------------------------------------------------------ end to end
def test_runlocal_trains_and_evaluates_with_the_implicit_head(tmp_path):
    workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "data")
    config = "configs/synthetic_instances.py:runlocal"
    flags = [f"--config.data.data_dir={data_dir}", "--config.model.mask_head=implicit_pointrend"]
    run_cli("train.py", config, workdir, *flags)
    evaluated = run_cli("eval.py", config, workdir, *flags)
    logged = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    losses = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask_point",
              "loss_l2"}
    assert losses <= set(logged[-1]) and "loss_mask" not in logged[-1]
    for m in logged:
        np.testing.assert_allclose(m["loss"], sum(m[k] for k in losses), rtol=1e-5)
        assert 0.0 < m["loss_l2"] < 1e-3
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        report = json.load(f)
    assert report["step"] == 4 and "pointrend" in evaluated.stdout
    for name in ("coarse", "pointrend"):
        for key in ("bbox_AP", "segm_AP", "segm_AP50", "segm_AP75"):
            assert 0.0 <= report[name][key] <= 1.0
    predictor = pointrend_jax.load(workdir)
    assert predictor.model.mask_head.output_side == 14 * 2 ** 5  # runlocal: 196 points, 5 steps
    assert serving_outputs(predictor.model, 2)["masks"]["shape"] == [2, 8, 448, 448]
    image = np.zeros((64, 64, 3), np.uint8)
    out = predictor.predict(image, return_coarse=True)
    assert out["masks"].shape[1:] == (64, 64) and out["coarse_masks"].shape[1:] == (64, 64)
