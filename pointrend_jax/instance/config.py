"""Instance segmentation configs (Mask R-CNN with the PointRend, the 28x28 or Implicit
PointRend's mask head): the shared keys plus the instance ones, and their checks."""
from __future__ import annotations

import math

import ml_collections
from ml_collections import config_dict

from pointrend_jax import config as config_lib
from pointrend_jax.data import SYNTHETIC_INSTANCE_VARIANTS
from pointrend_jax.data.coco import POINT_SOURCES
from pointrend_jax.models.mask_head import MASK_HEADS

DATASETS = ("synthetic_instances", "coco", "cityscapes_instances")

# keys of the other task's configs that users reach for here -> what to use instead
REPLACEMENTS = {
    "pointrend.enabled": "for the instance baseline use --config.model.mask_head=maskrcnn",
    "loss.pixel_weight": "the mask losses are weighted by --config.loss.mask_weight",
    "loss.point_weight": "the point loss is weighted by --config.loss.mask_point_weight",
    "augment.color_jitter": "instance training does not change colours",
    "augment.color_aug_ssd": "instance training does not change colours",
    "model.head": "the instance model's heads are set by --config.model.mask_head",
}


def instance_config() -> ml_collections.ConfigDict:
    """Instance segmentation defaults: detectron2's Mask R-CNN R50-FPN with the PointRend mask
    head (`pointrend_rcnn_R_50_FPN_1x_coco.yaml`): 1x schedule, batch 16, short side
    640..800 (max 1333) padded to a fixed 1344x1344 canvas (static shapes)."""
    c = config_lib.base_config()
    c.task = "instance"
    # "synthetic_instances" | "coco" (COCO-format files) | "cityscapes_instances" (the download)
    c.data.name = "synthetic_instances"
    c.data.image_size = config_dict.placeholder(int)  # synthetic_instances: picture side
    # synthetic_instances: "standard" (128 px pictures, objects 8-60 px) | "large" (384-512 px
    # pictures, objects 64-300 px with thin parts and holes; data.image_size does not apply)
    c.data.variant = "standard"
    c.data.train_images = config_dict.placeholder(str)  # coco: image folder of the train json
    c.data.train_json = config_dict.placeholder(str)  # coco: COCO-format instances json
    c.data.val_images = config_dict.placeholder(str)  # coco: image folder of the val json
    c.data.val_json = config_dict.placeholder(str)  # coco: COCO-format val instances json
    # point supervision (detectron2's PointSup): the mask losses see this many labelled points
    # per training instance instead of its mask (0: full masks); evaluation uses the val masks
    c.data.point_supervision = 0
    # where the labelled points come from: "masks" (sampled once per instance from the train
    # masks by PointSup's rule) | "json" (PointSup's point_coords/point_labels in train_json)
    c.data.point_source = "masks"
    c.data.point_seed = 0  # point_source="masks": seed of the points sampled per instance
    # coco: train only on images with a non-crowd instance (detectron2's FILTER_EMPTY_ANNOTATIONS)
    c.data.filter_empty_annotations = True

    c.augment.crop_size = (1344, 1344)  # the fixed canvas every training image is padded to
    c.augment.short_side = (640, 672, 704, 736, 768, 800)
    c.augment.max_size = 1333
    c.augment.test_short_side = 800  # eval/predict resize of the short side (None: original)
    c.augment.max_instances = 100  # ground-truth instances per image (more: largest kept)

    c.model.backbone.freeze_at = 2
    # "pointrend" | "maskrcnn" (the 4-conv 28x28 baseline) | "implicit_pointrend" (Implicit
    # PointRend: a per-region MLP whose parameters a head predicts)
    c.model.mask_head = "pointrend"
    c.model.rpn = ml_collections.ConfigDict()
    c.model.rpn.anchor_sizes = (32, 64, 128, 256, 512)  # one per level p2..p6
    c.model.rpn.aspect_ratios = (0.5, 1.0, 2.0)  # anchor height / width
    c.model.rpn.pre_nms_topk_train = 2000  # proposals per FPN level before NMS (training)
    c.model.rpn.post_nms_topk_train = 1000  # proposals per image after NMS (training)
    c.model.rpn.pre_nms_topk_test = 1000  # proposals per FPN level before NMS (inference)
    c.model.rpn.post_nms_topk_test = 1000  # proposals per image after NMS (inference)
    c.model.rpn.nms_thresh = 0.7  # proposal NMS IoU
    c.model.rpn.batch_size_per_image = 256  # anchors sampled for the RPN losses
    c.model.rpn.positive_fraction = 0.5  # of which at most this share positive
    c.model.rpn.iou_thresholds = (0.3, 0.7)  # anchor IoU: below negative, above positive
    c.model.roi_heads = ml_collections.ConfigDict()
    c.model.roi_heads.batch_size_per_image = 512  # regions sampled per image (training)
    c.model.roi_heads.positive_fraction = 0.25  # of which at most this share foreground
    c.model.roi_heads.iou_threshold = 0.5  # region IoU with a ground truth to be foreground
    c.model.roi_heads.score_thresh_test = 0.05  # detections below this score are dropped
    c.model.roi_heads.nms_thresh_test = 0.5  # per-class NMS IoU of the detections
    c.model.roi_heads.detections_per_image = 100  # D: detections kept per image
    c.model.roi_heads.test_topk_candidates = 2000  # (box, class) pairs entering NMS
    c.model.roi_heads.box_pooler_side = 7  # ROIAlign output side of the box head
    # ROIAlign samples per bin side (box head, 28x28 head, mask targets); 0: detectron2's
    # adaptive ceil(bin side), up to max_sampling_ratio sample slots (each costs compute)
    c.model.roi_heads.sampling_ratio = 0
    c.model.roi_heads.max_sampling_ratio = 8  # sample slots per bin side with sampling_ratio 0
    c.model.roi_heads.box_fc_dim = 1024  # box head FC width
    c.model.roi_heads.box_num_fc = 2  # box head FC layers
    # mask head trained on the box head's regressed boxes (detectron2's TRAIN_ON_PRED_BOXES,
    # on in its PointRend configs; off: on the proposals, as plain Mask R-CNN)
    c.model.roi_heads.train_on_pred_boxes = True
    c.model.roi_heads.mask_conv_dim = 256  # mask head conv channels
    c.model.roi_heads.cls_agnostic_mask = False  # one mask channel shared by all classes
    c.model.roi_heads.mask_pooler_side = 14  # maskrcnn head: 14x14 ROIAlign -> 28x28 masks
    # pointrend: coarse head input; implicit_pointrend: the parameter head's
    c.model.roi_heads.coarse_mask_features = ("p2",)
    # pointrend: ROIAlign side of the coarse head; implicit_pointrend: the parameter head's
    c.model.roi_heads.coarse_mask_pooler_side = 14
    c.model.roi_heads.coarse_mask_side = 7  # pointrend: coarse mask side
    # pointrend: coarse head FC width; implicit_pointrend: the parameter head's
    c.model.roi_heads.coarse_mask_fc_dim = 1024
    c.model.roi_heads.coarse_mask_num_fc = 2  # pointrend (coarse), implicit_pointrend: head FCs
    # Implicit PointRend (detectron2's MODEL.IMPLICIT_POINTREND; its MLP has pointrend.num_fc
    # hidden layers of pointrend.fc_dim and sees pointrend.fine_features)
    c.model.implicit_pointrend = ml_collections.ConfigDict()
    c.model.implicit_pointrend.image_feature_enabled = True  # fine features enter the MLP
    c.model.implicit_pointrend.pos_enc_enabled = True  # the points' Fourier features enter it
    # weight of loss_l2, the mean squared predicted MLP parameter
    c.model.implicit_pointrend.params_l2_regularizer = 1e-5

    c.pointrend.fine_features = ("p2",)
    c.pointrend.train_num_points = 14 * 14  # per box
    # 7 -> 224; implicit_pointrend: sqrt(subdivision_num_points) * 2**steps (its recipe: 3)
    c.pointrend.subdivision_steps = 5
    c.pointrend.subdivision_num_points = 28 * 28

    c.loss.mask_weight = 1.0  # weight of loss_mask (the coarse or 28x28 mask loss)
    c.loss.mask_point_weight = 1.0  # weight of loss_mask_point (both PointRends' point loss)

    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.02
    c.optimizer.schedule = "steps"
    c.optimizer.decay_steps = (60000, 80000)
    c.optimizer.weight_decay_bias = 1e-4  # detectron2's WEIGHT_DECAY_BIAS default: = weight_decay
    c.optimizer.warmup_steps = 1000
    c.train.batch_size = 16
    c.train.num_steps = 90000
    c.train.checkpoint_every = 5000
    c.train.image_summary_every = 5000
    c.eval.boundary_ap = True  # also Boundary AP (slower: boundaries of every mask)
    c.eval.example_score_thresh = 0.5  # detections drawn in eval/examples/*.png
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
    # a fixed 2 samples per bin side: adaptive sampling pays for its 8 slots on every region
    c.model.roi_heads.sampling_ratio = 2
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
    c.optimizer.weight_decay_bias = 0.0
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.train.batch_size = 8
    c.train.num_steps = 2000
    c.train.log_every = 25
    c.train.checkpoint_every = 1000
    c.train.image_summary_every = 1000
    return c


def instance_large(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`instance_cpu_sized` on the large synthetic variant (384-512 px pictures, objects
    64-300 px with holes and thin parts): a 512x512 canvas (batch 8), anchors 32..512 px, at
    most 16 detections (2-6 objects a picture), pictures evaluated at their own size."""
    c.data.variant = "large"
    c.augment.crop_size = (512, 512)
    c.augment.max_instances = 8
    c.model.rpn.anchor_sizes = (32, 64, 128, 256, 512)
    c.model.roi_heads.detections_per_image = 16
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


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the `--config.` key of the first inconsistent setting."""
    config_lib.validate_shared(config)
    config_lib.choice("data.name", config.data.name, DATASETS)
    config_lib.choice("model.mask_head", config.model.mask_head, MASK_HEADS)
    config_lib.choice("data.variant", config.data.variant, SYNTHETIC_INSTANCE_VARIANTS)
    _validate_point_supervision(config)
    rpn, roi = config.model.rpn, config.model.roi_heads
    config_lib.check_positive({
        "augment.max_instances": config.augment.max_instances,
        "model.rpn.pre_nms_topk_train": rpn.pre_nms_topk_train,
        "model.rpn.post_nms_topk_train": rpn.post_nms_topk_train,
        "model.rpn.pre_nms_topk_test": rpn.pre_nms_topk_test,
        "model.rpn.post_nms_topk_test": rpn.post_nms_topk_test,
        "model.rpn.batch_size_per_image": rpn.batch_size_per_image,
        "model.roi_heads.batch_size_per_image": roi.batch_size_per_image,
        "model.roi_heads.detections_per_image": roi.detections_per_image,
        "model.roi_heads.test_topk_candidates": roi.test_topk_candidates,
        "model.roi_heads.max_sampling_ratio": roi.get("max_sampling_ratio", 8),
    })
    if not (isinstance(roi.sampling_ratio, int) and roi.sampling_ratio >= 0):
        raise ValueError(f"--config.model.roi_heads.sampling_ratio={roi.sampling_ratio!r} must be "
                         "an int >= 1 (samples per bin side) or 0 (adaptive)")
    if len(rpn.anchor_sizes) != 5:
        raise ValueError(f"--config.model.rpn.anchor_sizes={tuple(rpn.anchor_sizes)} needs one "
                         "size per FPN level p2..p6 (5 values)")
    config_lib.check_fraction("model.rpn.positive_fraction", rpn.positive_fraction)
    config_lib.check_fraction("model.roi_heads.positive_fraction", roi.positive_fraction)
    if int(roi.batch_size_per_image * roi.positive_fraction) < 1:
        raise ValueError("--config.model.roi_heads.batch_size_per_image * positive_fraction must "
                         "allow at least one foreground region")
    if config.model.mask_head == "implicit_pointrend":
        _validate_implicit(config)
    if config.eval.size_divisor % 32:
        raise ValueError(f"--config.eval.size_divisor={config.eval.size_divisor} must be a "
                         "multiple of 32 (the backbone's stride)")


def _validate_point_supervision(config: ml_collections.ConfigDict) -> None:
    """The `data.point_*` keys: a count >= 0, a known source, and a json that can carry
    them (every mask head learns from points)."""
    data = config.data
    if not isinstance(data.point_supervision, int) or data.point_supervision < 0:
        raise ValueError(f"--config.data.point_supervision={data.point_supervision!r} must be an "
                         "int >= 0 (labelled points per instance; 0: train on full masks)")
    config_lib.choice("data.point_source", data.point_source, POINT_SOURCES)
    if not data.point_supervision:
        return
    if data.point_source == "json" and data.name != "coco":
        raise ValueError(f"--config.data.point_source='json' reads point labels from "
                         f"--config.data.train_json (data.name='coco'); {data.name!r} has none: "
                         "use --config.data.point_source=masks")


def _validate_implicit(config: ml_collections.ConfigDict) -> None:
    """The keys `model.mask_head="implicit_pointrend"` reads, as detectron2 checks them."""
    implicit, point = config.model.implicit_pointrend, config.pointrend
    head = "with --config.model.mask_head=implicit_pointrend"
    num_points = point.subdivision_num_points
    if math.isqrt(num_points) ** 2 != num_points:
        raise ValueError(f"--config.pointrend.subdivision_num_points={num_points} must be a "
                         f"square {head}: its masks start on a sqrt(N) x sqrt(N) grid "
                         "(e.g. 196 or 784)")
    if point.num_fc < 1:
        raise ValueError(f"--config.pointrend.num_fc={point.num_fc} must be >= 1 {head} "
                         "(its MLP has num_fc hidden layers and a predictor)")
    config_lib.check_positive({"pointrend.fc_dim": point.fc_dim})
    if not (implicit.image_feature_enabled or implicit.pos_enc_enabled):
        raise ValueError("--config.model.implicit_pointrend.image_feature_enabled and "
                         "pos_enc_enabled are both False: the MLP would have no input")
    if implicit.params_l2_regularizer < 0:
        raise ValueError("--config.model.implicit_pointrend.params_l2_regularizer must be >= 0; "
                         f"got {implicit.params_l2_regularizer}")
    if point.activation != "relu":
        raise ValueError(f"--config.pointrend.activation={point.activation!r}: {head} the "
                         "MLP uses ReLU, as detectron2's ImplicitPointHead")
