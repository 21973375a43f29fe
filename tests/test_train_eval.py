"""train.py and eval.py end to end under `:runlocal`, and the training loop's properties."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import pointrend_jax
from pointrend_jax.config import load_config
from pointrend_jax.data import build_datasets
from pointrend_jax.semantic import SemanticTask
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train import state as state_lib
from pointrend_jax.train.step import jit_train_step, make_train_step

TASK = SemanticTask()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(script, config, workdir, *overrides):
    cmd = [sys.executable, os.path.join(ROOT, script), f"--config={os.path.join(ROOT, config)}",
           f"--workdir={workdir}", *overrides]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr[-4000:]}"
    return result


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tfds_dir):
    """configs/synthetic_multiclass.py:runlocal trained and evaluated through the CLI."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = "configs/synthetic_multiclass.py:runlocal"
    flags = [f"--config.data.data_dir={tfds_dir}"]
    run_cli("train.py", config, workdir, *flags)
    evaluated = run_cli("eval.py", config, workdir, *flags, "--config.eval.save_predictions=True")
    return workdir, evaluated.stdout


def runlocal_config(tfds_dir, name="synthetic_multiclass"):
    config = load_config(os.path.join(ROOT, "configs", f"{name}.py:runlocal"))
    config.data.data_dir = tfds_dir
    return config


def test_train_writes_metrics_config_and_checkpoints(trained_run):
    workdir, _ = trained_run
    lines = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [l["step"] for l in lines] == [2, 4]
    for line in lines:
        for key in ("loss", "pixel_loss", "point_loss", "learning_rate"):
            assert np.isfinite(line[key]), (key, line)
        np.testing.assert_allclose(line["loss"], line["pixel_loss"] + line["point_loss"], rtol=1e-5)
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["class_names"] == ["background", "blob", "polygon", "curve", "ring"]
    assert saved["config"]["train"]["num_steps"] == 4
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))


def test_eval_writes_metrics_examples_and_predictions(trained_run, tfds_dir):
    workdir, stdout = trained_run
    results = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
    assert results["step"] == 4
    names = ["background", "blob", "polygon", "curve", "ring"]
    for part in ("coarse", "pointrend"):
        for key in ("miou", "boundary_iou", "pixel_accuracy"):
            assert 0.0 <= results[part][key] <= 1.0
        assert list(results[part]["per_class_iou"]) == names
    assert "coarse" in stdout and "pointrend" in stdout and "boundary IoU" in stdout
    examples = os.listdir(os.path.join(workdir, "eval", "examples"))
    assert len(examples) == 2 and all(e.endswith(".png") for e in examples)
    val = build_datasets(runlocal_config(tfds_dir).data).val
    predictions = os.path.join(workdir, "eval", "predictions")
    assert sorted(os.listdir(predictions)) == sorted(f"{val[i]['stem']}.png" for i in range(len(val)))
    # The predictor reproduces eval's saved PointRend predictions exactly.
    predictor = pointrend_jax.load(workdir)
    for i in range(len(val)):
        saved = np.asarray(Image.open(os.path.join(predictions, f"{val[i]['stem']}.png")))
        predicted = predictor.predict(val[i]["image"])
        assert predicted.shape == val[i]["label"].shape
        np.testing.assert_array_equal(predicted, saved)
    full = predictor.predict(val[0]["image"], return_logits=True, return_points=True)
    assert full["logits"].shape == (*val[0]["label"].shape, 5)
    assert len(full["points"]) == predictor.config.pointrend.subdivision_steps


def test_same_seed_gives_same_losses_and_other_seed_differs(tmp_path, tfds_dir):
    from pointrend_jax.train import train

    config = runlocal_config(tfds_dir)
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config.seed = seed
        train(config, str(tmp_path / name))
        runs.append([l["loss"] for l in read_jsonl(tmp_path / name / "metrics.jsonl")])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_loss_goes_down_on_a_tiny_run(tfds_dir):
    config = runlocal_config(tfds_dir)
    config.optimizer.learning_rate = 0.01
    config.optimizer.schedule = "constant"
    data = build_datasets(config.data)
    model = TASK.build_model(config, data.num_classes)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, 30)
    mesh = state_lib.make_mesh(config.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), (64, 64), mesh, config.mesh)
    step = jit_train_step(make_train_step(TASK.loss_fn(model, config), tx, schedule), state, mesh)
    batch = {"image": np.stack([data.train[i]["image"][:64, :64] for i in range(4)]),
             "label": np.stack([data.train[i]["label"][:64, :64] for i in range(4)])}
    losses = []
    for _ in range(30):
        state, m = step(state, state_lib.global_batch(batch, mesh), jax.random.key(1))
        losses.append(float(m["loss"]))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("enabled", [True, False])
def test_model_output_shapes(enabled, np_rng):
    config = runlocal_config("unused")
    config.pointrend.enabled = enabled
    model = TASK.build_model(config, 3)
    images = jnp.asarray(np_rng.integers(0, 256, size=(2, 64, 96, 3)), jnp.uint8)
    variables = model.init({"params": jax.random.key(0), "points": jax.random.key(1)}, images)
    out = model.apply(variables, images, train=False, rngs={"points": jax.random.key(2)})
    assert out["coarse_logits"].shape == (2, 64 // 16, 96 // 16, 3)
    if enabled:
        p = config.pointrend.train_num_points
        assert out["point_logits"].shape == (2, p, 3) and out["point_coords"].shape == (2, p, 2)
    else:
        assert "point_logits" not in out
    pred = model.apply(variables, images, method=model.predict)
    assert pred["logits"].shape == pred["coarse"].shape == (2, 64, 96, 3)
    assert len(pred["points"]) == (config.pointrend.subdivision_steps if enabled else 0)


def write_folder_dataset(root, rng, sizes):
    """ROOT/{train,val}/{images,masks} with 4 classes: squares whose colour encodes the class."""
    for split, shapes in sizes.items():
        os.makedirs(root / split / "images")
        os.makedirs(root / split / "masks")
        for i, (h, w) in enumerate(shapes):
            mask = np.zeros((h, w), np.uint8)
            for c in (1, 2, 3):
                y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
                mask[y:y + 12, x:x + 12] = c
            mask[:2] = 255
            image = (rng.uniform(0, 60, size=(h, w, 3)) + 60 * (mask[..., None].astype(np.int32) % 4)).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"img{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"img{i}.png")
    (root / "classes.txt").write_text("background\nred\ngreen\nblue\n")


def test_folder_config_trains_and_evaluates_on_odd_image_sizes(tmp_path, np_rng):
    root = tmp_path / "data"
    write_folder_dataset(root, np_rng, {"train": [(80, 72)] * 6, "val": [(70, 90), (45, 64)]})
    workdir = str(tmp_path / "run")
    flags = [f"--config.data.root={root}"]
    run_cli("train.py", "configs/folder.py:runlocal", workdir, *flags)
    run_cli("eval.py", "configs/folder.py:runlocal", workdir, *flags,
            "--config.eval.save_predictions=True")
    results = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
    assert list(results["pointrend"]["per_class_iou"]) == ["background", "red", "green", "blue"]
    for stem, shape in (("img0", (70, 90)), ("img1", (45, 64))):
        saved = np.asarray(Image.open(os.path.join(workdir, "eval", "predictions", f"{stem}.png")))
        assert saved.shape == shape and saved.max() < 4


def test_folder_errors_stop_training_before_it_starts(tmp_path, np_rng):
    root = tmp_path / "data"
    write_folder_dataset(root, np_rng, {"train": [(64, 64)] * 2, "val": [(64, 64)]})
    bad = np.zeros((64, 64), np.uint8)
    bad[5, 5] = 7
    Image.fromarray(bad).save(root / "val" / "masks" / "img0.png")
    cmd = [sys.executable, "train.py", f"--config={ROOT}/configs/folder.py:runlocal",
           f"--workdir={tmp_path / 'run'}", f"--config.data.root={root}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert "img0.png" in result.stderr and "7" in result.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_pretrained_backbone_is_loaded_into_the_train_state_and_checked(tmp_path, np_rng, tfds_dir):
    from pointrend_jax.backbones import backbone_meta, resnet_from_torchvision, save_backbone
    from torch_resnet import TorchResNet, randomize_

    config = runlocal_config(tfds_dir)  # ResNet-18 at width 8
    module, weights = resnet_from_torchvision(
        randomize_(TorchResNet(18, 8), int(np_rng.integers(2**31))).state_dict())
    path = str(tmp_path / "r18.npz")
    save_backbone(path, weights, backbone_meta(module, "torchvision", "test"))
    config.model.backbone.pretrained = path
    model = TASK.build_model(config, 5)
    tx, _ = optimizer_lib.make_optimizer(config.optimizer, 10)
    mesh = state_lib.make_mesh(config.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), (64, 64), mesh, config.mesh)
    loaded = state_lib.with_pretrained_backbone(state, config.model)
    conv = weights["params"]["layer3_1"]["conv2"]["kernel"]
    np.testing.assert_array_equal(loaded.params["net"]["backbone"]["layer3_1"]["conv2"]["kernel"], conv)
    np.testing.assert_array_equal(loaded.batch_stats["net"]["backbone"]["bn1"]["var"],
                                  weights["batch_stats"]["bn1"]["var"])
    # The rest of the model keeps its initialisation.
    np.testing.assert_array_equal(loaded.params["point_head"]["fc1"]["kernel"],
                                  state.params["point_head"]["fc1"]["kernel"])
    config.model.backbone.width = 16
    with pytest.raises(ValueError, match=r"width=8; set --config.model.backbone.width=8"):
        state_lib.with_pretrained_backbone(state, config.model)
    config.model.backbone.width = 8
    config.model.backbone.pretrained = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz: no such file"):
        state_lib.with_pretrained_backbone(state, config.model)


def test_upsample_coarse_first_starts_at_the_fine_scale_with_fewer_steps(np_rng):
    config = runlocal_config("unused")  # DeepLabV3 at stride 16, fine res2 at stride 4
    images = jnp.asarray(np_rng.integers(0, 256, size=(1, 64, 64, 3)), jnp.uint8)
    out = {}
    for trick in (False, True):
        config.pointrend.upsample_coarse_first = trick
        model = TASK.build_model(config, 3)
        variables = model.init({"params": jax.random.key(0), "points": jax.random.key(1)}, images)
        out[trick] = model.apply(variables, images, method=model.predict)
    # 4x4 coarse: 4 steps (8, 16, 32, 64); upsampled to 16x16 first: 2 steps (32, 64).
    assert [p.shape[1] for p in out[False]["points"]] == [64, 128, 128, 128]
    assert [p.shape[1] for p in out[True]["points"]] == [128, 128]
    assert out[True]["logits"].shape == out[False]["logits"].shape == (1, 64, 64, 3)


def test_freeze_at_keeps_stem_and_res2_fixed(tfds_dir, np_rng):
    config = runlocal_config(tfds_dir)
    model = TASK.build_model(config, 5)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, 10, freeze_at=2)
    mesh = state_lib.make_mesh(config.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), (64, 64), mesh, config.mesh)
    before = jax.device_get(state.params["net"]["backbone"])
    step = jit_train_step(make_train_step(TASK.loss_fn(model, config), tx, schedule), state, mesh)
    batch = {"image": np_rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
             "label": np_rng.integers(0, 5, (4, 64, 64), dtype=np.uint8)}
    for _ in range(3):
        state, _ = step(state, state_lib.global_batch(batch, mesh), jax.random.key(1))
    after = jax.device_get(state.params["net"]["backbone"])
    for name in ("conv1", "bn1", "layer1_0", "layer1_1"):
        for a, b in zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name])):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before["layer2_0"]["conv1"]["kernel"], after["layer2_0"]["conv1"]["kernel"])
    with pytest.raises(ValueError, match="freeze_at=3 is not one of"):
        optimizer_lib.make_optimizer(config.optimizer, 10, freeze_at=3)
