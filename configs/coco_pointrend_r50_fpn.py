"""COCO 2017 instance segmentation: Mask R-CNN R50-FPN + PointRend mask head, detectron2's
`pointrend_rcnn_R_50_FPN_1x_coco.yaml` (paper: 36.3 mask AP vs 35.2 for the 28x28 head with
R50-FPN 1x; these are targets, nothing here was trained on COCO).

1x recipe: batch 16, SGD lr 0.02 (warm-up 1000 steps), steps 60k/80k, 90k iterations,
short side 640..800 (max 1333), horizontal flip, MSRA R-50 ImageNet weights with res2 and the
stem frozen; test at short side 800. Images are padded to a fixed 1344x1344 canvas.
tests/test_d2_recipes.py holds every key of the yaml files against this config; the 3x
schedule and the R101 / X101 backbones are configs/coco_pointrend_{r50,r101,x101_32x8d}_fpn_3x.py.

    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl
    python -m pointrend_jax.convert R-50.pkl r50_msra.npz
    python train.py --config configs/coco_pointrend_r50_fpn.py --workdir runs/coco_pointrend \
        --config.data.manual_dir=/data/coco --config.model.backbone.pretrained=r50_msra.npz

`data.manual_dir` is the folder with `train2017/`, `val2017/` and
`annotations/instances_{train,val}2017.json` (or give the four `data.*_images/_json` paths).
`--config.model.mask_head=maskrcnn` is the Mask R-CNN baseline.
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
    if arg == "runlocal":
        instance_runlocal(c)
        c.model.backbone.stride_in_1x1 = True
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
