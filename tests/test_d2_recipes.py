"""detectron2's PointRend (and Implicit PointRend) recipes, key by key, held against the
configs that restate them.

Each recipe is a chain of yaml files (its own, its ``_BASE_``s up to configs/Base-RCNN-FPN.yaml)
over detectron2's defaults (``detectron2/config/defaults.py``, PointRend's
``add_pointrend_config``). Their text is copied below verbatim from facebookresearch/detectron2
(commit 02b5c4e2, projects/PointRend); the tests cannot read detectron2. For every key of every
yaml file (``_BASE_`` is the chain itself), and for the defaults the recipes rely on, a row
gives detectron2's value and where it lives here:

- ``equal``: the config key (or, ``module:attr``, the code constant) holds the same value;
- ``converted``: it holds the same setting in this project's terms (RGB order, a key name,
  a flattened list), the row says how;
- ``differs``: the value cannot be equal here (static shapes, ...), the row says why and
  with what effect, and docs/design.md section 6 names the key;
- ``weights``: ``MODEL.WEIGHTS``, given on the command line as the converted file; the config
  leaves it empty and its docstring names the download;
- ``fixed``: no key here, the code always does what detectron2's value says (the row says where);
- ``unread``: the model here has nothing this key configures (detectron2's does not read it
  for this task either);
- ``absent``: no equivalent here, and why.

A key set again further down the chain is overridden, as detectron2 merges its configs; the
tests check the value that wins.
"""
import ast
import importlib
import os
from typing import Any, NamedTuple

import pytest
import yaml

from pointrend_jax import config as config_lib
from pointrend_jax.data import cityscapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D2_DOWNLOADS = "https://dl.fbaipublicfiles.com/detectron2/"  # what "detectron2://" stands for
KINDS = ("equal", "converted", "differs", "weights", "fixed", "unread", "absent")


class YamlFile(NamedTuple):
    path: str  # in the detectron2 repository
    text: str  # verbatim


class Row(NamedTuple):
    key: str  # detectron2's
    d2: Any  # detectron2's value
    kind: str  # one of KINDS
    ours: str | None  # config key, "module:attr" code constant, or None
    here: Any  # the value ours holds
    why: str


def equal(key, d2, ours, why=""):
    return Row(key, d2, "equal", ours, d2, why)


def converted(key, d2, ours, here, why):
    return Row(key, d2, "converted", ours, here, why)


def differs(key, d2, ours, here, why):
    return Row(key, d2, "differs", ours, here, why)


def weights(key, d2):
    return Row(key, d2, "weights", "model.backbone.pretrained", None,
               "the converted file (python -m pointrend_jax.convert) is given on the command line")


def fixed(key, d2, why):
    return Row(key, d2, "fixed", None, None, why)


def unread(key, d2, why):
    return Row(key, d2, "unread", None, None, why)


def absent(key, d2, why):
    return Row(key, d2, "absent", None, None, why)


# ----------------------------------------------------------------------------------------
# detectron2's yaml files, verbatim
# ----------------------------------------------------------------------------------------

BASE_RCNN_FPN = YamlFile("configs/Base-RCNN-FPN.yaml", """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
  ANCHOR_GENERATOR:
    SIZES: [[32], [64], [128], [256], [512]]  # One size for each in feature map
    ASPECT_RATIOS: [[0.5, 1.0, 2.0]]  # Three aspect ratios (same for all in feature maps)
  RPN:
    IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"]
    PRE_NMS_TOPK_TRAIN: 2000  # Per FPN level
    PRE_NMS_TOPK_TEST: 1000  # Per FPN level
    # Detectron1 uses 2000 proposals per-batch,
    # (See "modeling/rpn/rpn_outputs.py" for details of this legacy issue)
    # which is approximately 1000 proposals per-image since the default batch size for FPN is 2.
    POST_NMS_TOPK_TRAIN: 1000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "StandardROIHeads"
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_FC: 2
    POOLER_RESOLUTION: 7
  ROI_MASK_HEAD:
    NAME: "MaskRCNNConvUpsampleHead"
    NUM_CONV: 4
    POOLER_RESOLUTION: 14
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.02
  STEPS: (60000, 80000)
  MAX_ITER: 90000
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
VERSION: 2
""")

BASE_POINTREND_SEMANTIC_FPN = YamlFile("projects/PointRend/configs/SemanticSegmentation/Base-PointRend-Semantic-FPN.yaml", """\
_BASE_: "../../../../configs/Base-RCNN-FPN.yaml"
MODEL:
  META_ARCHITECTURE: "SemanticSegmentor"
  BACKBONE:
    FREEZE_AT: 0
  SEM_SEG_HEAD:
    NAME: "PointRendSemSegHead"
  POINT_HEAD:
    NUM_CLASSES: 54
    FC_DIM: 256
    NUM_FC: 3
    IN_FEATURES: ["p2"]
    TRAIN_NUM_POINTS: 1024
    SUBDIVISION_STEPS: 2
    SUBDIVISION_NUM_POINTS: 8192
    COARSE_SEM_SEG_HEAD_NAME: "SemSegFPNHead"
    COARSE_PRED_EACH_LAYER: False
DATASETS:
  TRAIN: ("coco_2017_train_panoptic_stuffonly",)
  TEST: ("coco_2017_val_panoptic_stuffonly",)
""")

SEMANTIC_R101_CITYSCAPES = YamlFile("projects/PointRend/configs/SemanticSegmentation/pointrend_semantic_R_101_FPN_1x_cityscapes.yaml", """\
_BASE_: Base-PointRend-Semantic-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-101.pkl
  RESNETS:
    DEPTH: 101
  SEM_SEG_HEAD:
    NUM_CLASSES: 19
  POINT_HEAD:
    NUM_CLASSES: 19
    TRAIN_NUM_POINTS: 2048
    SUBDIVISION_NUM_POINTS: 8192
DATASETS:
  TRAIN: ("cityscapes_fine_sem_seg_train",)
  TEST: ("cityscapes_fine_sem_seg_val",)
SOLVER:
  BASE_LR: 0.01
  STEPS: (40000, 55000)
  MAX_ITER: 65000
  IMS_PER_BATCH: 32
INPUT:
  MIN_SIZE_TRAIN: (512, 768, 1024, 1280, 1536, 1792, 2048)
  MIN_SIZE_TRAIN_SAMPLING: "choice"
  MIN_SIZE_TEST: 1024
  MAX_SIZE_TRAIN: 4096
  MAX_SIZE_TEST: 2048
  CROP:
    ENABLED: True
    TYPE: "absolute"
    SIZE: (512, 1024)
    SINGLE_CATEGORY_MAX_AREA: 0.75
  COLOR_AUG_SSD: True
DATALOADER:
  NUM_WORKERS: 10
""")

BASE_POINTREND_RCNN_FPN = YamlFile("projects/PointRend/configs/InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml", """\
_BASE_: "../../../../configs/Base-RCNN-FPN.yaml"
MODEL:
  MASK_ON: true
  ROI_BOX_HEAD:
    TRAIN_ON_PRED_BOXES: True
  ROI_MASK_HEAD:
    POOLER_TYPE: ""  # No RoI pooling, let the head process image features directly
    NAME: "PointRendMaskHead"
    FC_DIM: 1024
    NUM_FC: 2
    OUTPUT_SIDE_RESOLUTION: 7
    IN_FEATURES: ["p2"]  # for the coarse mask head
    POINT_HEAD_ON: True
  POINT_HEAD:
    FC_DIM: 256
    NUM_FC: 3
    IN_FEATURES: ["p2"]
INPUT:
  # PointRend for instance segmentation does not work with "polygon" mask_format.
  MASK_FORMAT: "bitmask"
""")

RCNN_R50_1X = YamlFile("projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_1x_coco.yaml", """\
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  RESNETS:
    DEPTH: 50
# To add COCO AP evaluation against the higher-quality LVIS annotations.
# DATASETS:
#   TEST: ("coco_2017_val", "lvis_v0.5_val_cocofied")
""")

RCNN_R50_3X = YamlFile("projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_3x_coco.yaml", """\
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  RESNETS:
    DEPTH: 50
SOLVER:
  STEPS: (210000, 250000)
  MAX_ITER: 270000
# To add COCO AP evaluation against the higher-quality LVIS annotations.
# DATASETS:
#   TEST: ("coco_2017_val", "lvis_v0.5_val_cocofied")
""")

RCNN_R101_3X = YamlFile("projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_101_FPN_3x_coco.yaml", """\
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-101.pkl
  MASK_ON: true
  RESNETS:
    DEPTH: 101
SOLVER:
  STEPS: (210000, 250000)
  MAX_ITER: 270000
# To add COCO AP evaluation against the higher-quality LVIS annotations.
# DATASETS:
#   TEST: ("coco_2017_val", "lvis_v0.5_val_cocofied")
""")

RCNN_X101_3X = YamlFile("projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_X_101_32x8d_FPN_3x_coco.yaml", """\
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  MASK_ON: True
  WEIGHTS: "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"
  PIXEL_STD: [57.375, 57.120, 58.395]
  RESNETS:
    STRIDE_IN_1X1: False  # this is a C2 model
    NUM_GROUPS: 32
    WIDTH_PER_GROUP: 8
    DEPTH: 101
SOLVER:
  STEPS: (210000, 250000)
  MAX_ITER: 270000
# To add COCO AP evaluation against the higher-quality LVIS annotations.
# DATASETS:
#   TEST: ("coco_2017_val", "lvis_v0.5_val_cocofied")
""")

RCNN_R50_1X_CITYSCAPES = YamlFile("projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml", """\
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  RESNETS:
    DEPTH: 50
  ROI_HEADS:
    NUM_CLASSES: 8
  POINT_HEAD:
    NUM_CLASSES: 8
DATASETS:
  TEST: ("cityscapes_fine_instance_seg_val",)
  TRAIN: ("cityscapes_fine_instance_seg_train",)
SOLVER:
  BASE_LR: 0.01
  IMS_PER_BATCH: 8
  MAX_ITER: 24000
  STEPS: (18000,)
INPUT:
  MAX_SIZE_TEST: 2048
  MAX_SIZE_TRAIN: 2048
  MIN_SIZE_TEST: 1024
  MIN_SIZE_TRAIN: (800, 832, 864, 896, 928, 960, 992, 1024)
""")

BASE_IMPLICIT_POINTREND = YamlFile("projects/PointRend/configs/InstanceSegmentation/Base-Implicit-PointRend.yaml", """\
_BASE_: "../../../../configs/Base-RCNN-FPN.yaml"
MODEL:
  MASK_ON: true
  ROI_MASK_HEAD:
    NAME: "ImplicitPointRendMaskHead"
    POOLER_TYPE: ""  # No RoI pooling, let the head process image features directly
    FC_DIM: 1024
    NUM_FC: 2
  POINT_HEAD:
    NAME: "ImplicitPointHead"
    FC_DIM: 256
    NUM_FC: 3
    IN_FEATURES: ["p2"]
    NUM_CLASSES: 80
    CLS_AGNOSTIC_MASK: False
    TRAIN_NUM_POINTS: 196
    SUBDIVISION_STEPS: 3
    SUBDIVISION_NUM_POINTS: 784
  IMPLICIT_POINTREND:
    IMAGE_FEATURE_ENABLED: True
    POS_ENC_ENABLED: True
    PARAMS_L2_REGULARIZER: 0.00001
INPUT:
  # PointRend for instance segmentation does not work with "polygon" mask_format.
  MASK_FORMAT: "bitmask"
""")

IMPLICIT_R50_1X = YamlFile("projects/PointRend/configs/InstanceSegmentation/implicit_pointrend_R_50_FPN_1x_coco.yaml", """\
_BASE_: "Base-Implicit-PointRend.yaml"
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  RESNETS:
    DEPTH: 50
# To add COCO AP evaluation against the higher-quality LVIS annotations.
# DATASETS:
#   TEST: ("coco_2017_val", "lvis_v0.5_val_cocofied")
""")

# ----------------------------------------------------------------------------------------
# Rows: the keys of each yaml file, for the task that reads it
# ----------------------------------------------------------------------------------------

NO_ROI = "SemanticSegmentor has no proposals or ROI heads"
SEMANTIC_BASE_RCNN_FPN = [
    converted("MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "task", "instance",
              "Mask R-CNN is the instance task (overridden by the semantic base)"),
    fixed("MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
          "models/pointrend.py: ResNet + FPN under model.head=semantic_fpn"),
    fixed("MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
          "the ResNet returns res2..res5"),
    fixed("MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"], "the FPN reads res2..res5"),
    unread("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]], NO_ROI),
    unread("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]], NO_ROI),
    unread("MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"], NO_ROI),
    unread("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000, NO_ROI),
    unread("MODEL.RPN.PRE_NMS_TOPK_TEST", 1000, NO_ROI),
    unread("MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000, NO_ROI),
    unread("MODEL.RPN.POST_NMS_TOPK_TEST", 1000, NO_ROI),
    unread("MODEL.ROI_HEADS.NAME", "StandardROIHeads", NO_ROI),
    unread("MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"], NO_ROI),
    unread("MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead", NO_ROI),
    unread("MODEL.ROI_BOX_HEAD.NUM_FC", 2, NO_ROI),
    unread("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7, NO_ROI),
    unread("MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead", NO_ROI),
    unread("MODEL.ROI_MASK_HEAD.NUM_CONV", 4, NO_ROI),
    unread("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14, NO_ROI),
    converted("DATASETS.TRAIN", ("coco_2017_train",), "data.name", "coco", "COCO-format json"),
    converted("DATASETS.TEST", ("coco_2017_val",), "data.name", "coco", "COCO-format json"),
    equal("SOLVER.IMS_PER_BATCH", 16, "train.batch_size", "global batch, all devices"),
    equal("SOLVER.BASE_LR", 0.02, "optimizer.learning_rate"),
    converted("SOLVER.STEPS", (60000, 80000), "optimizer.decay_steps", (60000, 80000),
              "with optimizer.schedule=steps"),
    equal("SOLVER.MAX_ITER", 90000, "train.num_steps"),
    converted("INPUT.MIN_SIZE_TRAIN", (640, 672, 704, 736, 768, 800), "augment.short_side",
              (640, 672, 704, 736, 768, 800), "ResizeShortestEdge's lengths"),
    absent("VERSION", 2, "detectron2's config format version"),
]

SEMANTIC_BASE = [
    converted("MODEL.META_ARCHITECTURE", "SemanticSegmentor", "task", "semantic",
              "the semantic task (PointRendSegmenter)"),
    equal("MODEL.BACKBONE.FREEZE_AT", 0, "model.backbone.freeze_at", "nothing frozen"),
    converted("MODEL.SEM_SEG_HEAD.NAME", "PointRendSemSegHead", "pointrend.enabled", True,
              "the coarse head wrapped in PointRend"),
    fixed("MODEL.POINT_HEAD.NUM_CLASSES", 54, "the class count is the data set's (54: COCO stuff)"),
    equal("MODEL.POINT_HEAD.FC_DIM", 256, "pointrend.fc_dim"),
    equal("MODEL.POINT_HEAD.NUM_FC", 3, "pointrend.num_fc"),
    converted("MODEL.POINT_HEAD.IN_FEATURES", ["p2"], "pointrend.fine_features", ("p2",), "a tuple"),
    equal("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 1024, "pointrend.train_num_points"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_STEPS", 2, "pointrend.subdivision_steps"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 8192, "pointrend.subdivision_num_points"),
    converted("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHead", "model.head",
              "semantic_fpn", "models/semantic_fpn.py: detectron2's SemSegFPNHead"),
    equal("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", False, "pointrend.coarse_pred_each_layer",
          "the coarse logits enter the point head's first layer only"),
    absent("DATASETS.TRAIN", ("coco_2017_train_panoptic_stuffonly",),
           "COCO stuff is no data set here (the Cityscapes recipe overrides it)"),
    absent("DATASETS.TEST", ("coco_2017_val_panoptic_stuffonly",),
           "COCO stuff is no data set here (the Cityscapes recipe overrides it)"),
]

SEMANTIC_CITYSCAPES = [
    weights("MODEL.WEIGHTS", "detectron2://ImageNetPretrained/MSRA/R-101.pkl"),
    equal("MODEL.RESNETS.DEPTH", 101, "model.backbone.depth"),
    converted("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 19, "data.name", "cityscapes",
              "cityscapes.CLASS_NAMES: the 19 train ids, everything else ignored (255)"),
    converted("MODEL.POINT_HEAD.NUM_CLASSES", 19, "data.name", "cityscapes",
              "the point head predicts the data set's classes"),
    equal("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 2048, "pointrend.train_num_points"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 8192, "pointrend.subdivision_num_points"),
    converted("DATASETS.TRAIN", ("cityscapes_fine_sem_seg_train",), "data.variant", "fine",
              "data.name=cityscapes, gtFine, the train split"),
    converted("DATASETS.TEST", ("cityscapes_fine_sem_seg_val",), "data.variant", "fine",
              "eval.py evaluates the val split of the same data set"),
    equal("SOLVER.BASE_LR", 0.01, "optimizer.learning_rate"),
    converted("SOLVER.STEPS", (40000, 55000), "optimizer.decay_steps", (40000, 55000),
              "with optimizer.schedule=steps"),
    equal("SOLVER.MAX_ITER", 65000, "train.num_steps"),
    equal("SOLVER.IMS_PER_BATCH", 32, "train.batch_size", "global batch, all devices"),
    converted("INPUT.MIN_SIZE_TRAIN", (512, 768, 1024, 1280, 1536, 1792, 2048),
              "augment.short_side", (512, 768, 1024, 1280, 1536, 1792, 2048),
              "ResizeShortestEdge's lengths"),
    fixed("INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
          "augment.short_side is always drawn uniformly from the list"),
    fixed("INPUT.MIN_SIZE_TEST", 1024,
          "eval runs at each image's size; ResizeShortestEdge(1024, max 2048) is the identity "
          "on Cityscapes' 1024x2048 images"),
    equal("INPUT.MAX_SIZE_TRAIN", 4096, "augment.max_size"),
    fixed("INPUT.MAX_SIZE_TEST", 2048, "see INPUT.MIN_SIZE_TEST: no resize at test time"),
    fixed("INPUT.CROP.ENABLED", True, "training always crops to augment.crop_size"),
    fixed("INPUT.CROP.TYPE", "absolute", "augment.crop_size is in pixels"),
    converted("INPUT.CROP.SIZE", (512, 1024), "augment.crop_size", (512, 1024), "(h, w)"),
    equal("INPUT.CROP.SINGLE_CATEGORY_MAX_AREA", 0.75, "augment.max_class_ratio"),
    equal("INPUT.COLOR_AUG_SSD", True, "augment.color_aug_ssd"),
    absent("DATALOADER.NUM_WORKERS", 10,
           "the grain pipeline decodes in the training process; give it several cores"),
]

# Defaults both tasks' recipes leave as detectron2 sets them
COMMON_DEFAULTS = [
    converted("MODEL.PIXEL_MEAN", [103.530, 116.280, 123.675], "model.pixel_mean",
              (123.675, 116.28, 103.53), "RGB order: the converted weights take RGB"),
    equal("MODEL.PIXEL_STD", [1.0, 1.0, 1.0], "model.pixel_std"),
    absent("INPUT.FORMAT", "BGR",
           "weights are converted to RGB (conv1's input channels reversed), images stay RGB"),
    converted("INPUT.RANDOM_FLIP", "horizontal", "augment.flip", True, "horizontal, p = 0.5"),
    equal("MODEL.BACKBONE.FREEZE_AT", 2, "model.backbone.freeze_at", "stem and res2 fixed"),
    converted("MODEL.RESNETS.NORM", "FrozenBN", "model.backbone.norm", "frozen_bn", "a name"),
    equal("MODEL.RESNETS.STRIDE_IN_1X1", True, "model.backbone.stride_in_1x1", "MSRA weights"),
    equal("MODEL.RESNETS.NUM_GROUPS", 1, "model.backbone.num_groups"),
    equal("MODEL.RESNETS.WIDTH_PER_GROUP", 64, "model.backbone.width_per_group"),
    equal("MODEL.RESNETS.STEM_OUT_CHANNELS", 64, "model.backbone.width"),
    converted("MODEL.RESNETS.RES2_OUT_CHANNELS", 256, "model.backbone.width", 64,
              "res2 has 4 x width channels"),
    fixed("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, False, False, False],
          "no deformable convolutions"),
    equal("MODEL.FPN.OUT_CHANNELS", 256, "model.fpn_channels"),
    equal("MODEL.FPN.NORM", "", "pointrend_jax.models.fpn:FPN.norm", "convs with bias"),
    fixed("MODEL.FPN.FUSE_TYPE", "sum", "models/fpn.py adds the top-down and lateral maps"),
    converted("MODEL.POINT_HEAD.NAME", "StandardPointHead", "pointrend.activation", "relu",
              "point_head.PointHead: StandardPointHead's ReLU MLP"),
    equal("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 3, "pointrend.oversample_ratio"),
    equal("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 0.75, "pointrend.importance_sample_ratio"),
    equal("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 14 * 14, "pointrend.train_num_points"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_STEPS", 5, "pointrend.subdivision_steps"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 28 * 28, "pointrend.subdivision_num_points"),
    equal("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", True, "pointrend.coarse_pred_each_layer"),
    converted("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "optimizer.schedule", "steps",
              "train/optimizer.py: linear warm-up times the step decay"),
    equal("SOLVER.MOMENTUM", 0.9, "optimizer.momentum"),
    equal("SOLVER.NESTEROV", False, "optimizer.nesterov"),
    equal("SOLVER.WEIGHT_DECAY", 0.0001, "optimizer.weight_decay"),
    fixed("SOLVER.WEIGHT_DECAY_NORM", 0.0, "norm scales and biases are never decayed"),
    converted("SOLVER.WEIGHT_DECAY_BIAS", None, "optimizer.weight_decay_bias", 1e-4,
              "None means WEIGHT_DECAY: the conv and dense biases decay like the kernels"),
    fixed("SOLVER.BIAS_LR_FACTOR", 1.0, "one learning rate for every parameter"),
    equal("SOLVER.GAMMA", 0.1, "optimizer.decay_factor"),
    equal("SOLVER.WARMUP_FACTOR", 1.0 / 1000, "optimizer.warmup_factor"),
    equal("SOLVER.WARMUP_ITERS", 1000, "optimizer.warmup_steps"),
    fixed("SOLVER.WARMUP_METHOD", "linear", "train/optimizer.py: linear warm-up"),
    equal("SOLVER.CHECKPOINT_PERIOD", 5000, "train.checkpoint_every"),
    converted("SOLVER.CLIP_GRADIENTS.ENABLED", False, "optimizer.clip_grad_norm", None,
              "None: no clipping"),
    converted("SOLVER.AMP.ENABLED", False, "model.dtype", "float32", "fp32 compute"),
    equal("SOLVER.BASE_LR", 0.001, "optimizer.learning_rate", "overridden in every recipe"),
    equal("SOLVER.MAX_ITER", 40000, "train.num_steps", "overridden in every recipe"),
    equal("SOLVER.IMS_PER_BATCH", 16, "train.batch_size", "overridden in every recipe"),
    equal("SOLVER.STEPS", (30000,), "optimizer.decay_steps", "overridden in every recipe"),
    fixed("TEST.EVAL_PERIOD", 0, "eval.py evaluates after training, not during it"),
    fixed("TEST.AUG.ENABLED", False, "no test-time augmentation"),
    differs("SEED", -1, "seed", 0,
            "detectron2 draws a seed per run; here seed 0 makes a run repeat exactly. Effect: "
            "one fixed draw of the same random choices, none on what the recipe reaches"),
    equal("INPUT.MIN_SIZE_TRAIN", (800,), "augment.short_side", "overridden in every recipe"),
    absent("DATALOADER.NUM_WORKERS", 4,
           "the grain pipeline decodes in the training process; give it several cores"),
    fixed("DATALOADER.SAMPLER_TRAIN", "TrainingSampler",
          "data/pipeline.py: the shuffled, endlessly repeated train set"),
]

SEMANTIC_DEFAULTS = [
    converted("MODEL.RESNETS.RES5_DILATION", 1, "model.backbone.output_stride", 32, "undilated"),
    converted("MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p2", "p3", "p4", "p5"],
              "pointrend_jax.models.semantic_fpn:SemanticFPNHead.in_strides",
              {"p2": 4, "p3": 8, "p4": 16, "p5": 32}, "with their strides"),
    equal("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255, "pointrend_jax.semantic.losses:IGNORE_LABEL"),
    fixed("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 54, "the class count is the data set's"),
    equal("MODEL.SEM_SEG_HEAD.CONVS_DIM", 128, "model.head_channels"),
    equal("MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4,
          "pointrend_jax.models.semantic_fpn:SemanticFPNHead.common_stride"),
    converted("MODEL.SEM_SEG_HEAD.NORM", "GN", "model.head_norm", "gn", "32 groups"),
    equal("MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", 1.0, "loss.pixel_weight"),
    unread("MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", False, "the semantic point head predicts K classes"),
    fixed("DATALOADER.ASPECT_RATIO_GROUPING", True,
          "every training crop is 512x1024: no batch mixes aspect ratios"),
]

# ---------------------------------------------------------------- instance segmentation
INSTANCE_BASE_RCNN_FPN = [
    converted("MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "task", "instance",
              "models/mask_rcnn.py: MaskRCNN"),
    fixed("MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
          "models/mask_rcnn.py: ResNetFPN, p6 = p5 subsampled (LastLevelMaxPool)"),
    fixed("MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
          "the ResNet returns res2..res5"),
    fixed("MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"], "the FPN reads res2..res5"),
    converted("MODEL.ANCHOR_GENERATOR.SIZES", [[32], [64], [128], [256], [512]],
              "model.rpn.anchor_sizes", (32, 64, 128, 256, 512), "one size per level p2..p6"),
    converted("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[0.5, 1.0, 2.0]], "model.rpn.aspect_ratios",
              (0.5, 1.0, 2.0), "the same for every level"),
    converted("MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
              "pointrend_jax.models.mask_rcnn:RPN_LEVELS", (2, 3, 4, 5, 6), "level numbers"),
    equal("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000, "model.rpn.pre_nms_topk_train", "per level"),
    equal("MODEL.RPN.PRE_NMS_TOPK_TEST", 1000, "model.rpn.pre_nms_topk_test", "per level"),
    equal("MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000, "model.rpn.post_nms_topk_train", "per image"),
    equal("MODEL.RPN.POST_NMS_TOPK_TEST", 1000, "model.rpn.post_nms_topk_test", "per image"),
    fixed("MODEL.ROI_HEADS.NAME", "StandardROIHeads", "models/mask_rcnn.py: MaskRCNN's heads"),
    converted("MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
              "pointrend_jax.models.mask_rcnn:ROI_LEVELS", (2, 3, 4, 5), "level numbers"),
    fixed("MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead", "models/mask_rcnn.py: FastRCNNHead"),
    equal("MODEL.ROI_BOX_HEAD.NUM_FC", 2, "model.roi_heads.box_num_fc"),
    equal("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 7, "model.roi_heads.box_pooler_side"),
    converted("MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead", "model.mask_head", "maskrcnn",
              "the 28x28 head (overridden by the PointRend base)"),
    equal("MODEL.ROI_MASK_HEAD.NUM_CONV", 4,
          "pointrend_jax.models.mask_head:MaskRCNNConvHead.num_conv",
          "the 28x28 head's convs; PointRend's coarse head has none"),
    equal("MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 14, "model.roi_heads.coarse_mask_pooler_side",
          "PointRend's coarse head reads a 14x14 grid; the 28x28 head's is "
          "model.roi_heads.mask_pooler_side, also 14"),
    converted("DATASETS.TRAIN", ("coco_2017_train",), "data.name", "coco",
              "data.manual_dir: train2017/ and annotations/instances_train2017.json"),
    converted("DATASETS.TEST", ("coco_2017_val",), "data.name", "coco",
              "data.manual_dir: val2017/ and annotations/instances_val2017.json"),
    equal("SOLVER.IMS_PER_BATCH", 16, "train.batch_size", "global batch, all devices"),
    equal("SOLVER.BASE_LR", 0.02, "optimizer.learning_rate"),
    converted("SOLVER.STEPS", (60000, 80000), "optimizer.decay_steps", (60000, 80000),
              "with optimizer.schedule=steps"),
    equal("SOLVER.MAX_ITER", 90000, "train.num_steps"),
    converted("INPUT.MIN_SIZE_TRAIN", (640, 672, 704, 736, 768, 800), "augment.short_side",
              (640, 672, 704, 736, 768, 800), "ResizeShortestEdge's lengths"),
    absent("VERSION", 2, "detectron2's config format version"),
]

INSTANCE_POINTREND_BASE = [
    fixed("MODEL.MASK_ON", True, "the instance model always has a mask head"),
    equal("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True, "model.roi_heads.train_on_pred_boxes"),
    fixed("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "",
          "PointRend's coarse head samples a regular grid on p2 with point_sample "
          "(PointRendMaskHead.coarse_logits), detectron2's _roi_pooler"),
    converted("MODEL.ROI_MASK_HEAD.NAME", "PointRendMaskHead", "model.mask_head", "pointrend",
              "models/mask_head.py: PointRendMaskHead"),
    equal("MODEL.ROI_MASK_HEAD.FC_DIM", 1024, "model.roi_heads.coarse_mask_fc_dim"),
    equal("MODEL.ROI_MASK_HEAD.NUM_FC", 2, "model.roi_heads.coarse_mask_num_fc"),
    equal("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", 7, "model.roi_heads.coarse_mask_side"),
    converted("MODEL.ROI_MASK_HEAD.IN_FEATURES", ["p2"], "model.roi_heads.coarse_mask_features",
              ("p2",), "a tuple"),
    fixed("MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", True, "PointRendMaskHead always has its point head"),
    equal("MODEL.POINT_HEAD.FC_DIM", 256, "pointrend.fc_dim"),
    equal("MODEL.POINT_HEAD.NUM_FC", 3, "pointrend.num_fc"),
    converted("MODEL.POINT_HEAD.IN_FEATURES", ["p2"], "pointrend.fine_features", ("p2",), "a tuple"),
    fixed("INPUT.MASK_FORMAT", "bitmask",
          "ground-truth masks are bitmasks (mask_bits), point labels bilinear on them"),
]

INSTANCE_R50_1X = [
    weights("MODEL.WEIGHTS", "detectron2://ImageNetPretrained/MSRA/R-50.pkl"),
    equal("MODEL.RESNETS.DEPTH", 50, "model.backbone.depth"),
]

CITYSCAPES_CLASSES = "cityscapes_instances.CLASS_NAMES: the 8 thing classes in label-id order"
INSTANCE_R50_1X_CITYSCAPES = INSTANCE_R50_1X + [
    converted("MODEL.ROI_HEADS.NUM_CLASSES", 8, "data.name", "cityscapes_instances", CITYSCAPES_CLASSES),
    converted("MODEL.POINT_HEAD.NUM_CLASSES", 8, "data.name", "cityscapes_instances",
              "the point head predicts the data set's classes"),
    converted("DATASETS.TEST", ("cityscapes_fine_instance_seg_val",), "data.name",
              "cityscapes_instances", "data.manual_dir: leftImg8bit/val and the gtFine/val "
              "instanceIds PNGs, which cityscapesscripts' evaluation also reads"),
    differs("DATASETS.TRAIN", ("cityscapes_fine_instance_seg_train",), "data.name",
            "cityscapes_instances", "the masks are the gtFine instanceIds PNGs (cityscapesScripts' "
            "rasterisation of the polygons) where detectron2 reads the polygons json and dilates "
            "each polygon by half a pixel. Effect: training masks about half a pixel thinner along "
            "every edge than detectron2's, equal to what the evaluation scores against"),
    equal("SOLVER.BASE_LR", 0.01, "optimizer.learning_rate"),
    equal("SOLVER.IMS_PER_BATCH", 8, "train.batch_size", "global batch, all devices"),
    equal("SOLVER.MAX_ITER", 24000, "train.num_steps"),
    converted("SOLVER.STEPS", (18000,), "optimizer.decay_steps", (18000,),
              "with optimizer.schedule=steps"),
    equal("INPUT.MAX_SIZE_TEST", 2048, "augment.max_size",
          "one key caps both resizes; the recipe's two values are equal"),
    equal("INPUT.MAX_SIZE_TRAIN", 2048, "augment.max_size"),
    equal("INPUT.MIN_SIZE_TEST", 1024, "augment.test_short_side"),
    converted("INPUT.MIN_SIZE_TRAIN", (800, 832, 864, 896, 928, 960, 992, 1024), "augment.short_side",
              (800, 832, 864, 896, 928, 960, 992, 1024), "ResizeShortestEdge's lengths"),
]

SCHEDULE_3X = [
    converted("SOLVER.STEPS", (210000, 250000), "optimizer.decay_steps", (210000, 250000),
              "with optimizer.schedule=steps"),
    equal("SOLVER.MAX_ITER", 270000, "train.num_steps"),
]

INSTANCE_R50_3X = INSTANCE_R50_1X + SCHEDULE_3X

INSTANCE_R101_3X = [
    weights("MODEL.WEIGHTS", "detectron2://ImageNetPretrained/MSRA/R-101.pkl"),
    fixed("MODEL.MASK_ON", True, "the instance model always has a mask head"),
    equal("MODEL.RESNETS.DEPTH", 101, "model.backbone.depth"),
] + SCHEDULE_3X

INSTANCE_X101_3X = [
    fixed("MODEL.MASK_ON", True, "the instance model always has a mask head"),
    weights("MODEL.WEIGHTS", "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"),
    converted("MODEL.PIXEL_STD", [57.375, 57.120, 58.395], "model.pixel_std",
              (58.395, 57.12, 57.375), "RGB order (backbones.DETECTRON2_FAIR_PIXEL_STD)"),
    equal("MODEL.RESNETS.STRIDE_IN_1X1", False, "model.backbone.stride_in_1x1",
          "FAIR's caffe2 weights: stride in the 3x3"),
    equal("MODEL.RESNETS.NUM_GROUPS", 32, "model.backbone.num_groups"),
    equal("MODEL.RESNETS.WIDTH_PER_GROUP", 8, "model.backbone.width_per_group"),
    equal("MODEL.RESNETS.DEPTH", 101, "model.backbone.depth"),
] + SCHEDULE_3X

STATIC = "static shapes"
INSTANCE_DEFAULTS = [
    fixed("INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
          "augment.short_side is always drawn uniformly from the list"),
    equal("INPUT.MAX_SIZE_TRAIN", 1333, "augment.max_size"),
    equal("INPUT.MIN_SIZE_TEST", 800, "augment.test_short_side"),
    equal("INPUT.MAX_SIZE_TEST", 1333, "augment.max_size",
          "one key caps both resizes; detectron2's two values are equal"),
    fixed("MODEL.RESNETS.RES5_DILATION", 1, "ResNetFPN's backbone is never dilated"),
    fixed("MODEL.ANCHOR_GENERATOR.OFFSET", 0.0, "box_ops.anchors_for_level's default offset"),
    fixed("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", 0, "only empty proposals are dropped"),
    fixed("MODEL.RPN.BOUNDARY_THRESH", -1, "no anchor is pruned"),
    converted("MODEL.RPN.IOU_THRESHOLDS", [0.3, 0.7], "model.rpn.iou_thresholds", (0.3, 0.7),
              "a tuple"),
    fixed("MODEL.RPN.IOU_LABELS", [0, -1, 1], "negative, ignored, positive"),
    equal("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 256, "model.rpn.batch_size_per_image"),
    equal("MODEL.RPN.POSITIVE_FRACTION", 0.5, "model.rpn.positive_fraction"),
    equal("MODEL.RPN.NMS_THRESH", 0.7, "model.rpn.nms_thresh"),
    fixed("MODEL.RPN.BBOX_REG_LOSS_TYPE", "smooth_l1", "with SMOOTH_L1_BETA 0: plain L1"),
    fixed("MODEL.RPN.SMOOTH_L1_BETA", 0.0, "mask_rcnn._l1: plain L1"),
    fixed("MODEL.RPN.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0, 1.0), "box_ops.encode_boxes' default"),
    fixed("MODEL.RPN.LOSS_WEIGHT", 1.0, "the RPN losses enter the total with weight 1"),
    fixed("MODEL.RPN.BBOX_REG_LOSS_WEIGHT", 1.0, "the RPN losses enter the total with weight 1"),
    fixed("MODEL.RPN.CONV_DIMS", [-1], "the RPN conv keeps the FPN's channels"),
    equal("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 12000, "model.rpn.pre_nms_topk_train",
          "overridden by Base-RCNN-FPN.yaml"),
    equal("MODEL.RPN.PRE_NMS_TOPK_TEST", 6000, "model.rpn.pre_nms_topk_test",
          "overridden by Base-RCNN-FPN.yaml"),
    equal("MODEL.RPN.POST_NMS_TOPK_TRAIN", 2000, "model.rpn.post_nms_topk_train",
          "overridden by Base-RCNN-FPN.yaml"),
    converted("MODEL.ROI_HEADS.NUM_CLASSES", 80, "data.name", "coco",
              "the json's categories: COCO 2017's 80"),
    converted("MODEL.POINT_HEAD.NUM_CLASSES", 80, "data.name", "coco",
              "the point head predicts the json's categories"),
    converted("MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.5], "model.roi_heads.iou_threshold", 0.5,
              "one threshold"),
    fixed("MODEL.ROI_HEADS.IOU_LABELS", [0, 1], "background, foreground"),
    equal("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512, "model.roi_heads.batch_size_per_image"),
    equal("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25, "model.roi_heads.positive_fraction"),
    equal("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05, "model.roi_heads.score_thresh_test"),
    equal("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.5, "model.roi_heads.nms_thresh_test"),
    fixed("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", True,
          "the ground-truth boxes join the proposals (MaskRCNN._sample_regions)"),
    equal("MODEL.ROI_BOX_HEAD.FC_DIM", 1024, "model.roi_heads.box_fc_dim"),
    fixed("MODEL.ROI_BOX_HEAD.NUM_CONV", 0, "FastRCNNHead has FC layers only"),
    converted("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0),
              "pointrend_jax.models.mask_rcnn:BOX_WEIGHTS", (10.0, 10.0, 5.0, 5.0), "a constant"),
    fixed("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "smooth_l1", "with SMOOTH_L1_BETA 0: plain L1"),
    fixed("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.0, "mask_rcnn._l1: plain L1"),
    fixed("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT", 1.0, "loss_box_reg enters with weight 1"),
    fixed("MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", False, "K class-specific box deltas"),
    fixed("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2",
          "box_ops.multilevel_roi_align: aligned ROIAlign, levels by box size"),
    equal("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", 0, "model.roi_heads.sampling_ratio",
          f"adaptive: ceil(bin side) samples per bin side; {STATIC} give every region "
          "model.roi_heads.max_sampling_ratio (8) slots, exact for regions up to 4:1 on their "
          "FPN level (benchmarks/roi_align.py)"),
    fixed("MODEL.ROI_BOX_HEAD.NORM", "", "FastRCNNHead has no norm"),
    fixed("MODEL.ROI_BOX_HEAD.USE_FED_LOSS", False, "softmax cross-entropy over K + 1"),
    fixed("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", False, "softmax cross-entropy over K + 1"),
    equal("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", False, "model.roi_heads.train_on_pred_boxes",
          "overridden by the PointRend base"),
    equal("MODEL.ROI_MASK_HEAD.CONV_DIM", 256, "model.roi_heads.mask_conv_dim"),
    fixed("MODEL.ROI_MASK_HEAD.NORM", "", "the mask heads have no norm"),
    equal("MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", False, "model.roi_heads.cls_agnostic_mask"),
    equal("MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 0, "model.roi_heads.sampling_ratio",
          "read by the 28x28 A/B head's ROIAlign and by both heads' mask targets "
          "(detectron2's BitMasks.crop_and_resize: ceil(box side / target side) samples, 15 for "
          "a 100 px box and the 7x7 coarse target; here at most max_sampling_ratio, 8, so the "
          "targets of boxes over 56 px average 8x8 samples per cell instead of all). "
          "PointRend's coarse head pools a point grid (POOLER_TYPE '')"),
    unread("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME", "SemSegFPNHead", "semantic only"),
    equal("MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", False, "model.roi_heads.cls_agnostic_mask",
          "one key for both: the point head predicts one channel, the coarse head keeps K "
          "(detectron2's ConvFCHead ignores the option too)"),
    equal("TEST.DETECTIONS_PER_IMAGE", 100, "model.roi_heads.detections_per_image"),
    equal("DATALOADER.FILTER_EMPTY_ANNOTATIONS", True, "data.filter_empty_annotations",
          "train images without a non-crowd instance are left out (data/coco.py)"),
    differs("DATALOADER.ASPECT_RATIO_GROUPING", True, "augment.crop_size", (1344, 1344),
            f"{STATIC}: detectron2 pads each batch to its largest image (rounded up to 32), "
            "grouping landscape and portrait images; here every image is padded to the fixed "
            "1344x1344 canvas. Effect: more anchors lie in the padding, where some of the RPN's "
            "sampled negatives then fall; the content's features near its bottom/right edge "
            "are those of a batch padded that far"),
]

# The Cityscapes recipe's canvas: every 2:1 image resized to a short side <= 1024 fits 1024x2048.
CITYSCAPES_INSTANCE_DEFAULTS = [
    differs("DATALOADER.ASPECT_RATIO_GROUPING", True, "augment.crop_size", (1024, 2048),
            f"{STATIC}: detectron2 pads each batch to its largest image (rounded up to 32); here "
            "every image is padded to the fixed 1024x2048 canvas. Effect: a batch whose images "
            "were all resized below 1024 carries padding detectron2's would not"),
]

IMPLICIT = "models/implicit_mask_head.py"
IMPLICIT_POINTREND_BASE = [
    fixed("MODEL.MASK_ON", True, "the instance model always has a mask head"),
    converted("MODEL.ROI_MASK_HEAD.NAME", "ImplicitPointRendMaskHead", "model.mask_head",
              "implicit_pointrend", f"{IMPLICIT}: ImplicitPointRendMaskHead"),
    fixed("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "",
          "the parameter head samples a regular grid on p2 with point_sample "
          "(ImplicitPointRendMaskHead.mlp_params), detectron2's _roi_pooler"),
    equal("MODEL.ROI_MASK_HEAD.FC_DIM", 1024, "model.roi_heads.coarse_mask_fc_dim",
          "the parameter head's FC width"),
    equal("MODEL.ROI_MASK_HEAD.NUM_FC", 2, "model.roi_heads.coarse_mask_num_fc",
          "the parameter head's FC layers"),
    converted("MODEL.POINT_HEAD.NAME", "ImplicitPointHead", "model.mask_head", "implicit_pointrend",
              f"{IMPLICIT}: ImplicitPointHead, the per-region MLP of the implicit head"),
    equal("MODEL.POINT_HEAD.FC_DIM", 256, "pointrend.fc_dim", "the MLP's width"),
    equal("MODEL.POINT_HEAD.NUM_FC", 3, "pointrend.num_fc",
          "hidden layers: NUM_FC + 1 layers with the predictor"),
    converted("MODEL.POINT_HEAD.IN_FEATURES", ["p2"], "pointrend.fine_features", ("p2",), "a tuple"),
    converted("MODEL.POINT_HEAD.NUM_CLASSES", 80, "data.name", "coco",
              "the MLP predicts the json's categories"),
    equal("MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", False, "model.roi_heads.cls_agnostic_mask",
          "one key for every mask head: the MLP predicts one channel"),
    equal("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 196, "pointrend.train_num_points",
          "drawn uniformly in each box"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_STEPS", 3, "pointrend.subdivision_steps", "28 -> 224"),
    equal("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", 784, "pointrend.subdivision_num_points",
          "also the first, regular grid: 28x28"),
    equal("MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED", True,
          "model.implicit_pointrend.image_feature_enabled"),
    equal("MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED", True,
          "model.implicit_pointrend.pos_enc_enabled"),
    equal("MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER", 0.00001,
          "model.implicit_pointrend.params_l2_regularizer", "loss_l2's weight"),
    fixed("INPUT.MASK_FORMAT", "bitmask",
          "ground-truth masks are bitmasks (mask_bits), point labels bilinear on them"),
]

# The defaults the implicit recipe relies on where they mean something else than for PointRend.
UNIFORM = "the implicit head draws its training points uniformly"
IMPLICIT_DEFAULTS = [
    equal("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", False, "model.roi_heads.train_on_pred_boxes",
          "Base-Implicit-PointRend.yaml keeps it: the mask head learns on the sampled proposals"),
    converted("MODEL.ROI_MASK_HEAD.IN_FEATURES", ("p2",), "model.roi_heads.coarse_mask_features",
              ("p2",), "add_pointrend_config's default, the parameter head's input"),
    unread("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", 7,
           "ImplicitPointRendMaskHead gives its ConvFCHead the output shape (num_params,)"),
    unread("MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", False,
           "ImplicitPointRendMaskHead always has its point head"),
    unread("MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", 0,
           "the parameter head pools a point grid (POOLER_TYPE '') and the point labels are "
           "bilinear on the full masks: no ROIAlign, no mask targets"),
    unread("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 3, UNIFORM),
    unread("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 0.75, UNIFORM),
    unread("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", True, "the implicit head has no coarse mask"),
]

# What detectron2 does without a key for it, and the static-shape cap or rule used here.
STATIC_SHAPE_CHOICES = [
    Row("fast_rcnn_inference", "every (box, class) above SCORE_THRESH_TEST enters the NMS",
        "differs", "model.roi_heads.test_topk_candidates", 2000,
        "at most 2000 (box, class) pairs by score enter the NMS. Effect: none while fewer than "
        "2000 pairs pass 0.05 (1000 proposals x 80 classes could exceed it)"),
    Row("allow_low_quality_matches", "a ground truth's best anchors are positive, even at IoU 0",
        "differs", None, None,
        "a ground-truth box that overlaps no anchor at all gets no low-quality match (detectron2 "
        "marks every anchor of IoU 0 positive for it). Effect: only such boxes, none at COCO "
        "scales"),
]

# A recipe: the config here, then its chain from the lowest priority (defaults) to its yaml.
DEFAULTS_PY = "detectron2/config/defaults.py + projects/PointRend/point_rend/config.py"
RECIPES = {
    "cityscapes_semfpn_r101": [
        (DEFAULTS_PY, None, COMMON_DEFAULTS + SEMANTIC_DEFAULTS),
        (BASE_RCNN_FPN.path, BASE_RCNN_FPN, SEMANTIC_BASE_RCNN_FPN),
        (BASE_POINTREND_SEMANTIC_FPN.path, BASE_POINTREND_SEMANTIC_FPN, SEMANTIC_BASE),
        (SEMANTIC_R101_CITYSCAPES.path, SEMANTIC_R101_CITYSCAPES, SEMANTIC_CITYSCAPES),
    ],
}
RECIPES["cityscapes_pointrend_r50_fpn"] = [
    (DEFAULTS_PY, None, COMMON_DEFAULTS + INSTANCE_DEFAULTS + CITYSCAPES_INSTANCE_DEFAULTS),
    (BASE_RCNN_FPN.path, BASE_RCNN_FPN, INSTANCE_BASE_RCNN_FPN),
    (BASE_POINTREND_RCNN_FPN.path, BASE_POINTREND_RCNN_FPN, INSTANCE_POINTREND_BASE),
    (RCNN_R50_1X_CITYSCAPES.path, RCNN_R50_1X_CITYSCAPES, INSTANCE_R50_1X_CITYSCAPES),
]
for name, leaf, rows in (("coco_pointrend_r50_fpn", RCNN_R50_1X, INSTANCE_R50_1X),
                         ("coco_pointrend_r50_fpn_3x", RCNN_R50_3X, INSTANCE_R50_3X),
                         ("coco_pointrend_r101_fpn_3x", RCNN_R101_3X, INSTANCE_R101_3X),
                         ("coco_pointrend_x101_32x8d_fpn_3x", RCNN_X101_3X, INSTANCE_X101_3X)):
    RECIPES[name] = [
        (DEFAULTS_PY, None, COMMON_DEFAULTS + INSTANCE_DEFAULTS),
        (BASE_RCNN_FPN.path, BASE_RCNN_FPN, INSTANCE_BASE_RCNN_FPN),
        (BASE_POINTREND_RCNN_FPN.path, BASE_POINTREND_RCNN_FPN, INSTANCE_POINTREND_BASE),
        (leaf.path, leaf, rows),
    ]

RECIPES["coco_implicit_pointrend_r50_fpn"] = [
    (DEFAULTS_PY, None, COMMON_DEFAULTS + INSTANCE_DEFAULTS + IMPLICIT_DEFAULTS),
    (BASE_RCNN_FPN.path, BASE_RCNN_FPN, INSTANCE_BASE_RCNN_FPN),
    (BASE_IMPLICIT_POINTREND.path, BASE_IMPLICIT_POINTREND, IMPLICIT_POINTREND_BASE),
    (IMPLICIT_R50_1X.path, IMPLICIT_R50_1X, INSTANCE_R50_1X),
]

# ----------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------


def _yacs_value(value):
    """A yaml value as detectron2's CfgNode reads it: strings that are Python literals (the
    "(512, 1024)" tuples) become those literals."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _flat_yaml(text):
    """``{"MODEL.RESNETS.DEPTH": 101, ...}`` of a yaml text, ``_BASE_`` left out."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = _yacs_value(value)

    walk({k: v for k, v in yaml.safe_load(text).items() if k != "_BASE_"}, "")
    return out


def _norm(value):
    """Lists and tuples compare alike; dicts by items."""
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def _load(name):
    return config_lib.load_config(os.path.join(ROOT, "configs", f"{name}.py"))


def _value_here(config, ours):
    """The value of a config key ("a.b.c") or of a code constant ("module:attr.attr")."""
    if ":" in ours:
        module, attr = ours.split(":")
        value = importlib.import_module(module)
        for part in attr.split("."):
            value = getattr(value, part)
        return value
    value = config
    for part in ours.split("."):
        assert part in value, f"the config has no key {ours!r}"
        value = value[part]
    return value


def _effective(chain):
    """``{key: (source, row)}`` after detectron2's merge: later files override earlier ones."""
    merged = {}
    for source, _, rows in chain:
        for row in rows:
            merged[row.key] = (source, row)
    return merged


YAML_FILES = {(name, source): (yaml_file, rows) for name, chain in RECIPES.items()
              for source, yaml_file, rows in chain if yaml_file is not None}


@pytest.mark.parametrize("name,source", YAML_FILES)
def test_the_table_lists_every_key_of_the_yaml_file_with_its_value(name, source):
    yaml_file, rows = YAML_FILES[(name, source)]
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys)), f"{source}: a key listed twice"
    values = _flat_yaml(yaml_file.text)
    assert sorted(keys) == sorted(values), f"{source}: the table and the yaml file differ"
    for row in rows:
        assert _norm(row.d2) == _norm(values[row.key]), f"{source} {row.key}"


@pytest.mark.parametrize("name", RECIPES)
def test_the_config_holds_detectron2s_recipe(name):
    config = _load(name)
    module_doc = open(os.path.join(ROOT, "configs", f"{name}.py")).read()
    for key, (source, row) in _effective(RECIPES[name]).items():
        where = f"{name}: {key} ({source})"
        assert row.kind in KINDS, where
        if row.kind in ("fixed", "unread", "absent", "differs"):
            assert row.why, f"{where}: say why"
        if row.kind in ("equal", "converted", "differs") and row.ours is not None:
            assert _norm(_value_here(config, row.ours)) == _norm(row.here), where
        if row.kind == "weights":
            assert config.model.backbone.pretrained is None, where
            url = row.d2.replace("detectron2://", D2_DOWNLOADS)
            assert url in module_doc, f"{where}: the docstring should say where to get {url}"


@pytest.mark.parametrize("name", RECIPES)
def test_the_config_is_valid_for_its_task(name):
    from pointrend_jax.tasks import validated_task

    config = _load(name)
    assert validated_task(config).name == config.task
    runlocal = config_lib.load_config(os.path.join(ROOT, "configs", f"{name}.py") + ":runlocal")
    validated_task(runlocal)
    if config.model.backbone.num_groups > 1:  # the smoke run keeps the grouped convs
        assert runlocal.model.backbone.num_groups > 1


def test_cityscapes_has_the_recipes_19_classes():
    assert len(cityscapes.CLASS_NAMES) == 19


def test_every_difference_is_in_the_design_doc():
    text = open(os.path.join(ROOT, "docs", "design.md")).read()
    section = text[text.index("## 6. Where this differs from detectron2"):]
    rows = [row for chain in RECIPES.values() for _, _, rows in chain for row in rows]
    for row in rows + STATIC_SHAPE_CHOICES:
        if row.kind == "differs":
            assert f"`{row.key}`" in section, f"docs/design.md section 6 does not name {row.key}"


@pytest.mark.parametrize("name", RECIPES)
def test_the_static_shape_caps_are_the_documented_ones(name):
    config = _load(name)
    for row in STATIC_SHAPE_CHOICES:
        if row.ours is not None and config.task == "instance":
            assert _value_here(config, row.ours) == row.here, row.key
