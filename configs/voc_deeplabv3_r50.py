"""PointRend on DeepLabV3, ResNet-50 at output stride 8, Pascal VOC 2012 (+ SBD "aug").

The paper has no VOC experiment; this follows mmsegmentation's DeepLabV3 VOC recipe
(deeplabv3_r50-d8_512x512_40k_voc12aug, as we understand it) and adds PointRend as on
Cityscapes: train on train_aug (VOC 2012 train + SBD, 10,582 images), batch 16 of 512x512
crops, 40k iterations, SGD LR 0.01 with poly decay (power 0.9), weight decay 5e-4; short
side 512 x [0.5, 2.0], crops with at most 75% of one class, flip, photometric distortion
(= SSD colour). PointRend: res2 fine features, 2048 train points, 3 subdivision steps of
8192 points (stride 8 -> full resolution); 200 warm-up iterations from 0.1 x LR (as
mmsegmentation's PointRend recipes; its DeepLabV3 recipe has none).

What it aims at (VOC 2012 val mIoU, single scale): mmsegmentation reports roughly 76-77.5
for plain DeepLabV3 R-50-D8 on VOC 2012 + aug (20k-40k iterations); no published PointRend
result on VOC is known to us. NOTHING has been trained with this config in this repository
(no VOC data and no GPU here). Known differences from mmsegmentation: ResNetV1c (deep
stem) with trainable SyncBN there, MSRA R-50 with frozen BN here (ASPP dilations 12, 24, 36
at output stride 8 in both); its test resizes images to short side 512, this eval runs at
each image's own size.

Hardware: mmsegmentation trained it on 4 GPUs x 4 crops of 512x512. Training time not
measured here.

    # Data: VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/
    # and SBD's benchmark.tgz from http://home.bharathh.info/pubs/codes/SBD/download.html,
    # both extracted into DIR (DIR/VOCdevkit/VOC2012, DIR/benchmark_RELEASE). Without SBD:
    # --config.data.variant=voc2012 (1,464 training images; expect a lower mIoU).
    wget https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl
    python -m pointrend_jax.convert R-50.pkl r50.npz
    python train.py --config configs/voc_deeplabv3_r50.py --workdir runs/voc_dlv3 \\
        --config.data.manual_dir=DIR --config.model.backbone.pretrained=r50.npz
    python eval.py --config configs/voc_deeplabv3_r50.py --workdir runs/voc_dlv3

Evaluation is whole-image at each image's own resolution. VOC images are at most 500x500,
so padding to eval.size_divisor = 512 makes every image 512x512: one compilation.
"""
from pointrend_jax.backbones import DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD
from pointrend_jax.semantic.config import semantic_config, runlocal


def get_config(arg: str = ""):
    c = semantic_config()
    c.data.name = "voc"
    c.data.variant = "voc2012_aug"

    c.augment.short_side = tuple(512 * r // 10 for r in range(5, 21))
    c.augment.max_size = 2048
    c.augment.min_scale = c.augment.max_scale = 1.0  # unused with short_side
    c.augment.crop_size = (512, 512)
    c.augment.max_class_ratio = 0.75
    c.augment.flip = True
    c.augment.color_jitter = 0.0
    c.augment.color_aug_ssd = True

    c.model.head = "deeplabv3"
    c.model.backbone.depth = 50
    c.model.backbone.width = 64
    c.model.backbone.norm = "frozen_bn"
    c.model.backbone.output_stride = 8
    c.model.aspp_dilations = (12, 24, 36)  # DeepLabV3's rates doubled at output stride 8
    c.model.backbone.stride_in_1x1 = True  # MSRA / caffe2 weights
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
    c.pointrend.coarse_pred_each_layer = True
    c.pointrend.train_num_points = 2048  # N
    c.pointrend.oversample_ratio = 3.0  # k
    c.pointrend.importance_sample_ratio = 0.75  # beta
    c.pointrend.subdivision_steps = 3
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
    c.train.num_steps = 40_000
    c.train.log_every = 50
    c.train.checkpoint_every = 4000
    c.train.image_summary_every = 4000

    c.eval.size_divisor = 512  # every VOC image (<= 500x500) pads to 512x512
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
