"""PointRend on DeepLabV3, ResNet-101 at output stride 8, Cityscapes fine.

What it aims at (Cityscapes val mIoU, single scale, 1024x2048): the paper (Kirillov et al.
2020) reports DeepLabV3 77.2 -> 78.4 with PointRend. As we read its table, that row is
DeepLabV3 at output stride 16 (coarse 64x128; at output stride 8 the plain model gets 77.8);
this config uses output stride 8, the stronger setting of the plain model. For the paper's row:
--config.model.backbone.output_stride=16 --config.model.aspp_dilations='(6, 12, 18)'
--config.pointrend.subdivision_steps=4.
NOTHING has been trained with this config in this repository (no Cityscapes data and no GPU
here): these are targets, not results.

Recipe: the data, augmentation and schedule of detectron2's PointRend Cityscapes recipe
(see cityscapes_semfpn_r101.py: batch 32 of 512x1024 crops, short side 512..2048, SSD
colour, SGD 0.01 with steps at 40k/55k of 65k, 1000 warm-up iterations), with a DeepLabV3
head: ASPP (256 channels, BatchNorm with batch statistics over the global batch, i.e.
SyncBN, dropout 0.1) on res5 of a dilated ResNet-101 (frozen BN, MSRA weights). ASPP
dilations (12, 24, 36), DeepLabV3's rates doubled for output stride 8. Nothing is frozen
and the point head sees the coarse logits at its input only, as in that recipe (FREEZE_AT 0,
COARSE_PRED_EACH_LAYER False). Known difference: detectron2's own DeepLabV3 project uses a deep-stem "R-103" and a poly schedule.

PointRend reads res2 (stride 4) as fine features; coarse logits at stride 8 (128x256 for a
1024x2048 image); inference: 3 subdivision steps of 8192 points, 128x256 -> 1024x2048.

Hardware: like the Semantic FPN recipe (8 GPUs x 4 crops of 512x1024) but heavier: res4
and res5 run at stride 8, so expect considerably more memory per crop (bfloat16,
--config.model.dtype=bfloat16, halves activations). Memory use and training time have not
been measured here (no GPU).

    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl
    python -m pointrend_jax.convert R-101.pkl r101.npz
    python train.py --config configs/cityscapes_deeplabv3_r101.py --workdir runs/cs_dlv3 \\
        --config.data.manual_dir=DIR --config.model.backbone.pretrained=r101.npz
    python eval.py --config configs/cityscapes_deeplabv3_r101.py --workdir runs/cs_dlv3

(DIR: leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from
https://www.cityscapes-dataset.com/downloads/, unzipped.)

Evaluation is whole-image at full resolution: every 1024x2048 image is already a multiple
of eval.size_divisor = 32, so the predict function compiles once.
"""
from pointrend_jax.backbones import DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD
from pointrend_jax.semantic.config import semantic_config, runlocal


def get_config(arg: str = ""):
    c = semantic_config()
    c.data.name = "cityscapes"
    c.data.variant = "fine"

    c.augment.short_side = tuple(range(512, 2049, 256))
    c.augment.max_size = 4096
    c.augment.min_scale = c.augment.max_scale = 1.0  # unused with short_side
    c.augment.crop_size = (512, 1024)
    c.augment.max_class_ratio = 0.75
    c.augment.flip = True
    c.augment.color_jitter = 0.0
    c.augment.color_aug_ssd = True

    c.model.head = "deeplabv3"
    c.model.backbone.depth = 101
    c.model.backbone.width = 64
    c.model.backbone.norm = "frozen_bn"
    c.model.backbone.output_stride = 8
    c.model.aspp_dilations = (12, 24, 36)  # DeepLabV3's rates doubled at output stride 8
    c.model.backbone.stride_in_1x1 = True  # MSRA / caffe2 weights
    c.model.backbone.freeze_at = 0  # nothing frozen, as detectron2's semantic recipe
    c.model.pixel_mean = DETECTRON2_PIXEL_MEAN
    c.model.pixel_std = DETECTRON2_PIXEL_STD
    c.model.head_channels = 256  # ASPP channels
    c.model.head_norm = "bn"
    c.model.dropout = 0.1
    c.model.dtype = "float32"

    c.pointrend.enabled = True
    c.pointrend.fine_features = ("res2",)
    c.pointrend.num_fc = 3
    c.pointrend.fc_dim = 256
    c.pointrend.coarse_pred_each_layer = False  # as detectron2's semantic recipe
    c.pointrend.train_num_points = 2048  # N
    c.pointrend.oversample_ratio = 3.0  # k
    c.pointrend.importance_sample_ratio = 0.75  # beta
    c.pointrend.subdivision_steps = 3  # stride 8 -> full resolution
    c.pointrend.subdivision_num_points = 8192

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

    c.eval.size_divisor = 32
    c.eval.num_examples = 8

    if arg == "runlocal":
        runlocal(c)  # tiny widths, points, batch and steps; same data set
        c.model.backbone.depth = 18
        c.augment.short_side = (64, 96)
        c.augment.max_size = 256
        c.augment.crop_size = (64, 128)
        c.optimizer.decay_steps = (2, 3)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
