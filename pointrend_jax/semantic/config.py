"""Semantic segmentation configs: the shared keys plus the semantic ones, and their checks."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from pointrend_jax import config as config_lib
from pointrend_jax.models.pointrend import COARSE_HEADS

DATASETS = ("synthetic", "folder", "cityscapes", "ade20k", "voc")

# keys of the other task's configs that users reach for here -> what to use instead
REPLACEMENTS = {
    "model.mask_head": "for the coarse baseline use --config.pointrend.enabled=False",
    "loss.mask_weight": "use --config.loss.pixel_weight (the coarse head's pixel loss)",
    "loss.mask_point_weight": "use --config.loss.point_weight",
}


def semantic_config() -> ml_collections.ConfigDict:
    """Semantic PointRend defaults: SemanticFPN on a ResNet-50 (detectron2's recipe)."""
    c = config_lib.base_config()
    c.task = "semantic"
    c.data.variant = "multiclass"  # synthetic: "binary" | "multiclass"; downloads: see data/
    c.data.root = config_dict.placeholder(str)  # folder: ROOT/{train,val}/{images,masks}

    c.augment.color_jitter = 0.2  # max relative brightness/contrast/saturation change
    c.augment.max_class_ratio = 1.0  # detectron2's single-category max area (1.0 = off)
    c.augment.color_aug_ssd = False  # SSD brightness/contrast/saturation/hue, each p=0.5

    c.model.head = "semantic_fpn"  # coarse head: "semantic_fpn" | "deeplabv3"
    c.model.backbone.output_stride = 32  # 32 | 16 | 8 (dilated res4/res5)
    c.model.head_channels = 128  # SemanticFPN conv_dims / ASPP channels
    c.model.head_norm = "gn"  # coarse head norm: SemanticFPN "gn" | "", DeepLabV3 "gn" | "bn"
    c.model.dropout = 0.1  # DeepLabV3 only: dropout before the classifier
    c.model.aspp_dilations = (6, 12, 18)  # DeepLabV3 only; (12, 24, 36) at output stride 8

    c.pointrend.enabled = True  # False: the plain coarse model, for A/B
    c.pointrend.upsample_coarse_first = False  # inference: bilinear x2 before the first step

    c.loss.pixel_weight = 1.0  # weight of the coarse logits' pixel cross-entropy
    c.loss.point_weight = 1.0  # weight of the point head's cross-entropy
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the `--config.` key of the first inconsistent setting."""
    config_lib.validate_shared(config)
    config_lib.choice("data.name", config.data.name, DATASETS)
    config_lib.choice("model.head", config.model.head, COARSE_HEADS)
    config_lib.choice("model.backbone.output_stride", config.model.backbone.output_stride,
                      (8, 16, 32))
    crop_h, crop_w = config.augment.crop_size
    if config.pointrend.train_num_points > crop_h * crop_w:
        raise ValueError(f"--config.pointrend.train_num_points={config.pointrend.train_num_points} "
                         f"is more than the {crop_h * crop_w} pixels of a "
                         f"{crop_h}x{crop_w} crop (--config.augment.crop_size)")


def cpu_sized(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A model and schedule that train usefully on 128x128 images in minutes on 2 CPU cores:
    ResNet-18 at width 16 with trainable BN, DeepLabV3 head at output stride 16 (coarse
    logits at 1/16), point head on res2; subdivision 4 steps back to full resolution."""
    c.augment.crop_size = (128, 128)
    c.model.head = "deeplabv3"
    c.model.backbone.depth = 18
    c.model.backbone.width = 16
    c.model.backbone.norm = "bn"
    c.model.backbone.output_stride = 16
    c.model.head_channels = 64
    c.pointrend.fine_features = ("res2",)
    c.pointrend.fc_dim = 64
    c.pointrend.train_num_points = 512
    c.pointrend.subdivision_steps = 4
    c.pointrend.subdivision_num_points = 1024
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.warmup_steps = 100
    c.train.batch_size = 16
    c.train.num_steps = 3000
    c.train.log_every = 25
    c.train.checkpoint_every = 1000
    c.train.image_summary_every = 1000
    return c


def folder_sized(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`configs/folder.py`'s defaults, chosen by a measured sweep (benchmarks/RESULTS.md):
    `cpu_sized`'s schedule with a SemanticFPN coarse head (FPN and head of 64 channels, coarse
    logits at 1/4) on ResNet-18 at width 16, the point head on p2, 2 subdivision steps back
    to full resolution, 2600 steps of 16 crops of 128x128. On about 500 images of 128-256 px
    it trains and evaluates in under 15 minutes on 2 CPU cores."""
    cpu_sized(c)
    c.model.head = "semantic_fpn"
    c.model.backbone.output_stride = 32
    c.model.fpn_channels = 64
    c.model.head_channels = 64
    c.pointrend.fine_features = ("p2",)
    c.pointrend.subdivision_steps = 2
    c.train.num_steps = 2600
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The same experiment shrunk to a seconds-long smoke run (tests, CI)."""
    c.augment.crop_size = (64, 64)
    c.data.num_train = 8
    c.data.num_val = 4
    c.model.backbone.width = 8
    c.model.fpn_channels = 16
    c.model.head_channels = 16
    c.pointrend.fc_dim = 16
    c.pointrend.train_num_points = 64
    c.pointrend.subdivision_num_points = 128
    # SGD: the smoke run's per-step losses are compared across device and process counts,
    # and Adam turns float-rounding noise in near-zero gradients into full-size updates.
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.02
    c.optimizer.warmup_steps = 2
    c.train.batch_size = 4
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.image_summary_every = 4
    c.eval.num_examples = 2
    return c
