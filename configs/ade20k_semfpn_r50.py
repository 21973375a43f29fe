"""PointRend on Semantic FPN, ResNet-50, ADE20K SceneParsing (150 classes).

The paper has no ADE20K experiment; this follows mmsegmentation's PointRend ADE20K recipe
(pointrend_r50_512x512_160k_ade20k, as we understand it): batch 16 of 512x512 crops,
160k iterations, SGD LR 0.01 with poly decay (power 0.9) after 200 iterations of linear
warm-up from 0.1 x LR, weight decay 5e-4; images resized to short side 512 x [0.5, 2.0],
crops with at most 75% of one class, flip, photometric distortion (= SSD colour); 2048 train
points, 2 subdivision steps of 8192 points.

What it aims at (ADE20K val mIoU, single scale): mmsegmentation's model zoo reports about
37.6 for its PointRend R-50 (160k). NOTHING has been trained with this config in this
repository (no ADE20K data and no GPU here). Known differences from mmsegmentation: its
backbone is ResNetV1c (deep stem) with trainable SyncBN from its own ImageNet weights,
here MSRA R-50 with frozen BN (the detectron2 weights, as in the Cityscapes recipe); its
weight decay also covers biases and norms, and its poly decay stops at LR 1e-4; its test
resizes every image to short side 512 while this eval runs at each image's own size.

Hardware: mmsegmentation trained it on 4 GPUs x 4 crops of 512x512; any GPUs or TPU cores
holding batch 16 of 512x512 with a ResNet-50 will do. Training time not measured here.

    # Data: ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu/, unzipped into DIR.
    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl
    python -m pointrend_jax.convert R-50.pkl r50.npz
    python train.py --config configs/ade20k_semfpn_r50.py --workdir runs/ade_semfpn \\
        --config.data.manual_dir=DIR --config.model.backbone.pretrained=r50.npz
    python eval.py --config configs/ade20k_semfpn_r50.py --workdir runs/ade_semfpn

Evaluation is whole-image at each image's own resolution (ADE20K sizes vary). Images are
zero-padded to a multiple of eval.size_divisor = 512 and the prediction cropped back, so
the predict function compiles once per padded size (512x512, 512x1024, 1024x512, ...: at
most a few tens over the val split) rather than once per distinct image size.
"""
from pointrend_jax.backbones import DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD
from pointrend_jax.semantic.config import semantic_config, runlocal


def get_config(arg: str = ""):
    c = semantic_config()
    c.data.name = "ade20k"
    c.data.variant = "scene_parsing"

    # Short side 512 x {0.5, 0.6, ..., 2.0}, long side <= 2048; 512x512 crops.
    c.augment.short_side = tuple(512 * r // 10 for r in range(5, 21))
    c.augment.max_size = 2048
    c.augment.min_scale = c.augment.max_scale = 1.0  # unused with short_side
    c.augment.crop_size = (512, 512)
    c.augment.max_class_ratio = 0.75
    c.augment.flip = True
    c.augment.color_jitter = 0.0
    c.augment.color_aug_ssd = True

    c.model.head = "semantic_fpn"
    c.model.backbone.depth = 50
    c.model.backbone.width = 64
    c.model.backbone.norm = "frozen_bn"
    c.model.backbone.output_stride = 32
    c.model.backbone.stride_in_1x1 = True  # MSRA / caffe2 weights
    c.model.pixel_mean = DETECTRON2_PIXEL_MEAN
    c.model.pixel_std = DETECTRON2_PIXEL_STD
    c.model.fpn_channels = 256
    c.model.head_channels = 128
    c.model.head_norm = "gn"
    c.model.dtype = "float32"

    c.pointrend.enabled = True
    c.pointrend.fine_features = ("p2",)
    c.pointrend.num_fc = 3
    c.pointrend.fc_dim = 256
    c.pointrend.coarse_pred_each_layer = True
    c.pointrend.train_num_points = 2048  # N
    c.pointrend.oversample_ratio = 3.0  # k
    c.pointrend.importance_sample_ratio = 0.75  # beta
    c.pointrend.subdivision_steps = 2
    c.pointrend.subdivision_num_points = 8192

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "poly"
    c.optimizer.poly_power = 0.9
    c.optimizer.warmup_steps = 200
    c.optimizer.warmup_factor = 0.1
    c.train.batch_size = 16
    c.train.num_steps = 160_000
    c.train.log_every = 50
    c.train.checkpoint_every = 16_000
    c.train.image_summary_every = 16_000

    c.eval.size_divisor = 512  # few distinct padded sizes -> few compilations
    c.eval.num_examples = 8

    if arg == "runlocal":
        runlocal(c)  # tiny widths, points, batch and steps; same data set
        c.model.backbone.depth = 18
        c.augment.short_side = (48, 64, 80)
        c.augment.max_size = 160
        c.eval.size_divisor = 64
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
