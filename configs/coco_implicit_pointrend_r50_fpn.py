"""COCO 2017 instance segmentation: Mask R-CNN R50-FPN + Implicit PointRend mask head
(Cheng, Kirillov et al., "Pointly-Supervised Instance Segmentation", CVPR 2022), detectron2's
`implicit_pointrend_R_50_FPN_1x_coco.yaml` (nothing here was trained on COCO).

The PointRend 1x recipe (configs/coco_pointrend_r50_fpn.py: batch 16, SGD lr 0.02, warm-up
1000 steps, steps 60k/80k of 90k, short side 640..800 (max 1333), MSRA R-50 ImageNet weights
with the stem and res2 frozen, test at short side 800) with Base-Implicit-PointRend.yaml's
head: a parameter head (14x14 grid on p2, 2x2 conv, 2 FC of 1024) predicts each region's
MLP (3 hidden layers of 256 over the p2 features and 256 Fourier features of each point),
trained on 196 uniform points per box of the proposals (TRAIN_ON_PRED_BOXES stays off), with
the L2 penalty 1e-5 on the predicted parameters; inference on a 28x28 grid, then 3
subdivision steps of 784 points -> 224x224 masks. tests/test_d2_recipes.py holds every key of
the yaml files against this config.

    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl
    python -m pointrend_jax.convert R-50.pkl r50_msra.npz
    python train.py --config configs/coco_implicit_pointrend_r50_fpn.py \
        --workdir runs/coco_implicit --config.data.manual_dir=/data/coco \
        --config.model.backbone.pretrained=r50_msra.npz

A model detectron2 trained with this recipe converts with `python -m pointrend_jax.convert
MODEL --config configs/coco_implicit_pointrend_r50_fpn.py --workdir OUT`.
"""
import os

from pointrend_jax.config import load_config

POINTREND_1X = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "coco_pointrend_r50_fpn.py")


def get_config(arg: str = ""):
    c = load_config(f"{POINTREND_1X}:{arg}" if arg else POINTREND_1X)  # ValueError on others
    c.model.mask_head = "implicit_pointrend"  # ROI_MASK_HEAD.NAME
    c.model.roi_heads.train_on_pred_boxes = False  # ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES default
    c.pointrend.subdivision_steps = 3  # POINT_HEAD.SUBDIVISION_STEPS: 28 -> 224
    return c
