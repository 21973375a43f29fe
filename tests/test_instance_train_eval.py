"""Instance segmentation end to end under `:runlocal`: train.py then eval.py on the synthetic
instance set (PointRend head) and on a tiny COCO-format fake (the 28x28 Mask R-CNN head);
the files eval.py writes, and `pointrend_jax.load(workdir).predict` against them."""
import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_utils
import pytest

import pointrend_jax
from pointrend_jax.config import load_config
from pointrend_jax.instance import InstanceTask
from pointrend_jax.instance import config as instance_config
from pointrend_jax.tasks import validated_task
from test_data_coco import make_fake_coco
from test_train_eval import ROOT, read_jsonl, run_cli

LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}
REPORTED = {"bbox_AP", "segm_AP", "segm_AP50", "segm_AP75"}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("instances"))
    data_dir = str(tmp_path_factory.mktemp("data"))
    config = "configs/synthetic_instances.py:runlocal"
    flags = [f"--config.data.data_dir={data_dir}"]
    run_cli("train.py", config, workdir, *flags)
    evaluated = run_cli("eval.py", config, workdir, *flags, "--config.eval.save_predictions=True")
    return workdir, data_dir, evaluated.stdout


def _check_metrics(report, heads):
    assert set(report) == {"step", "coarse", "pointrend"}
    for head in ("coarse", "pointrend"):
        if head not in heads:
            assert report[head] is None
            continue
        assert REPORTED <= set(report[head])
        for key in REPORTED:
            assert 0.0 <= report[head][key] <= 1.0


def test_synthetic_train_writes_instance_losses_and_checkpoints(synthetic_run):
    workdir, _, _ = synthetic_run
    logged = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [m["step"] for m in logged] == [2, 4]
    assert LOSSES | {"loss_mask_point", "loss"} <= set(logged[0])
    for m in logged:
        parts = sum(m[k] for k in LOSSES | {"loss_mask_point"})
        np.testing.assert_allclose(m["loss"], parts, rtol=1e-5)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def test_synthetic_eval_writes_coco_metrics_examples_and_predictions(synthetic_run):
    workdir, data_dir, stdout = synthetic_run
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        report = json.load(f)
    _check_metrics(report, ("coarse", "pointrend"))
    assert report["step"] == 4
    assert "segm_AP" in stdout and "pointrend" in stdout  # the side-by-side table
    examples = os.listdir(os.path.join(workdir, "eval", "examples"))
    assert len(examples) == 2 and all(e.endswith(".png") for e in examples)

    from pointrend_jax.data.synthetic_instances import load_synthetic_instances

    val = load_synthetic_instances(data_dir, num_train=8, num_val=4, image_size=64)["val"]
    with open(os.path.join(workdir, "eval", "predictions.json")) as f:
        predictions = json.load(f)
    sizes = {img["id"]: (img["height"], img["width"]) for img in val.coco_gt().dataset["images"]}
    assert predictions, "eval wrote no detections: the checks below would check nothing"
    for det in predictions:
        assert det["image_id"] in sizes and det["category_id"] in val.category_ids
        assert 0.0 <= det["score"] <= 1.0 and len(det["bbox"]) == 4
        assert tuple(mask_utils.decode(det["segmentation"]).shape) == sizes[det["image_id"]]


def test_load_predict_returns_what_eval_wrote(synthetic_run, np_rng):
    workdir, data_dir, _ = synthetic_run
    predictor = pointrend_jax.load(workdir)
    from pointrend_jax.data.synthetic_instances import load_synthetic_instances

    val = load_synthetic_instances(data_dir, num_train=8, num_val=4, image_size=64)["val"]
    example = val[0]
    out = predictor.predict(example["image"], return_coarse=True, return_points=True)
    d = len(out["scores"])
    assert d > 0, "no detections on the val image: the checks below would check nothing"
    assert out["boxes"].shape == (d, 4) and out["classes"].shape == (d,)
    assert out["masks"].shape == (d, 64, 64) and out["masks"].dtype == bool
    assert out["coarse_masks"].shape == (d, 64, 64)
    assert np.all(np.diff(out["scores"]) <= 0)  # by decreasing score
    with open(os.path.join(workdir, "eval", "predictions.json")) as f:
        written = [p for p in json.load(f) if p["image_id"] == example["image_id"]]
    assert len(written) == d
    for k, det in enumerate(written):
        x0, y0, x1, y1 = out["boxes"][k]
        np.testing.assert_allclose(det["bbox"], [x0, y0, x1 - x0, y1 - y0], rtol=1e-5, atol=1e-4)
        assert val.category_ids[out["classes"][k]] == det["category_id"]
        np.testing.assert_array_equal(mask_utils.decode(det["segmentation"]).astype(bool),
                                      out["masks"][k])
    # Any image size: boxes and masks come back in that image's pixels.
    odd = np_rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    result = predictor.predict(odd)
    assert result["masks"].shape[1:] == (50, 70)
    assert np.all(result["boxes"][:, [0, 2]] <= 70) and np.all(result["boxes"][:, [1, 3]] <= 50)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(odd.astype(np.float32))


def test_export_of_an_instance_run_equals_predict(synthetic_run, tmp_path, np_rng):
    """python -m pointrend_jax.export on an instance run: the jax.export artifact and the
    SavedModel give predict's detections and mask probabilities."""
    import jax

    from pointrend_jax.export import export_run, main
    from pointrend_jax.instance.predictor import make_instance_predict_fn

    workdir, _, _ = synthetic_run
    out = str(tmp_path / "export")
    assert main(["--workdir", workdir, "--out", out]) == 0
    with open(os.path.join(out, "export.json")) as f:
        info = json.load(f)
    assert info["outputs"]["masks"]["shape"] == ["b", 8, 224, 224]
    images = np_rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    predictor = pointrend_jax.load(workdir)
    want = jax.device_get(make_instance_predict_fn(predictor.model)(
        predictor.variables, images, np.tile(np.asarray([[64, 64]], np.int32), (3, 1))))
    assert want["valid"].any(), "no detections: the comparison below would compare padding"
    with open(os.path.join(out, "model.jax_exported"), "rb") as f:
        got = jax.device_get(jax.export.deserialize(f.read()).call(images))

    import tensorflow as tf

    served = tf.saved_model.load(os.path.join(out, "saved_model")).signatures["serving_default"](
        images=tf.constant(images))
    for outputs in (got, {k: v.numpy() for k, v in served.items()}):
        np.testing.assert_array_equal(outputs["valid"], want["valid"])
        np.testing.assert_array_equal(outputs["classes"], want["classes"])
        np.testing.assert_allclose(outputs["boxes"], want["boxes"], atol=1e-3)
        np.testing.assert_allclose(outputs["scores"], want["scores"], atol=1e-5)
        np.testing.assert_allclose(outputs["masks"], 1 / (1 + np.exp(-want["masks"])), atol=1e-4)
    with pytest.raises(ValueError, match="height"):
        export_run(workdir, str(tmp_path / "bad"), height=0, width=64, saved_model=False)


def test_instance_export_at_a_smaller_size_pads_like_predict(synthetic_run, tmp_path):
    """Exported for 32x40 images (padded to 32x64, the multiple of 32 that `predict` pads them
    to as detectron2 does, smaller than the 64x64 training canvas): the artifact finds
    predict's detections, boxes, scores and masks."""
    import jax

    from pointrend_jax.data.synthetic_instances import load_synthetic_instances
    from pointrend_jax.export import export_run
    from pointrend_jax.instance.coco_metrics import paste_masks

    workdir, data_dir, _ = synthetic_run
    out = str(tmp_path / "export")
    info = export_run(workdir, out, height=32, width=40, batch=2, platforms=("cpu",),
                      saved_model=False)
    assert info["inputs"]["images"]["shape"] == [2, 32, 40, 3]
    with open(os.path.join(out, "model.jax_exported"), "rb") as f:
        exported = jax.export.deserialize(f.read())
    val = load_synthetic_instances(data_dir, num_train=8, num_val=4, image_size=64)["val"]
    images = np.stack([val[i]["image"][:32, :40] for i in range(2)])
    got = jax.device_get(exported.call(images))
    predictor = pointrend_jax.load(workdir)
    found = 0
    for i, image in enumerate(images):
        want = predictor.predict(image)
        keep = np.asarray(got["valid"][i])
        assert keep.sum() == len(want["scores"])
        found += len(want["scores"])
        np.testing.assert_array_equal(got["classes"][i][keep], want["classes"])
        np.testing.assert_allclose(got["scores"][i][keep], want["scores"], atol=1e-5)
        np.testing.assert_allclose(got["boxes"][i][keep], want["boxes"], atol=1e-3)
        pasted = paste_masks(np.asarray(got["masks"][i][keep], np.float64), want["boxes"], (32, 40))
        assert np.mean(pasted == want["masks"]) >= 0.999
    assert found > 0


def test_coco_format_fake_trains_and_evaluates_with_the_maskrcnn_head(tmp_path, np_rng):
    images_dir, json_path, _ = make_fake_coco(tmp_path, np_rng)
    workdir = str(tmp_path / "run")
    flags = [f"--config.data.train_images={images_dir}", f"--config.data.train_json={json_path}",
             f"--config.data.val_images={images_dir}", f"--config.data.val_json={json_path}",
             "--config.model.mask_head=maskrcnn"]
    run_cli("train.py", "configs/coco_format.py:runlocal", workdir, *flags)
    run_cli("eval.py", "configs/coco_format.py:runlocal", workdir, *flags,
            "--config.eval.save_predictions=True")
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        _check_metrics(json.load(f), ("coarse",))
    with open(json_path) as f:
        truth = json.load(f)
    with open(os.path.join(workdir, "eval", "predictions.json")) as f:
        predictions = json.load(f)
    image_ids = {img["id"] for img in truth["images"]}
    category_ids = {cat["id"] for cat in truth["categories"]}
    assert all(p["image_id"] in image_ids and p["category_id"] in category_ids for p in predictions)


def test_instance_config_errors_name_the_key():
    config = instance_config.instance_config()
    config.data.name = "synthetic"
    with pytest.raises(ValueError, match="--config.data.name"):
        validated_task(config)
    config = instance_config.instance_config()
    config.model.mask_head = "deeplab"
    with pytest.raises(ValueError, match="--config.model.mask_head"):
        validated_task(config)
    config = instance_config.instance_config()
    config.augment.crop_size = (100, 128)
    with pytest.raises(ValueError, match="--config.augment.crop_size"):
        validated_task(config)


def test_instance_configs_have_no_semantic_keys_and_refuse_them_with_a_hint():
    config = instance_config.instance_config()
    for key in ("enabled", "upsample_coarse_first"):
        assert key not in config.pointrend
    for key in ("head", "head_channels", "head_norm", "dropout", "aspp_dilations"):
        assert key not in config.model
    assert "output_stride" not in config.model.backbone
    for key in ("color_jitter", "color_aug_ssd", "max_class_ratio"):
        assert key not in config.augment
    assert set(config.loss) == {"mask_weight", "mask_point_weight"}
    # A semantic key added to an instance config (an old config.json, a hand-built config):
    # refused naming the key, the task that reads it and what to use instead.
    config.pointrend.enabled = False
    with pytest.raises(ValueError) as error:
        validated_task(config)
    message = str(error.value)
    assert "--config.pointrend.enabled" in message and "read by semantic configs" in message
    assert "--config.model.mask_head=maskrcnn" in message
    config = instance_config.instance_config()
    config.loss.pixel_weight = 2.0
    with pytest.raises(ValueError, match=r"--config\.loss\.pixel_weight.*loss\.mask_weight"):
        validated_task(config)
    config = instance_config.instance_config()
    config.augment.color_jitter = 0.2
    with pytest.raises(ValueError, match=r"--config\.augment\.color_jitter.*does not change"):
        validated_task(config)
    config = instance_config.instance_config()
    config.model.made_up = 1
    with pytest.raises(ValueError, match=r"--config\.model\.made_up: instance configs have no "
                                         r"such key \(no task reads it\)"):
        validated_task(config)


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_command_line_override_of_a_semantic_key_exits_with_the_hint(script, tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, script),
           f"--config={ROOT}/configs/synthetic_instances.py:runlocal",
           f"--workdir={tmp_path / 'run'}", "--config.pointrend.enabled=False"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert "--config.pointrend.enabled" in result.stderr
    assert "instance configs have no such key" in result.stderr
    assert "--config.model.mask_head=maskrcnn" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name", ["synthetic_instances", "coco_format", "coco_pointrend_r50_fpn"])
def test_instance_configs_validate(name):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    for arg in ("", "runlocal"):
        config = load_config(f"{path}:{arg}" if arg else path)
        assert isinstance(validated_task(config), InstanceTask)
        assert config.task == "instance"
    full = load_config(path)
    if name == "coco_pointrend_r50_fpn":  # detectron2's 1x recipe
        assert full.train.batch_size == 16 and full.train.num_steps == 90000
        assert tuple(full.optimizer.decay_steps) == (60000, 80000)
        assert full.optimizer.learning_rate == 0.02
        assert full.pointrend.subdivision_steps == 5 and full.pointrend.subdivision_num_points == 784
        assert full.pointrend.train_num_points == 196 and full.model.backbone.depth == 50


def _instance_batch(np_rng, config, size=64, batch=2):
    from pointrend_jax.instance.augment import InstanceAugment
    from pointrend_jax.data.synthetic_instances import make_instance_example

    transform = InstanceAugment(config.augment)
    out = [transform(make_instance_example("train", i, seed=int(np_rng.integers(1 << 30)),
                                           image_size=size), np_rng) for i in range(batch)]
    return {k: np.stack([o[k] for o in out]) for k in out[0]}


def test_bfloat16_instance_step_with_pretrained_backbone_and_freeze_at(tmp_path, np_rng):
    import jax

    from pointrend_jax.backbones import backbone_meta, resnet_from_torchvision, save_backbone
    from pointrend_jax.train import optimizer as optimizer_lib
    from pointrend_jax.train import state as state_lib
    from pointrend_jax.train.step import jit_train_step, make_train_step
    from torch_resnet import TorchResNet, randomize_

    config = instance_config.instance_config()
    instance_config.instance_runlocal(config)  # ResNet-18 at width 8
    config.model.dtype = "bfloat16"  # float32 runs everywhere else
    module, weights = resnet_from_torchvision(
        randomize_(TorchResNet(18, 8), int(np_rng.integers(2**31))).state_dict())
    config.model.backbone.pretrained = str(tmp_path / "r18.npz")
    save_backbone(config.model.backbone.pretrained, weights,
                  backbone_meta(module, "torchvision", "test"))
    task = validated_task(config)
    model = task.build_model(config, 3)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, 10, freeze_at=2)
    mesh = state_lib.make_mesh(config.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), (64, 64), mesh, config.mesh)
    state = state_lib.with_pretrained_backbone(state, config.model)
    backbone = jax.device_get(state.params["net"]["backbone"])
    np.testing.assert_array_equal(backbone["layer3_1"]["conv2"]["kernel"],
                                  weights["params"]["layer3_1"]["conv2"]["kernel"])
    step = jit_train_step(make_train_step(task.loss_fn(model, config), tx, schedule), state, mesh)
    batch = state_lib.global_batch(_instance_batch(np_rng, config), mesh)
    for _ in range(2):
        state, measurements = step(state, batch, jax.random.key(1))
        assert np.isfinite(float(measurements["loss"])) and float(measurements["nonfinite"]) == 0
    after = jax.device_get(state.params["net"])
    for name in ("conv1", "bn1", "layer1_0", "layer1_1"):
        for a, b in zip(jax.tree.leaves(backbone[name]), jax.tree.leaves(after["backbone"][name])):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(backbone["layer2_0"]["conv1"]["kernel"],
                              after["backbone"]["layer2_0"]["conv1"]["kernel"])


def test_coco_2017_layout_under_manual_dir(tmp_path, np_rng):
    import shutil

    from pointrend_jax.data import build_datasets

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        images_dir, json_path, _ = make_fake_coco(tmp_path / split, np_rng)
        shutil.copytree(images_dir, root / f"{split}2017")
        shutil.copy(json_path, root / "annotations" / f"instances_{split}2017.json")
    spec = build_datasets({"name": "coco", "manual_dir": str(root)})
    assert spec.class_names == ["apple", "cat", "zebra"] and len(spec.val) == 4
    with pytest.raises(ValueError, match="--config.data.val_json"):
        build_datasets({"name": "coco", "train_images": "a", "train_json": "b", "val_images": "c"})
