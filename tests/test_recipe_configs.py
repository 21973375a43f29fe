"""The paper-recipe configs: their full settings, and each one's `:runlocal` trained and
evaluated through train.py and eval.py on fakes written in the official download layouts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fake_downloads as fakes
from conftest import SEED
from pointrend_jax import config as config_lib
from pointrend_jax.backbones import DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD
from pointrend_jax.data import ade20k, cityscapes, voc
from pointrend_jax.semantic import SemanticTask
from pointrend_jax.semantic.augment import augment
from pointrend_jax.tasks import validated_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# config -> (data set folder in the fakes, official class names)
CONFIGS = {
    "cityscapes_semfpn_r101": ("cityscapes", cityscapes.CLASS_NAMES),
    "cityscapes_deeplabv3_r101": ("cityscapes", cityscapes.CLASS_NAMES),
    "ade20k_semfpn_r50": ("ade20k", ade20k.CLASS_NAMES),
    "voc_deeplabv3_r50": ("voc", voc.CLASS_NAMES),
}


def load_config(name, arg=""):
    path = os.path.join(ROOT, "configs", f"{name}.py")
    return config_lib.load_config(f"{path}:{arg}" if arg else path)


def coarse_stride(c):
    return 4 if c.model.head == "semantic_fpn" else c.model.backbone.output_stride


@pytest.mark.parametrize("name", CONFIGS)
def test_full_config_is_valid_and_renders_at_full_resolution(name):
    c = load_config(name)
    assert isinstance(validated_task(c), SemanticTask)
    assert c.data.name == CONFIGS[name][0]
    # MSRA weights: stride in the 1x1 conv, detectron2's pixel statistics, frozen BN.
    assert c.model.backbone.stride_in_1x1 and c.model.backbone.norm == "frozen_bn"
    assert tuple(c.model.pixel_mean) == DETECTRON2_PIXEL_MEAN
    assert tuple(c.model.pixel_std) == DETECTRON2_PIXEL_STD
    assert c.model.backbone.pretrained is None  # given on the command line (converted file)
    # Subdivision brings the coarse logits back to the input resolution.
    assert coarse_stride(c) == 2 ** c.pointrend.subdivision_steps
    assert c.pointrend.fine_features == (("p2",) if c.model.head == "semantic_fpn" else ("res2",))
    assert c.augment.color_aug_ssd and c.augment.max_class_ratio == 0.75 and c.augment.short_side
    assert c.optimizer.name == "sgd" and c.optimizer.momentum == 0.9


def test_cityscapes_semfpn_config_is_detectron2s_recipe():
    c = load_config("cityscapes_semfpn_r101")
    assert (c.model.head, c.model.backbone.depth, c.model.backbone.width) == ("semantic_fpn", 101, 64)
    assert (c.model.fpn_channels, c.model.head_channels, c.model.head_norm) == (256, 128, "gn")
    assert c.augment.short_side == (512, 768, 1024, 1280, 1536, 1792, 2048)
    assert (c.augment.max_size, tuple(c.augment.crop_size)) == (4096, (512, 1024))
    assert (c.train.batch_size, c.train.num_steps) == (32, 65_000)
    opt = c.optimizer
    assert (opt.learning_rate, opt.weight_decay, opt.schedule) == (0.01, 1e-4, "steps")
    assert (tuple(opt.decay_steps), opt.decay_factor) == ((40_000, 55_000), 0.1)
    assert (opt.warmup_steps, opt.warmup_factor) == (1000, 0.001)
    p = c.pointrend
    assert (p.train_num_points, p.oversample_ratio, p.importance_sample_ratio) == (2048, 3.0, 0.75)
    assert (p.subdivision_steps, p.subdivision_num_points, p.num_fc, p.fc_dim) == (2, 8192, 3, 256)
    # Whole-image eval at 1024x2048 needs no padding: one compilation for the val split.
    assert 1024 % c.eval.size_divisor == 0 and 2048 % c.eval.size_divisor == 0
    deeplab = load_config("cityscapes_deeplabv3_r101")
    assert (deeplab.model.head, deeplab.model.backbone.output_stride) == ("deeplabv3", 8)
    for key in ("augment", "optimizer", "train"):
        assert deeplab[key].to_dict() == c[key].to_dict()
    assert deeplab.model.backbone.freeze_at == c.model.backbone.freeze_at == 0
    assert deeplab.pointrend.coarse_pred_each_layer is c.pointrend.coarse_pred_each_layer is False


def test_cityscapes_recipe_augmentation_gives_512x1024_crops(np_rng):
    cfg = load_config("cityscapes_semfpn_r101").augment
    label = np.kron(np_rng.integers(0, 19, (8, 16)), np.ones((128, 128), np.int64)).astype(np.uint8)
    example = {"image": np_rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8), "label": label}
    out = augment(example, np.random.default_rng(int(np_rng.integers(2**31))), cfg)
    assert out["image"].shape == (512, 1024, 3) and out["label"].shape == (512, 1024)
    assert (out["label"] != 255).all()  # the short side is >= 512: no padding


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    rng = np.random.default_rng([SEED, 5])
    root = tmp_path_factory.mktemp("downloads")
    fakes.write_cityscapes(root / "cityscapes", rng, num_train=3, num_val=2, size=(64, 128))
    fakes.write_ade20k(root / "ade20k", rng)
    fakes.write_voc(root / "voc", rng, sbd=True)
    return root, tmp_path_factory.mktemp("tfds")


def run_cli(script, config, workdir, *flags):
    cmd = [sys.executable, os.path.join(ROOT, script), f"--config={config}", f"--workdir={workdir}",
           *flags]
    # Reruns reuse the tests' persistent compilation cache (see conftest.py).
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax"))}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_runlocal_trains_and_evaluates_with_the_official_class_names(name, downloads, tmp_path):
    root, tfds_dir = downloads
    folder, class_names = CONFIGS[name]
    config = os.path.join(ROOT, "configs", f"{name}.py:runlocal")
    flags = [f"--config.data.manual_dir={root / folder}", f"--config.data.data_dir={tfds_dir}"]
    if name != "cityscapes_semfpn_r101":  # example pictures during training: one config is enough
        flags.append("--config.train.image_summary_every=0")
    workdir = tmp_path / "run"
    run_cli("train.py", config, workdir, *flags)
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [line["step"] for line in lines] == [2, 4]
    assert all(np.isfinite(line["loss"]) for line in lines)
    evaluated = run_cli("eval.py", config, workdir, *flags)
    results = json.load(open(workdir / "eval" / "metrics.json"))
    for part in ("coarse", "pointrend"):
        assert list(results[part]["per_class_iou"]) == list(class_names)
        assert 0.0 <= results[part]["miou"] <= 1.0
    assert "2 val images" in evaluated.stdout and f"IoU {class_names[-1]}" in evaluated.stdout
