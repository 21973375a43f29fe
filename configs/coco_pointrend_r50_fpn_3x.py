"""COCO 2017 instance segmentation: Mask R-CNN R50-FPN + PointRend mask head, detectron2's
`pointrend_rcnn_R_50_FPN_3x_coco.yaml` (detectron2 model zoo: 38.3 mask AP; a target,
nothing here was trained on COCO).

The 1x recipe (configs/coco_pointrend_r50_fpn.py) on the 3x schedule: batch 16, SGD lr 0.02
(warm-up 1000 steps), x0.1 at 210k and 250k of 270k iterations; short side 640..800 (max
1333), horizontal flip, MSRA R-50 ImageNet weights with the stem and res2 frozen; test at
short side 800. Images are padded to a fixed 1344x1344 canvas. tests/test_d2_recipes.py
holds every key of the yaml files against this config.

    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl
    python -m pointrend_jax.convert R-50.pkl r50_msra.npz
    python train.py --config configs/coco_pointrend_r50_fpn_3x.py --workdir runs/coco_r50_3x \
        --config.data.manual_dir=/data/coco --config.model.backbone.pretrained=r50_msra.npz
"""
from pointrend_jax.backbones import DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD
from pointrend_jax.instance.config import instance_config, instance_runlocal


def get_config(arg: str = ""):
    c = instance_config()
    c.data.name = "coco"
    c.model.backbone.depth = 50
    c.model.backbone.norm = "frozen_bn"
    c.model.backbone.stride_in_1x1 = True  # MSRA weights
    c.model.backbone.freeze_at = 2
    c.model.pixel_mean = DETECTRON2_PIXEL_MEAN  # RGB order, 0..255 pixels, std 1
    c.model.pixel_std = DETECTRON2_PIXEL_STD
    c.optimizer.decay_steps = (210_000, 250_000)  # SOLVER.STEPS
    c.train.num_steps = 270_000  # SOLVER.MAX_ITER
    if arg == "runlocal":
        instance_runlocal(c)
        c.model.backbone.stride_in_1x1 = True
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
