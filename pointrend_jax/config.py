"""Experiment configuration: the keys every task reads, and the checks they share.

Each task adds its own keys (`semantic/config.py`, `instance/config.py`); a config holds
only keys its task reads, so a key of the other task is refused when it is set (the
command line names the key and says what to use instead). Every key has a one-line
comment. Files under `configs/` start from a task's default config and change what their
experiment needs; `get_config("runlocal")` in each shrinks the same experiment to a
seconds-long smoke run.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Iterator, Tuple

import ml_collections
from etils import epath
from ml_collections import config_dict

from pointrend_jax.models.layers import IMAGENET_MEAN, IMAGENET_STD
from pointrend_jax.point_ops import check_recall_target


def base_config() -> ml_collections.ConfigDict:
    """The keys both tasks read, with their defaults."""
    c = ml_collections.ConfigDict()
    c.task = "semantic"  # which task trains: "semantic" | "instance"
    c.seed = 0  # model init, point sampling, data order and augmentation

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # the data set (each task lists the ones it reads)
    c.data.data_dir = config_dict.placeholder(str)  # where prepared data goes (None: tfds default)
    # the folder an official download was extracted into (cityscapes/ade20k/voc/coco)
    c.data.manual_dir = config_dict.placeholder(str)
    c.data.num_train = config_dict.placeholder(int)  # synthetic: train examples (None: default)
    c.data.num_val = config_dict.placeholder(int)  # synthetic: val examples (None: default)
    c.data.num_classes = config_dict.placeholder(int)  # a check of the data's class count

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_size = (128, 128)  # (h, w) of every training example, multiples of 32
    c.augment.min_scale = 0.75  # random resize factor range (when short_side is empty)
    c.augment.max_scale = 1.5  # upper end of the random resize factor
    c.augment.flip = True  # horizontal flip with probability 0.5
    # detectron2's ResizeShortestEdge: short side drawn from these lengths (replaces
    # min_scale/max_scale when not empty)
    c.augment.short_side = ()
    c.augment.max_size = config_dict.placeholder(int)  # long-side cap of short_side (None: none)

    c.model = ml_collections.ConfigDict()
    c.model.backbone = ml_collections.ConfigDict()
    c.model.backbone.depth = 50  # ResNet depth: 18 | 34 | 50 | 101 | 152
    c.model.backbone.width = 64  # base channels (64 = standard ResNet)
    c.model.backbone.norm = "frozen_bn"  # "frozen_bn" (detectron2) | "bn" | "gn"
    c.model.backbone.stride_in_1x1 = False  # stride in the bottleneck's 1x1 (MSRA/caffe2 weights)
    c.model.backbone.num_groups = 1  # ResNeXt: groups of the bottleneck's 3x3 conv (1: ResNet)
    c.model.backbone.width_per_group = 64  # ResNeXt: 3x3 channels per group at res2, width 64
    c.model.backbone.freeze_at = 0  # 1: stem fixed, 2: stem and res2 fixed (detectron2: 2)
    # converted ImageNet weights (python -m pointrend_jax.convert SRC DST): DST, or None
    c.model.backbone.pretrained = config_dict.placeholder(str)
    # recompute each ResNet block's activations in the backward pass (less memory, more compute)
    c.model.backbone.remat = False
    c.model.fpn_channels = 256  # FPN output channels
    c.model.pixel_mean = IMAGENET_MEAN  # RGB mean subtracted from 0..255 pixels
    c.model.pixel_std = IMAGENET_STD  # RGB std the pixels are divided by
    c.model.dtype = "float32"  # compute dtype: "float32" | "bfloat16" (params stay float32)

    c.pointrend = ml_collections.ConfigDict()
    c.pointrend.fine_features = ("p2",)  # feature maps sampled for the point head
    c.pointrend.num_fc = 3  # point head layers (1x1 convolutions over points)
    c.pointrend.fc_dim = 256  # point head channels
    c.pointrend.coarse_pred_each_layer = True  # coarse prediction fed to every layer
    c.pointrend.activation = "relu"  # point head activation: "relu" | "elu"
    c.pointrend.train_num_points = 2048  # N training points (per image or per box)
    c.pointrend.oversample_ratio = 3.0  # k: candidates drawn per training point
    c.pointrend.importance_sample_ratio = 0.75  # beta: share of points at the most uncertain
    c.pointrend.subdivision_steps = 2  # inference: upsampling x2 steps
    c.pointrend.subdivision_num_points = 8192  # inference: points re-predicted per step
    # inference: recall target of picking those points (1.0: exact lax.top_k; below 1:
    # lax.approx_max_k, faster on TPU, exact on CPU/GPU)
    c.pointrend.subdivision_recall = 1.0

    c.loss = ml_collections.ConfigDict()  # loss weights; each task names its own

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # "sgd" (momentum) | "adamw"
    c.optimizer.learning_rate = 0.01  # peak learning rate
    c.optimizer.momentum = 0.9  # sgd momentum
    c.optimizer.nesterov = False  # sgd: Nesterov momentum
    c.optimizer.b1 = 0.9  # adamw first-moment decay
    c.optimizer.b2 = 0.999  # adamw second-moment decay
    c.optimizer.weight_decay = 1e-4  # on kernels (never on norm parameters)
    c.optimizer.weight_decay_bias = 0.0  # on conv/dense biases (detectron2's WEIGHT_DECAY_BIAS)
    c.optimizer.schedule = "poly"  # "poly" | "steps" | "cosine" | "constant"
    c.optimizer.poly_power = 0.9  # "poly": (1 - step / num_steps) ** poly_power
    c.optimizer.decay_steps = ()  # "steps": multiply by decay_factor at these steps
    c.optimizer.decay_factor = 0.1  # "steps": the factor
    c.optimizer.warmup_steps = 100  # linear warm-up from warmup_factor * lr
    c.optimizer.warmup_factor = 0.001  # learning-rate factor at step 0
    c.optimizer.clip_grad_norm = config_dict.placeholder(float)  # global-norm clip (None: none)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.fsdp = 1  # devices that split params/optimizer state (1: data parallel; -1: all)
    c.mesh.fsdp_min_size = 2**14  # arrays smaller than this (elements) stay replicated

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 16  # global, over all devices and processes
    c.train.num_steps = 1000  # optimizer steps
    c.train.log_every = 20  # steps between metrics.jsonl / TensorBoard scalars
    c.train.checkpoint_every = 1000  # steps between checkpoints
    c.train.max_to_keep = 3  # checkpoints kept
    c.train.image_summary_every = 1000  # steps between TensorBoard example pictures (0: off)
    c.train.max_nonfinite_steps = 10  # stop after this many skipped (NaN/inf) steps in a row

    c.eval = ml_collections.ConfigDict()
    c.eval.step = config_dict.placeholder(int)  # checkpoint to evaluate (None: the latest)
    c.eval.size_divisor = 32  # images are padded to a multiple of this (then cropped back)
    c.eval.num_examples = 4  # PNGs under eval/examples/
    c.eval.save_predictions = False  # also write every prediction under eval/
    c.eval.max_images = config_dict.placeholder(int)  # val images over all processes (None: all)
    return c


def flat_keys(config, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """`("a.b.c", value)` for every leaf of a (nested) ConfigDict or dict."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)) and len(value):
            yield from flat_keys(value, name + ".")
        else:
            yield name, value


def load_config(path_and_arg: str) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file given as on the command line: `FILE[:ARG]`."""
    path, _, arg = str(path_and_arg).partition(":")
    if not epath.Path(path).exists():
        raise FileNotFoundError(f"--config={path_and_arg}: no such config file {path}")
    spec = importlib.util.spec_from_file_location(epath.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def choice(name: str, value, choices) -> None:
    """ValueError naming `--config.<name>` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"--config.{name}={value!r} is not one of {list(choices)}")


def check_positive(values) -> None:
    """ValueError naming the first `--config.<key>` of `{key: value}` below 1."""
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"--config.{key} must be >= 1; got {value}")


def check_fraction(key: str, value) -> None:
    """ValueError naming `--config.<key>` unless `value` is in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--config.{key} must be in [0, 1]; got {value}")


def _check_grouping(backbone: ml_collections.ConfigDict) -> None:
    """ResNeXt's `num_groups`/`width_per_group`: positive, bottleneck depths only, and at
    least one channel per group at res2."""
    check_positive({"model.backbone.num_groups": backbone.num_groups,
                    "model.backbone.width_per_group": backbone.width_per_group})
    if (backbone.num_groups, backbone.width_per_group) != (1, 64) and backbone.depth < 50:
        raise ValueError(
            f"--config.model.backbone.num_groups={backbone.num_groups} / width_per_group="
            f"{backbone.width_per_group} (ResNeXt) needs a bottleneck depth (50, 101, 152); "
            f"--config.model.backbone.depth is {backbone.depth}")
    if backbone.width * backbone.width_per_group < 64:
        raise ValueError(
            f"--config.model.backbone.width_per_group={backbone.width_per_group} leaves res2's "
            f"groups no channels at --config.model.backbone.width={backbone.width} "
            "(width * width_per_group must be >= 64)")


def validate_shared(config: ml_collections.ConfigDict) -> None:
    """The checks of the keys every task reads."""
    choice("model.dtype", config.model.dtype, ("float32", "bfloat16"))
    choice("model.backbone.depth", config.model.backbone.depth, (18, 34, 50, 101, 152))
    choice("model.backbone.norm", config.model.backbone.norm, ("frozen_bn", "bn", "gn"))
    choice("model.backbone.freeze_at", config.model.backbone.freeze_at, (0, 1, 2))
    choice("model.backbone.remat", config.model.backbone.remat, (False, True))
    _check_grouping(config.model.backbone)
    choice("pointrend.activation", config.pointrend.activation, ("relu", "elu"))
    choice("optimizer.name", config.optimizer.name, ("sgd", "adamw"))
    choice("optimizer.schedule", config.optimizer.schedule, ("poly", "steps", "cosine", "constant"))
    check_positive({
        "train.batch_size": config.train.batch_size, "train.num_steps": config.train.num_steps,
        "train.log_every": config.train.log_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "train.max_nonfinite_steps": config.train.max_nonfinite_steps,
        "pointrend.train_num_points": config.pointrend.train_num_points,
        "pointrend.subdivision_num_points": config.pointrend.subdivision_num_points,
        "eval.size_divisor": config.eval.size_divisor,
    })
    check_fraction("pointrend.importance_sample_ratio", config.pointrend.importance_sample_ratio)
    check_recall_target(config.pointrend.subdivision_recall, "--config.pointrend.subdivision_recall")
    for key in ("weight_decay", "weight_decay_bias"):
        if config.optimizer[key] < 0:
            raise ValueError(f"--config.optimizer.{key} must be >= 0; got {config.optimizer[key]}")
    if config.pointrend.subdivision_steps < 0:
        raise ValueError(f"--config.pointrend.subdivision_steps must be >= 0; got "
                         f"{config.pointrend.subdivision_steps}")
    if config.pointrend.oversample_ratio < 1.0:
        raise ValueError("--config.pointrend.oversample_ratio must be >= 1; got "
                         f"{config.pointrend.oversample_ratio}")
    crop_h, crop_w = config.augment.crop_size
    if crop_h % 32 or crop_w % 32:
        raise ValueError(f"--config.augment.crop_size={tuple(config.augment.crop_size)} must be "
                         "multiples of 32 (the backbone's stride)")
