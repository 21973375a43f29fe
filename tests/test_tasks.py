"""The task seam: the registry, the configs each task reads (and refuses), and the tasks'
losses with their weights."""
import os

import jax
import ml_collections
import numpy as np
import pytest

from pointrend_jax.config import base_config, flat_keys, load_config
from pointrend_jax.instance import InstanceTask
from pointrend_jax.instance import config as instance_config
from pointrend_jax.semantic import SemanticTask
from pointrend_jax.semantic import config as semantic_config
from pointrend_jax.task import Task
from pointrend_jax.tasks import TASKS, get_task, unread_key_hint, validated_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEMANTIC_CONFIGS = ["synthetic_binary", "synthetic_multiclass", "folder", "cityscapes_semfpn_r101",
                    "cityscapes_deeplabv3_r101", "ade20k_semfpn_r50", "voc_deeplabv3_r50"]
INSTANCE_CONFIGS = ["synthetic_instances", "coco_format", "coco_pointrend_r50_fpn",
                    "coco_implicit_pointrend_r50_fpn"]


def keys(config):
    return {name for name, _ in flat_keys(config)}


def test_registry_finds_the_task_of_a_config_or_a_name():
    assert set(TASKS) == {"semantic", "instance"}
    assert all(isinstance(task, Task) and TASKS[name] is task and task.name == name
               for name, task in TASKS.items())
    assert isinstance(get_task("semantic"), SemanticTask)
    assert isinstance(get_task("instance"), InstanceTask)
    assert get_task(instance_config.instance_config()) is TASKS["instance"]
    assert get_task(semantic_config.semantic_config()) is TASKS["semantic"]
    # configs saved before instance models existed have no `task`: semantic
    old = semantic_config.semantic_config()
    del old["task"]
    assert get_task(old) is TASKS["semantic"]
    with pytest.raises(ValueError, match=r"--config.task='panoptic' is not one of \['instance', "
                                         r"'semantic'\]"):
        get_task("panoptic")
    config = semantic_config.semantic_config()
    config.task = "panoptic"
    with pytest.raises(ValueError, match="--config.task='panoptic'"):
        validated_task(config)


def test_each_task_reads_the_shared_keys_and_only_its_own():
    shared = keys(base_config()) - {"loss"}  # `loss` is an empty group: each task fills it
    semantic, instance = keys(SemanticTask().default_config()), keys(InstanceTask().default_config())
    assert SemanticTask().config_keys == semantic and InstanceTask().config_keys == instance
    assert shared <= semantic and shared <= instance
    only_semantic = {"pointrend.enabled", "pointrend.upsample_coarse_first", "model.head",
                     "model.backbone.output_stride", "augment.color_jitter",
                     "augment.color_aug_ssd", "augment.max_class_ratio", "loss.pixel_weight",
                     "loss.point_weight", "data.root"}
    only_instance = {"model.mask_head", "model.rpn.anchor_sizes",
                     "model.roi_heads.detections_per_image", "augment.test_short_side",
                     "augment.max_instances", "loss.mask_weight", "loss.mask_point_weight",
                     "eval.boundary_ap", "data.train_json"}
    # Both tasks name a synthetic variant, each from its own list of choices.
    assert "data.variant" in semantic & instance and "data.variant" not in shared
    assert only_semantic <= semantic - instance
    assert only_instance <= instance - semantic
    for task in (SemanticTask(), InstanceTask()):
        assert task.reads_key("model") and task.reads_key("model.backbone")  # groups
        assert not task.reads_key("model.back") and not task.reads_key("made_up")


@pytest.mark.parametrize("name", SEMANTIC_CONFIGS + INSTANCE_CONFIGS)
def test_every_config_file_is_its_tasks_keys_exactly(name):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    for arg in ("", ":runlocal"):
        config = load_config(path + arg)
        task = validated_task(config)
        assert task.name == ("instance" if name in INSTANCE_CONFIGS else "semantic")
        assert keys(config) == task.config_keys


def test_semantic_configs_refuse_instance_keys_with_a_hint():
    config = semantic_config.semantic_config()
    config.model.mask_head = "maskrcnn"
    with pytest.raises(ValueError) as error:
        validated_task(config)
    message = str(error.value)
    assert message.startswith("--config.model.mask_head: semantic configs have no such key")
    assert "read by instance configs only" in message
    assert "--config.pointrend.enabled=False" in message
    config = semantic_config.semantic_config()
    config.loss.mask_weight = 1.0
    with pytest.raises(ValueError, match=r"--config\.loss\.mask_weight.*--config\.loss\.pixel_weight"):
        validated_task(config)
    # an instance group: named at its leaf
    config = semantic_config.semantic_config()
    config.model.rpn = ml_collections.ConfigDict({"nms_thresh": 0.7})
    with pytest.raises(ValueError, match=r"--config\.model\.rpn\.nms_thresh: semantic configs"):
        validated_task(config)


def test_instance_configs_refuse_semantic_keys_with_a_hint():
    config = instance_config.instance_config()
    config.pointrend.enabled = False
    with pytest.raises(ValueError) as error:
        validated_task(config)
    assert str(error.value) == unread_key_hint("pointrend.enabled", "instance")
    assert str(error.value) == (
        "--config.pointrend.enabled: instance configs have no such key (it is read by semantic "
        "configs only); for the instance baseline use --config.model.mask_head=maskrcnn")
    config = instance_config.instance_config()
    config.model.backbone.output_stride = 16
    with pytest.raises(ValueError, match=r"--config\.model\.backbone\.output_stride: instance "
                                         r"configs have no such key \(it is read by semantic"):
        validated_task(config)


def test_the_tasks_own_checks_run_after_the_key_check():
    config = semantic_config.semantic_config()
    config.model.head = "unet"
    with pytest.raises(ValueError, match=r"--config.model.head='unet' is not one of"):
        validated_task(config)
    config = semantic_config.semantic_config()
    config.data.name = "coco"  # an instance data set
    with pytest.raises(ValueError, match=r"--config.data.name='coco' is not one of"):
        validated_task(config)
    config = semantic_config.semantic_config()
    config.augment.crop_size = (32, 32)
    with pytest.raises(ValueError, match=r"--config.pointrend.train_num_points=2048 is more than "
                                         r"the 1024 pixels"):
        validated_task(config)
    config = instance_config.instance_config()
    config.eval.size_divisor = 48
    with pytest.raises(ValueError, match=r"--config.eval.size_divisor=48 must be a multiple of 32"):
        validated_task(config)
    for config in (semantic_config.semantic_config(), instance_config.instance_config()):
        config.optimizer.schedule = "linear"  # a shared key
        with pytest.raises(ValueError, match=r"--config.optimizer.schedule='linear'"):
            validated_task(config)


def _semantic_batch(rng, k, n=2, size=64):
    return {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            "label": rng.integers(0, k, (n, size, size), dtype=np.uint8)}


def test_semantic_loss_is_the_weighted_sum_of_its_parts(np_rng):
    from pointrend_jax.models.layers import init_variables
    from pointrend_jax.semantic.losses import segmentation_loss

    config = semantic_config.runlocal(semantic_config.cpu_sized(semantic_config.semantic_config()))
    config.model.backbone.norm = "bn"  # the loss must hand back the updated statistics
    config.loss.pixel_weight, config.loss.point_weight = 0.25, 3.0
    task = validated_task(config)
    model = task.build_model(config, 5)
    variables = init_variables(model, jax.random.key(0), (64, 64))
    batch = _semantic_batch(np_rng, 5)
    rngs = {"points": jax.random.key(1), "dropout": jax.random.key(2)}
    total, parts, batch_stats = jax.jit(task.loss_fn(model, config))(variables, batch, rngs)
    assert set(parts) == {"pixel_loss", "point_loss"}
    np.testing.assert_allclose(total, 0.25 * parts["pixel_loss"] + 3.0 * parts["point_loss"],
                               rtol=1e-6)
    # the parts are segmentation_loss's, on the model's training outputs
    outputs = model.apply(variables, batch["image"], train=True, rngs=rngs,
                          mutable=["batch_stats"])[0]
    _, expected = segmentation_loss(outputs, batch["label"])
    for key in parts:
        np.testing.assert_allclose(parts[key], expected[key], rtol=1e-5)
    assert jax.tree.structure(batch_stats) == jax.tree.structure(variables["batch_stats"])
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(batch_stats),
                                                          jax.tree.leaves(variables["batch_stats"])))


def test_instance_loss_is_the_weighted_sum_of_its_parts(np_rng):
    from pointrend_jax.data.synthetic_instances import make_instance_example
    from pointrend_jax.models.layers import init_variables

    config = instance_config.instance_runlocal(instance_config.instance_config())
    config.loss.mask_weight, config.loss.mask_point_weight = 0.5, 4.0
    task = validated_task(config)
    model = task.build_model(config, 3)
    transform = task.train_transform(config)
    examples = [transform(make_instance_example("train", i, seed=int(np_rng.integers(1 << 30)),
                                                image_size=64), np_rng) for i in range(2)]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    variables = init_variables(model, jax.random.key(0), (64, 64))
    rngs = {"points": jax.random.key(1), "dropout": jax.random.key(2)}
    total, parts, _ = jax.jit(task.loss_fn(model, config))(variables, batch, rngs)
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask",
            "loss_mask_point"} == set(parts)
    unweighted = sum(v for k, v in parts.items() if k not in ("loss_mask", "loss_mask_point"))
    np.testing.assert_allclose(
        total, unweighted + 0.5 * parts["loss_mask"] + 4.0 * parts["loss_mask_point"], rtol=1e-5)
    assert float(parts["loss_mask_point"]) > 0 and float(parts["loss_mask"]) > 0


def test_instance_serving_refuses_a_size_that_predict_would_resize():
    from pointrend_jax.instance.serving import make_instance_serving_fn

    config = instance_config.instance_config()  # test_short_side 800, max_size 1333
    task = get_task(config)
    with pytest.raises(ValueError) as error:
        task.serving_fn(None, config, 600, 900)
    message = str(error.value)
    assert "augment.test_short_side=800" in message and "600x900 images to 800x1200" in message
    assert "--height 800 --width 1200" in message
    # the size predict resizes to is accepted (the model is only used when serving)
    assert callable(make_instance_serving_fn(None, config.augment, 32, 800, 1200))
    with pytest.raises(ValueError, match="1333"):  # the long side is capped
        make_instance_serving_fn(None, config.augment, 32, 400, 2000)
