"""COCO 2017 instance segmentation: Mask R-CNN X101-32x8d-FPN + PointRend mask head,
detectron2's `pointrend_rcnn_X_101_32x8d_FPN_3x_coco.yaml` (detectron2 model zoo: 41.1 mask
AP; a target, nothing here was trained on COCO).

The R101 3x recipe on a ResNeXt-101 (32 groups of 8 channels in res2's 3x3 convs, doubling
per stage) from FAIR's caffe2 ImageNet weights: those put the stride in the 3x3 conv
(RESNETS.STRIDE_IN_1X1 False) and were trained on pixels divided by ImageNet's std
(PIXEL_STD [57.375, 57.120, 58.395] in d2's BGR order; the same mean as MSRA's). Batch 16,
SGD lr 0.02 (warm-up 1000 steps), x0.1 at 210k and 250k of 270k iterations; short side
640..800 (max 1333), horizontal flip, the stem and res2 frozen; test at short side 800.
tests/test_d2_recipes.py holds every key of the yaml files against this config.

    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/FAIR/X-101-32x8d.pkl
    python -m pointrend_jax.convert X-101-32x8d.pkl x101_32x8d.npz --format detectron2_fair
    python train.py --config configs/coco_pointrend_x101_32x8d_fpn_3x.py \
        --workdir runs/coco_x101_3x --config.data.manual_dir=/data/coco \
        --config.model.backbone.pretrained=x101_32x8d.npz
"""
from pointrend_jax.backbones import DETECTRON2_FAIR_PIXEL_STD, DETECTRON2_PIXEL_MEAN
from pointrend_jax.instance.config import instance_config, instance_runlocal


def get_config(arg: str = ""):
    c = instance_config()
    c.data.name = "coco"
    c.model.backbone.depth = 101
    c.model.backbone.num_groups = 32  # RESNETS.NUM_GROUPS
    c.model.backbone.width_per_group = 8  # RESNETS.WIDTH_PER_GROUP
    c.model.backbone.norm = "frozen_bn"
    c.model.backbone.stride_in_1x1 = False  # FAIR's caffe2 weights: stride in the 3x3
    c.model.backbone.freeze_at = 2
    c.model.pixel_mean = DETECTRON2_PIXEL_MEAN  # RGB order, 0..255 pixels
    c.model.pixel_std = DETECTRON2_FAIR_PIXEL_STD  # ImageNet's std, RGB order
    c.optimizer.decay_steps = (210_000, 250_000)  # SOLVER.STEPS
    c.train.num_steps = 270_000  # SOLVER.MAX_ITER
    if arg == "runlocal":
        instance_runlocal(c)
        # A small ResNeXt: 4 groups of 2 channels at res2 (width 8); R-101 compiles for minutes.
        c.model.backbone.depth = 50
        c.model.backbone.num_groups = 4
        c.model.backbone.width_per_group = 16
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
