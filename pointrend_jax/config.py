"""Experiment configuration: every default in one place, each key explained.

Files under `configs/` start from `base_config()` and change what their experiment needs;
`get_config("runlocal")` in each shrinks the same experiment to a seconds-long smoke run.
`validate(config)` refuses inconsistent settings before anything is built.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from pointrend_jax.models.pointrend import COARSE_HEADS, IMAGENET_MEAN, IMAGENET_STD


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "semantic"  # "semantic" | "instance" (Mask R-CNN; start from instance_config())
    c.seed = 0  # model init, point sampling, data order and augmentation

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # "synthetic" | "folder"
    c.data.variant = "multiclass"  # synthetic: "binary" | "multiclass"
    c.data.data_dir = config_dict.placeholder(str)  # synthetic: tfds data dir (None: default)
    # cityscapes/ade20k/voc: folder the official download was extracted into (to prepare it)
    c.data.manual_dir = config_dict.placeholder(str)
    c.data.num_train = config_dict.placeholder(int)  # synthetic: examples (None: builder default)
    c.data.num_val = config_dict.placeholder(int)
    c.data.root = config_dict.placeholder(str)  # folder: ROOT/{train,val}/{images,masks}
    c.data.num_classes = config_dict.placeholder(int)  # folder without classes.txt

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_size = (128, 128)  # (h, w) of every training example
    c.augment.min_scale = 0.75  # random resize factor range
    c.augment.max_scale = 1.5
    c.augment.flip = True
    c.augment.color_jitter = 0.2  # max relative brightness/contrast/saturation change
    c.augment.max_class_ratio = 1.0  # detectron2's single-category max area (1.0 = off)
    # detectron2's ResizeShortestEdge: short side drawn from these lengths (replaces
    # min_scale/max_scale when not empty), long side capped at max_size (None: no cap)
    c.augment.short_side = ()
    c.augment.max_size = config_dict.placeholder(int)
    c.augment.color_aug_ssd = False  # SSD brightness/contrast/saturation/hue, each p=0.5

    c.model = ml_collections.ConfigDict()
    c.model.head = "semantic_fpn"  # coarse head: "semantic_fpn" | "deeplabv3"
    c.model.backbone = ml_collections.ConfigDict()
    c.model.backbone.depth = 50  # 18 | 34 | 50 | 101 | 152
    c.model.backbone.width = 64  # base channels (64 = standard ResNet)
    c.model.backbone.norm = "frozen_bn"  # "frozen_bn" (detectron2) | "bn" | "gn"
    c.model.backbone.output_stride = 32  # 32 | 16 | 8 (dilated res4/res5)
    c.model.backbone.stride_in_1x1 = False  # True for MSRA/caffe2 weights
    c.model.backbone.freeze_at = 0  # 1: stem fixed, 2: stem and res2 fixed (detectron2: 2)
    # Converted ImageNet weights (python -m pointrend_jax.convert SRC DST): DST, or None.
    c.model.backbone.pretrained = config_dict.placeholder(str)
    c.model.fpn_channels = 256
    c.model.head_channels = 128  # SemanticFPN conv_dims / ASPP channels
    c.model.head_norm = "gn"
    c.model.dropout = 0.1  # DeepLabV3 only
    c.model.aspp_dilations = (6, 12, 18)  # DeepLabV3 only; (12, 24, 36) at output stride 8
    c.model.pixel_mean = IMAGENET_MEAN  # RGB, on 0..255 pixels
    c.model.pixel_std = IMAGENET_STD
    c.model.dtype = "float32"  # compute dtype: "float32" | "bfloat16" (params stay float32)

    c.pointrend = ml_collections.ConfigDict()
    c.pointrend.enabled = True  # False: the plain coarse model, for A/B
    c.pointrend.fine_features = ("p2",)  # feature maps sampled for the point head
    c.pointrend.num_fc = 3
    c.pointrend.fc_dim = 256
    c.pointrend.coarse_pred_each_layer = True
    c.pointrend.activation = "relu"  # "relu" | "elu" (SEED_NOTES.md trick 1)
    c.pointrend.upsample_coarse_first = False  # SEED_NOTES.md trick 2
    c.pointrend.train_num_points = 2048  # N per image
    c.pointrend.oversample_ratio = 3.0  # k
    c.pointrend.importance_sample_ratio = 0.75  # beta
    c.pointrend.subdivision_steps = 2
    c.pointrend.subdivision_num_points = 8192

    c.loss = ml_collections.ConfigDict()
    c.loss.pixel_weight = 1.0
    c.loss.point_weight = 1.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # "sgd" (momentum) | "adamw"
    c.optimizer.learning_rate = 0.01  # peak
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.b1 = 0.9  # adamw
    c.optimizer.b2 = 0.999
    c.optimizer.weight_decay = 1e-4  # not applied to biases and norm parameters
    c.optimizer.schedule = "poly"  # "poly" | "steps" | "cosine" | "constant"
    c.optimizer.poly_power = 0.9
    c.optimizer.decay_steps = ()  # "steps": multiply by decay_factor at these steps
    c.optimizer.decay_factor = 0.1
    c.optimizer.warmup_steps = 100  # linear warm-up from warmup_factor * lr
    c.optimizer.warmup_factor = 0.001
    c.optimizer.clip_grad_norm = config_dict.placeholder(float)  # None: no clipping

    c.mesh = ml_collections.ConfigDict()
    c.mesh.fsdp = 1  # devices that split params/optimizer state (1: data parallel; -1: all)
    c.mesh.fsdp_min_size = 2**14  # arrays smaller than this (elements) stay replicated

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 16  # global, over all devices and processes
    c.train.num_steps = 1000
    c.train.log_every = 20
    c.train.checkpoint_every = 1000
    c.train.max_to_keep = 3
    c.train.image_summary_every = 1000  # TensorBoard example predictions (0 = off)
    c.train.max_nonfinite_steps = 10  # stop after this many skipped (NaN/inf) steps in a row

    c.eval = ml_collections.ConfigDict()
    c.eval.step = config_dict.placeholder(int)  # None: the latest checkpoint
    c.eval.size_divisor = 32  # images are zero-padded to a multiple of this (then cropped back)
    c.eval.num_examples = 4  # PNGs under eval/examples/
    c.eval.save_predictions = False  # eval/predictions/STEM.png for every val image
    c.eval.max_images = config_dict.placeholder(int)  # None: the whole val split
    return c


def instance_config() -> ml_collections.ConfigDict:
    """Instance segmentation defaults: detectron2's Mask R-CNN R50-FPN with the PointRend mask
    head (`pointrend_rcnn_R_50_FPN_1x_coco.yaml`): 1x schedule, batch 16, short side
    640..800 (max 1333) padded to a fixed 1344x1344 canvas (static shapes)."""
    c = base_config()
    c.task = "instance"
    c.data.name = "synthetic_instances"  # "synthetic_instances" | "coco" (COCO-format files)
    c.data.variant = config_dict.placeholder(str)
    c.data.image_size = config_dict.placeholder(int)  # synthetic_instances: picture side
    c.data.train_images = config_dict.placeholder(str)  # coco: image folder of the train json
    c.data.train_json = config_dict.placeholder(str)  # coco: COCO-format instances json
    c.data.val_images = config_dict.placeholder(str)
    c.data.val_json = config_dict.placeholder(str)

    c.augment.crop_size = (1344, 1344)  # the fixed canvas every training image is padded to
    c.augment.short_side = (640, 672, 704, 736, 768, 800)
    c.augment.max_size = 1333
    c.augment.test_short_side = 800  # eval/predict resize (None: original size)
    c.augment.max_instances = 100  # ground-truth instances per image (more: largest kept)
    c.augment.color_jitter = 0.0

    c.model.backbone.freeze_at = 2
    c.model.mask_head = "pointrend"  # "pointrend" | "maskrcnn" (the 4-conv 28x28 baseline)
    c.model.rpn = ml_collections.ConfigDict()
    c.model.rpn.anchor_sizes = (32, 64, 128, 256, 512)  # one per level p2..p6
    c.model.rpn.aspect_ratios = (0.5, 1.0, 2.0)
    c.model.rpn.pre_nms_topk_train = 2000  # per FPN level
    c.model.rpn.post_nms_topk_train = 1000  # per image
    c.model.rpn.pre_nms_topk_test = 1000
    c.model.rpn.post_nms_topk_test = 1000
    c.model.rpn.nms_thresh = 0.7
    c.model.rpn.batch_size_per_image = 256
    c.model.rpn.positive_fraction = 0.5
    c.model.rpn.iou_thresholds = (0.3, 0.7)
    c.model.roi_heads = ml_collections.ConfigDict()
    c.model.roi_heads.batch_size_per_image = 512
    c.model.roi_heads.positive_fraction = 0.25
    c.model.roi_heads.iou_threshold = 0.5
    c.model.roi_heads.score_thresh_test = 0.05
    c.model.roi_heads.nms_thresh_test = 0.5
    c.model.roi_heads.detections_per_image = 100
    c.model.roi_heads.test_topk_candidates = 2000  # (box, class) pairs entering NMS
    c.model.roi_heads.box_pooler_side = 7
    c.model.roi_heads.sampling_ratio = 2  # ROIAlign samples per bin side (fixed: static shapes)
    c.model.roi_heads.box_fc_dim = 1024
    c.model.roi_heads.box_num_fc = 2
    # mask head trained on the box head's regressed boxes (detectron2's TRAIN_ON_PRED_BOXES,
    # on in its PointRend configs; off: on the proposals, as plain Mask R-CNN)
    c.model.roi_heads.train_on_pred_boxes = True
    c.model.roi_heads.mask_conv_dim = 256
    c.model.roi_heads.mask_pooler_side = 14  # maskrcnn head: 14x14 ROIAlign -> 28x28 masks
    c.model.roi_heads.coarse_mask_features = ("p2",)  # pointrend: coarse head input
    c.model.roi_heads.coarse_mask_pooler_side = 14
    c.model.roi_heads.coarse_mask_side = 7
    c.model.roi_heads.coarse_mask_fc_dim = 1024
    c.model.roi_heads.coarse_mask_num_fc = 2

    c.pointrend.fine_features = ("p2",)
    c.pointrend.train_num_points = 14 * 14  # per box
    c.pointrend.subdivision_steps = 5  # 7 -> 224
    c.pointrend.subdivision_num_points = 28 * 28

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.02
    c.optimizer.schedule = "steps"
    c.optimizer.decay_steps = (60000, 80000)
    c.optimizer.warmup_steps = 1000
    c.train.batch_size = 16
    c.train.num_steps = 90000
    c.train.checkpoint_every = 5000
    c.train.image_summary_every = 5000
    c.eval.boundary_ap = True  # also Boundary AP (slower: boundaries of every mask)
    c.eval.example_score_thresh = 0.5  # detections drawn in eval/examples/*.png
    c.eval.save_predictions = False  # eval/predictions.json in the COCO results format
    return c


def _small_instance_images(c: ml_collections.ConfigDict) -> None:
    """What the CPU-sized and smoke-run instance models share: pictures used at their own size
    (random scale 0.8..1.2, no shortest-edge resize), a ResNet-18 with trainable BN, nothing
    frozen, anchors 8..128 px for objects of 8-60 px."""
    c.augment.short_side = ()
    c.augment.min_scale = 0.8
    c.augment.max_scale = 1.2
    c.augment.max_size = config_dict.placeholder(int)
    c.augment.test_short_side = config_dict.placeholder(int)
    c.model.backbone.depth = 18
    c.model.backbone.norm = "bn"
    c.model.backbone.freeze_at = 0
    c.model.rpn.anchor_sizes = (8, 16, 32, 64, 128)
    c.eval.size_divisor = 32


def instance_cpu_sized(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A Mask R-CNN that trains usefully on the 128x128 synthetic instances on 2 CPU cores:
    ResNet-18 at width 16 with trainable BN, 64-channel FPN, anchors 8..128 px, proposal and
    region counts scaled to ~5 objects per picture, heads narrowed; PointRend's masks still
    go 7 -> 224 in 5 steps of 784 points."""
    _small_instance_images(c)
    c.data.name = "synthetic_instances"
    c.augment.crop_size = (128, 128)
    c.augment.max_instances = 16
    c.model.backbone.width = 16
    c.model.fpn_channels = 64
    c.model.rpn.pre_nms_topk_train = 600
    c.model.rpn.post_nms_topk_train = 300
    c.model.rpn.pre_nms_topk_test = 300
    c.model.rpn.post_nms_topk_test = 150
    c.model.rpn.batch_size_per_image = 128
    c.model.roi_heads.batch_size_per_image = 128
    c.model.roi_heads.detections_per_image = 32
    c.model.roi_heads.test_topk_candidates = 400
    c.model.roi_heads.box_fc_dim = 256
    c.model.roi_heads.mask_conv_dim = 64
    c.model.roi_heads.coarse_mask_fc_dim = 256
    c.pointrend.fc_dim = 64
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.train.batch_size = 8
    c.train.num_steps = 2000
    c.train.log_every = 25
    c.train.checkpoint_every = 1000
    c.train.image_summary_every = 1000
    return c


def instance_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """An instance experiment shrunk to a seconds-long smoke run (tests, CI)."""
    c.data.num_train = 8
    c.data.num_val = 4
    c.data.image_size = 64
    _small_instance_images(c)
    c.augment.crop_size = (64, 64)
    c.augment.max_instances = 8
    c.model.backbone.width = 8
    c.model.backbone.pretrained = None
    c.model.fpn_channels = 16
    c.model.rpn.pre_nms_topk_train = 200
    c.model.rpn.post_nms_topk_train = 100
    c.model.rpn.pre_nms_topk_test = 200
    c.model.rpn.post_nms_topk_test = 50
    c.model.rpn.batch_size_per_image = 64
    c.model.roi_heads.batch_size_per_image = 32
    c.model.roi_heads.detections_per_image = 8
    c.model.roi_heads.test_topk_candidates = 100
    c.model.roi_heads.box_fc_dim = 32
    c.model.roi_heads.mask_conv_dim = 16
    c.model.roi_heads.coarse_mask_fc_dim = 32
    c.pointrend.fc_dim = 16
    c.pointrend.subdivision_num_points = 196
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.01
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = 2
    c.train.batch_size = 4
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.image_summary_every = 4
    c.eval.num_examples = 2
    return c


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"--config.{name}={value!r} is not one of {list(choices)}")


def _check_positive(values) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"--config.{key} must be >= 1; got {value}")


def _check_fraction(key: str, value) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--config.{key} must be in [0, 1]; got {value}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the `--config.` key of the first inconsistent setting."""
    task = config.get("task", "semantic")
    _choice("task", task, ("semantic", "instance"))
    _choice("model.dtype", config.model.dtype, ("float32", "bfloat16"))
    _choice("model.backbone.depth", config.model.backbone.depth, (18, 34, 50, 101, 152))
    _choice("model.backbone.norm", config.model.backbone.norm, ("frozen_bn", "bn", "gn"))
    _choice("pointrend.activation", config.pointrend.activation, ("relu", "elu"))
    _choice("optimizer.name", config.optimizer.name, ("sgd", "adamw"))
    _choice("optimizer.schedule", config.optimizer.schedule, ("poly", "steps", "cosine", "constant"))
    _check_positive({
        "train.batch_size": config.train.batch_size, "train.num_steps": config.train.num_steps,
        "train.log_every": config.train.log_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "train.max_nonfinite_steps": config.train.max_nonfinite_steps,
        "pointrend.train_num_points": config.pointrend.train_num_points,
        "pointrend.subdivision_num_points": config.pointrend.subdivision_num_points,
        "eval.size_divisor": config.eval.size_divisor,
    })
    _check_fraction("pointrend.importance_sample_ratio", config.pointrend.importance_sample_ratio)
    crop_h, crop_w = config.augment.crop_size
    if crop_h % 32 or crop_w % 32:
        raise ValueError(f"--config.augment.crop_size={tuple(config.augment.crop_size)} must be "
                         "multiples of 32 (the backbone's stride)")
    if task == "instance":
        _validate_instance(config)
    else:
        _validate_semantic(config)


def _validate_semantic(config) -> None:
    _choice("model.head", config.model.head, COARSE_HEADS)
    _choice("model.backbone.output_stride", config.model.backbone.output_stride, (8, 16, 32))
    if config.pointrend.subdivision_steps < 0:
        raise ValueError(f"--config.pointrend.subdivision_steps must be >= 0; got "
                         f"{config.pointrend.subdivision_steps}")
    if config.pointrend.oversample_ratio < 1.0:
        raise ValueError("--config.pointrend.oversample_ratio must be >= 1; got "
                         f"{config.pointrend.oversample_ratio}")
    crop_h, crop_w = config.augment.crop_size
    if config.pointrend.train_num_points > crop_h * crop_w:
        raise ValueError(f"--config.pointrend.train_num_points={config.pointrend.train_num_points} "
                         f"is more than the {crop_h * crop_w} pixels of a "
                         f"{crop_h}x{crop_w} crop (--config.augment.crop_size)")


def _validate_instance(config) -> None:
    from pointrend_jax.data import INSTANCE_DATASETS
    from pointrend_jax.models.mask_head import MASK_HEADS

    _choice("data.name", config.data.name, INSTANCE_DATASETS)
    _choice("model.mask_head", config.model.mask_head, MASK_HEADS)
    rpn, roi = config.model.rpn, config.model.roi_heads
    _check_positive({
        "augment.max_instances": config.augment.max_instances,
        "model.rpn.pre_nms_topk_train": rpn.pre_nms_topk_train,
        "model.rpn.post_nms_topk_train": rpn.post_nms_topk_train,
        "model.rpn.pre_nms_topk_test": rpn.pre_nms_topk_test,
        "model.rpn.post_nms_topk_test": rpn.post_nms_topk_test,
        "model.rpn.batch_size_per_image": rpn.batch_size_per_image,
        "model.roi_heads.batch_size_per_image": roi.batch_size_per_image,
        "model.roi_heads.detections_per_image": roi.detections_per_image,
        "model.roi_heads.test_topk_candidates": roi.test_topk_candidates,
        "model.roi_heads.sampling_ratio": roi.sampling_ratio,
    })
    if len(rpn.anchor_sizes) != 5:
        raise ValueError(f"--config.model.rpn.anchor_sizes={tuple(rpn.anchor_sizes)} needs one "
                         "size per FPN level p2..p6 (5 values)")
    _check_fraction("model.rpn.positive_fraction", rpn.positive_fraction)
    _check_fraction("model.roi_heads.positive_fraction", roi.positive_fraction)
    if int(roi.batch_size_per_image * roi.positive_fraction) < 1:
        raise ValueError("--config.model.roi_heads.batch_size_per_image * positive_fraction must "
                         "allow at least one foreground region")
    if config.eval.size_divisor % 32:
        raise ValueError(f"--config.eval.size_divisor={config.eval.size_divisor} must be a "
                         "multiple of 32 (the backbone's stride)")


def cpu_sized(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A model and schedule that train usefully on 128x128 images in minutes on 2 CPU cores:
    ResNet-18 at width 16 with trainable BN, DeepLabV3 head at output stride 16 (coarse
    logits at 1/16), point head on res2; subdivision 4 steps back to full resolution."""
    c.augment.crop_size = (128, 128)
    c.model.head = "deeplabv3"
    c.model.backbone.depth = 18
    c.model.backbone.width = 16
    c.model.backbone.norm = "bn"
    c.model.backbone.output_stride = 16
    c.model.head_channels = 64
    c.pointrend.fine_features = ("res2",)
    c.pointrend.fc_dim = 64
    c.pointrend.train_num_points = 512
    c.pointrend.subdivision_steps = 4
    c.pointrend.subdivision_num_points = 1024
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.warmup_steps = 100
    c.train.batch_size = 16
    c.train.num_steps = 3000
    c.train.log_every = 25
    c.train.checkpoint_every = 1000
    c.train.image_summary_every = 1000
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The same experiment shrunk to a seconds-long smoke run (tests, CI)."""
    c.augment.crop_size = (64, 64)
    c.data.num_train = 8
    c.data.num_val = 4
    c.model.backbone.width = 8
    c.model.fpn_channels = 16
    c.model.head_channels = 16
    c.pointrend.fc_dim = 16
    c.pointrend.train_num_points = 64
    c.pointrend.subdivision_num_points = 128
    # SGD: the smoke run's per-step losses are compared across device and process counts,
    # and Adam turns float-rounding noise in near-zero gradients into full-size updates.
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.02
    c.optimizer.warmup_steps = 2
    c.train.batch_size = 4
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.image_summary_every = 4
    c.eval.num_examples = 2
    return c
