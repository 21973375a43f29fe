"""Instance segmentation end to end under `:runlocal`: train.py then eval.py on the synthetic
instance set (PointRend head) and on a tiny COCO-format fake (the 28x28 Mask R-CNN head);
the files eval.py writes, and `pointrend_jax.load(workdir).predict` against them."""
import json
import os

import numpy as np
import pycocotools.mask as mask_utils
import pytest

import pointrend_jax
from pointrend_jax import config as config_lib
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
    from pointrend_jax.instance_predictor import make_instance_predict_fn

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
    config = config_lib.instance_config()
    config.data.name = "synthetic"
    with pytest.raises(ValueError, match="--config.data.name"):
        config_lib.validate(config)
    config = config_lib.instance_config()
    config.model.mask_head = "deeplab"
    with pytest.raises(ValueError, match="--config.model.mask_head"):
        config_lib.validate(config)
    config = config_lib.instance_config()
    config.augment.crop_size = (100, 128)
    with pytest.raises(ValueError, match="--config.augment.crop_size"):
        config_lib.validate(config)


@pytest.mark.parametrize("name", ["synthetic_instances", "coco_format", "coco_pointrend_r50_fpn"])
def test_instance_configs_validate(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in ("", "runlocal"):
        config = module.get_config(arg)
        config_lib.validate(config)
        assert config.task == "instance"
    full = module.get_config()
    if name == "coco_pointrend_r50_fpn":  # detectron2's 1x recipe
        assert full.train.batch_size == 16 and full.train.num_steps == 90000
        assert tuple(full.optimizer.decay_steps) == (60000, 80000)
        assert full.optimizer.learning_rate == 0.02
        assert full.pointrend.subdivision_steps == 5 and full.pointrend.subdivision_num_points == 784
        assert full.pointrend.train_num_points == 196 and full.model.backbone.depth == 50


def _instance_batch(np_rng, config, size=64, batch=2):
    from pointrend_jax.data.instance_augment import InstanceAugment
    from pointrend_jax.data.synthetic_instances import make_instance_example

    transform = InstanceAugment(config.augment)
    out = [transform(make_instance_example("train", i, seed=int(np_rng.integers(1 << 30)),
                                           image_size=size), np_rng) for i in range(batch)]
    return {k: np.stack([o[k] for o in out]) for k in out[0]}


def test_bfloat16_instance_step_with_pretrained_backbone_and_freeze_at(tmp_path, np_rng):
    import jax

    from pointrend_jax import train_lib
    from pointrend_jax.backbones import backbone_meta, resnet_from_torchvision, save_backbone
    from pointrend_jax.models.build import build_task_model
    from torch_resnet import TorchResNet, randomize_

    config = config_lib.instance_config()
    config_lib.instance_runlocal(config)  # ResNet-18 at width 8
    config.model.dtype = "bfloat16"  # float32 runs everywhere else
    module, weights = resnet_from_torchvision(
        randomize_(TorchResNet(18, 8), int(np_rng.integers(2**31))).state_dict())
    config.model.backbone.pretrained = str(tmp_path / "r18.npz")
    save_backbone(config.model.backbone.pretrained, weights,
                  backbone_meta(module, "torchvision", "test"))
    model = build_task_model(config, 3)
    tx, schedule = train_lib.make_optimizer(config.optimizer, 10, freeze_at=2)
    mesh = train_lib.make_mesh(config.mesh)
    state = train_lib.create_train_state(model, tx, jax.random.key(0), (64, 64), mesh, config.mesh)
    state = train_lib.with_pretrained_backbone(state, config.model)
    backbone = jax.device_get(state.params["net"]["backbone"])
    np.testing.assert_array_equal(backbone["layer3_1"]["conv2"]["kernel"],
                                  weights["params"]["layer3_1"]["conv2"]["kernel"])
    step = train_lib.jit_train_step(train_lib.make_train_step(model, tx, schedule, config.loss),
                                    state, mesh)
    batch = train_lib.global_batch(_instance_batch(np_rng, config), mesh)
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
