"""Cityscapes fine instance segmentation (8 thing classes): Mask R-CNN R50-FPN + PointRend
mask head, detectron2's `pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml` (nothing here was
trained on Cityscapes).

The COCO 1x recipe (configs/coco_pointrend_r50_fpn.py: the model, MSRA R-50 ImageNet weights
with the stem and res2 frozen, SGD with a 1000-step warm-up) with the Cityscapes schedule and
sizes: batch 8, lr 0.01, x0.1 at 18k of 24k iterations, short side 800..1024 step 32 (max
2048), horizontal flip, test at short side 1024 (max 2048: Cityscapes' 1024x2048 images as
they are). Training images are padded to a fixed 1024x2048 canvas. tests/test_d2_recipes.py
holds every key of the yaml files against this config.

    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl
    python -m pointrend_jax.convert R-50.pkl r50_msra.npz
    python train.py --config configs/cityscapes_pointrend_r50_fpn.py --workdir runs/cs_inst \
        --config.data.manual_dir=/data/cityscapes --config.model.backbone.pretrained=r50_msra.npz
    python eval.py --config configs/cityscapes_pointrend_r50_fpn.py --workdir runs/cs_inst \
        --config.data.manual_dir=/data/cityscapes

`data.manual_dir` is the folder with `leftImg8bit/` and `gtFine/` (see
pointrend_jax/data/cityscapes_instances.py). eval.py writes COCO-style AP and, under
"cityscapes" in eval/metrics.json, cityscapesscripts' AP and AP50 (%), the numbers
detectron2's CityscapesInstanceEvaluator reports.
"""
import os

from pointrend_jax.config import load_config

COCO_1X = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coco_pointrend_r50_fpn.py")


def get_config(arg: str = ""):
    c = load_config(f"{COCO_1X}:{arg}" if arg else COCO_1X)  # ValueError on other arguments
    c.data.name = "cityscapes_instances"  # DATASETS.TRAIN / TEST: gtFine train / val
    if arg == "runlocal":  # the smoke run keeps the COCO smoke run's sizes and schedule
        return c
    c.optimizer.learning_rate = 0.01  # SOLVER.BASE_LR
    c.train.batch_size = 8  # SOLVER.IMS_PER_BATCH
    c.optimizer.decay_steps = (18_000,)  # SOLVER.STEPS
    c.train.num_steps = 24_000  # SOLVER.MAX_ITER
    c.augment.short_side = tuple(range(800, 1025, 32))  # INPUT.MIN_SIZE_TRAIN
    c.augment.max_size = 2048  # INPUT.MAX_SIZE_TRAIN and MAX_SIZE_TEST
    c.augment.test_short_side = 1024  # INPUT.MIN_SIZE_TEST
    c.augment.crop_size = (1024, 2048)  # the canvas: every resized 2:1 image fits
    return c
