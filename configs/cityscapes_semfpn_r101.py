"""PointRend on Semantic FPN, ResNet-101, Cityscapes fine: detectron2's recipe
(projects/PointRend, pointrend_semantic_R_101_FPN_1x_cityscapes.yaml), number for number.

What it aims at (Cityscapes val mIoU, single scale, 1024x2048):
  - paper (Kirillov et al. 2020): Semantic FPN 77.7 -> 78.6 with PointRend;
  - detectron2 model zoo, this recipe: 78.9;
  - for scale: mmsegmentation's PointRend R-50 (another recipe: 80k iterations of batch 8)
    reports 76.47, its R-101 78.30.
NOTHING has been trained with this config in this repository (no Cityscapes data and no GPU
here): these are targets, not results. Nothing of the backbone is frozen (the recipe's
FREEZE_AT=0; its BN stays frozen) and the point head sees the coarse prediction at its input
only (COARSE_PRED_EACH_LAYER=False); weight decay covers kernels and conv biases, not norms
(WEIGHT_DECAY_BIAS, WEIGHT_DECAY_NORM). tests/test_d2_recipes.py holds every key of the two
yaml files and the defaults they rely on against this config; what cannot be equal (the
seed) is in docs/design.md, section 6.

Hardware: detectron2 trained it on 8 V100 GPUs, 4 images of 512x1024 each (batch 32),
fp32; plan for 8 GPUs (or TPU cores) holding that batch, or lower train.batch_size and
scale the learning rate (not the recipe any more). Memory use and training time of this
code at that batch have not been measured here (no GPU).
Decoding and resizing 2048x1024 PNGs is CPU work: give the input pipeline several cores.

    # 1. Data: leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip from
    #    https://www.cityscapes-dataset.com/downloads/, unzipped into DIR.
    # 2. ImageNet weights (MSRA/caffe2 R-101, the ones detectron2 uses):
    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl
    python -m pointrend_jax.convert R-101.pkl r101.npz
    # 3. Train (prepares the data set under data_dir on first use), then evaluate:
    python train.py --config configs/cityscapes_semfpn_r101.py --workdir runs/cs_semfpn \\
        --config.data.manual_dir=DIR --config.model.backbone.pretrained=r101.npz
    python eval.py --config configs/cityscapes_semfpn_r101.py --workdir runs/cs_semfpn

Without --config.model.backbone.pretrained the backbone starts from random weights (not
the recipe). The MSRA weights need ``stride_in_1x1=True`` and detectron2's pixel mean/std
(set below; train.py checks them against the converted file).

Model: ResNet-101 (frozen BN) + FPN (256 channels, res2..res5) + Semantic FPN head (128
channels, GroupNorm) giving coarse logits at stride 4; the point head (3 FC layers of 256,
the coarse prediction concatenated to its input only) reads FPN p2. Training: 2048 points per image
(k = 3, beta = 0.75). Inference: 2 subdivision steps of 8192 points, 256x512 -> 1024x2048.

Evaluation is whole-image at full resolution, as detectron2's recipe tests (short side
1024 = the images' own size): each 1024x2048 image is padded to a multiple of
eval.size_divisor = 32 (it already is), so the jitted predict function compiles once for
the whole val split.
"""
from pointrend_jax.backbones import DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD
from pointrend_jax.semantic.config import semantic_config, runlocal


def get_config(arg: str = ""):
    c = semantic_config()
    c.data.name = "cityscapes"
    c.data.variant = "fine"

    # INPUT: ResizeShortestEdge((512, 768, ..., 2048), max 4096, "choice"), crop 512x1024
    # with at most 75% of one class, horizontal flip, SSD colour augmentation.
    c.augment.short_side = tuple(range(512, 2049, 256))
    c.augment.max_size = 4096
    c.augment.min_scale = c.augment.max_scale = 1.0  # unused with short_side
    c.augment.crop_size = (512, 1024)
    c.augment.max_class_ratio = 0.75
    c.augment.flip = True
    c.augment.color_jitter = 0.0
    c.augment.color_aug_ssd = True

    c.model.head = "semantic_fpn"
    c.model.backbone.depth = 101
    c.model.backbone.width = 64
    c.model.backbone.norm = "frozen_bn"
    c.model.backbone.output_stride = 32
    c.model.backbone.stride_in_1x1 = True  # MSRA / caffe2 weights
    c.model.backbone.freeze_at = 0  # the recipe's FREEZE_AT: every stage trains
    c.model.pixel_mean = DETECTRON2_PIXEL_MEAN  # RGB order, 0..255 pixels, std 1
    c.model.pixel_std = DETECTRON2_PIXEL_STD
    c.model.fpn_channels = 256
    c.model.head_channels = 128  # SEM_SEG_HEAD.CONVS_DIM
    c.model.head_norm = "gn"
    c.model.dtype = "float32"

    c.pointrend.enabled = True
    c.pointrend.fine_features = ("p2",)
    c.pointrend.num_fc = 3
    c.pointrend.fc_dim = 256
    c.pointrend.coarse_pred_each_layer = False  # the semantic base config's COARSE_PRED_EACH_LAYER
    c.pointrend.train_num_points = 2048  # N
    c.pointrend.oversample_ratio = 3.0  # k
    c.pointrend.importance_sample_ratio = 0.75  # beta
    c.pointrend.subdivision_steps = 2
    c.pointrend.subdivision_num_points = 8192

    # SOLVER: SGD, LR 0.01, momentum 0.9, weight decay 1e-4, x0.1 at 40k and 55k of 65k,
    # 1000 iterations of linear warm-up from 0.001 x LR; batch 32.
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_bias = 1e-4  # WEIGHT_DECAY_BIAS None: = WEIGHT_DECAY
    c.optimizer.schedule = "steps"
    c.optimizer.decay_steps = (40_000, 55_000)
    c.optimizer.decay_factor = 0.1
    c.optimizer.warmup_steps = 1000
    c.optimizer.warmup_factor = 0.001
    c.train.batch_size = 32
    c.train.num_steps = 65_000
    c.train.log_every = 20
    c.train.checkpoint_every = 5000
    c.train.image_summary_every = 5000

    c.eval.size_divisor = 32  # 1024x2048 needs no padding: one compilation
    c.eval.num_examples = 8

    if arg == "runlocal":
        runlocal(c)  # tiny widths, points, batch and steps; same data set
        c.model.backbone.depth = 18  # R-101 at any width compiles for minutes on a CPU
        c.augment.short_side = (64, 96)
        c.augment.max_size = 256
        c.augment.crop_size = (64, 128)
        c.optimizer.decay_steps = (2, 3)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
