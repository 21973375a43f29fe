"""PointRend on top of a segmentation network, and the networks this project ships.

N: images, H x W: image size, h x w: coarse logit size, K: classes, P: points.

`PointRendSegmenter` wraps any linen module `net` whose `__call__(images, train=...)`
returns `(features, coarse_logits)`: a mapping of named feature maps `(N, hf, wf, C)` and
coarse logits `(N, h, w, K)`. `predict(images, image_sizes)` passes `image_sizes (N, 2)` (the
(h, w) of each image's content in a padded batch) on to `net` as a keyword when it is given,
so a net that pads like detectron2 (`SemanticSegmentationNet`) takes it. It adds point
training (uncertain points, the point head) and subdivision inference; with `enabled=False`
it is the plain coarse model.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.models.deeplabv3 import DeepLabV3Head
from pointrend_jax.models.fpn import FPN
from pointrend_jax.models.layers import IMAGENET_MEAN, IMAGENET_STD, compute_dtype, normalize_images
from pointrend_jax.models.resnet import ResNet
from pointrend_jax.models.semantic_fpn import SemanticFPNHead
from pointrend_jax.point_head import PointHead
from pointrend_jax.point_ops import point_sample, resize_bilinear, sample_training_points
from pointrend_jax.subdivision import sample_fine_features, subdivision_inference

Array = jax.Array
COARSE_HEADS = ("semantic_fpn", "deeplabv3")


class SemanticSegmentationNet(nn.Module):
    """ResNet backbone + coarse head: `images (N, H, W, 3)` (uint8 or float, 0..255 RGB)
    -> `(features {"res2".."res5"[, "p2".."p5"]}, coarse_logits (N, h, w, K))`.

    `head="semantic_fpn"`: FPN + detectron2's SemSegFPNHead, logits at stride 4.
    `head="deeplabv3"`: ASPP on res5, logits at the backbone's output stride.
    `image_sizes (N, 2)`: the (h, w) of each image's content; outside it the normalised
    pixels are 0, detectron2's padding (None: all of the image is content).
    """

    num_classes: int
    head: str = "semantic_fpn"
    depth: int = 50
    width: int = 64
    backbone_norm: str = "frozen_bn"
    output_stride: int = 32
    stride_in_1x1: bool = False
    num_groups: int = 1
    width_per_group: int = 64
    fpn_channels: int = 256
    head_channels: int = 128
    head_norm: str = "gn"
    dropout: float = 0.1
    aspp_dilations: Sequence[int] = (6, 12, 18)
    pixel_mean: Sequence[float] = IMAGENET_MEAN
    pixel_std: Sequence[float] = IMAGENET_STD
    dtype: Any = jnp.float32
    remat: bool = False  # rematerialise the backbone's blocks (`ResNet.remat`)

    @nn.compact
    def __call__(self, images: Array, train: bool = False, image_sizes: Optional[Array] = None):
        if self.head not in COARSE_HEADS:
            raise ValueError(f"model.head must be one of {COARSE_HEADS}; got {self.head!r}")
        x = normalize_images(images, self.pixel_mean, self.pixel_std, self.dtype, image_sizes)
        features = ResNet(depth=self.depth, width=self.width, norm=self.backbone_norm,
                          output_stride=self.output_stride, stride_in_1x1=self.stride_in_1x1,
                          num_groups=self.num_groups, width_per_group=self.width_per_group,
                          dtype=self.dtype, remat=self.remat, name="backbone")(x, train)
        if self.head == "semantic_fpn":
            pyramid = FPN(self.fpn_channels, dtype=self.dtype, name="fpn")(features)
            features = {**features, **pyramid}
            logits = SemanticFPNHead(self.num_classes, conv_dims=self.head_channels,
                                     norm=self.head_norm, dtype=self.dtype,
                                     name="sem_seg_head")(pyramid)
        else:
            logits = DeepLabV3Head(self.num_classes, conv_dims=self.head_channels,
                                   dilations=tuple(self.aspp_dilations), norm=self.head_norm,
                                   dropout=self.dropout, dtype=self.dtype,
                                   name="sem_seg_head")(features, train)
        return features, logits


class PointRendSegmenter(nn.Module):
    """PointRend around `net` (see the module docstring for its contract).

    Training, `__call__(images, train=True)` (needs a `"points"` rng) ->
      `{"coarse_logits" (N, h, w, K), "point_coords" (N, P, 2), "point_logits" (N, P, K)}`
      (the point entries only when `enabled`).
    Inference, `predict(images, image_sizes=None)` (see the module docstring for
      `image_sizes`) -> `{"coarse" (N, H, W, K): coarse logits resized to the
      image, "logits" (N, H, W, K): PointRend's (the coarse ones when not enabled),
      "points": [(N, P_s, 2)] cell centres chosen at each subdivision step}`.

    `upsample_coarse_first` (a practitioner's variant, docs/design.md): when the coarse logits are smaller
    than the first fine map, first resize them to it (bilinear); point features and the
    subdivision then start from that map, with correspondingly fewer steps (same output size).
    """

    net: nn.Module
    num_classes: int
    fine_features: Sequence[str] = ("p2",)
    enabled: bool = True
    num_fc: int = 3
    fc_dim: int = 256
    coarse_pred_each_layer: bool = True
    activation: str = "relu"
    train_num_points: int = 2048
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    subdivision_steps: int = 2
    subdivision_num_points: int = 8192
    subdivision_recall: float = 1.0  # < 1: approximate top-k (`uncertain_grid_points`)
    upsample_coarse_first: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        if self.enabled:
            self.point_head = PointHead(
                self.num_classes, num_fc=self.num_fc, fc_dim=self.fc_dim,
                coarse_pred_each_layer=self.coarse_pred_each_layer, activation=self.activation,
                dtype=self.dtype)

    def _forward(self, images: Array, train: bool, image_sizes: Optional[Array] = None):
        sizes = {} if image_sizes is None else {"image_sizes": image_sizes}
        features, coarse = self.net(images, train=train, **sizes)
        if coarse.ndim != 4 or coarse.shape[-1] != self.num_classes:
            raise ValueError(
                f"the network's coarse logits must be (N, h, w, {self.num_classes}); "
                f"got shape {coarse.shape}")
        if not self.enabled:
            return coarse, coarse, []
        missing = [name for name in self.fine_features if name not in features]
        if missing:
            raise ValueError(
                f"pointrend.fine_features {list(self.fine_features)}: the network returns no "
                f"{missing}; it has {sorted(features)}")
        fine = [features[name] for name in self.fine_features]
        start = coarse.astype(jnp.float32)
        if self.upsample_coarse_first and start.shape[1] < fine[0].shape[1]:
            start = resize_bilinear(start, fine[0].shape[1:3])
        return coarse, start, fine

    def __call__(self, images: Array, train: bool = False) -> Mapping[str, Array]:
        coarse, start, fine = self._forward(images, train)
        out = {"coarse_logits": coarse}
        if self.enabled:
            coords = sample_training_points(
                self.make_rng("points"), start, self.train_num_points,
                oversample_ratio=self.oversample_ratio,
                importance_sample_ratio=self.importance_sample_ratio)
            out["point_coords"] = coords
            out["point_logits"] = self.point_head(sample_fine_features(fine, coords),
                                                  point_sample(start, coords))
        return out

    def _steps_from(self, coarse, start) -> int:
        """Subdivision steps from `start`: when it was already upsampled by 2^u, u fewer, so
        the output has the resolution `subdivision_steps` gives without the trick."""
        upsampled = max(0, int(np.log2(start.shape[1] // coarse.shape[1])))
        return max(0, self.subdivision_steps - upsampled)

    def predict(self, images: Array, image_sizes: Optional[Array] = None) -> Mapping[str, Any]:
        coarse, start, fine = self._forward(images, train=False, image_sizes=image_sizes)
        size = images.shape[1:3]
        out = {"coarse": resize_bilinear(coarse.astype(jnp.float32), size), "points": []}
        if not self.enabled:
            out["logits"] = out["coarse"]
            return out
        refined, points = subdivision_inference(
            start, fine, lambda f, c: self.point_head(f, c).astype(jnp.float32),
            num_steps=self._steps_from(coarse, start), num_points=self.subdivision_num_points,
            recall_target=self.subdivision_recall, return_points=True)
        out["logits"] = resize_bilinear(refined, size)
        out["points"] = points
        return out


def build_model(model_cfg, pointrend_cfg, num_classes: int) -> PointRendSegmenter:
    """The model a config describes (`config.model`, `config.pointrend`)."""
    dtype = compute_dtype(model_cfg.dtype)
    backbone = model_cfg.backbone
    net = SemanticSegmentationNet(
        num_classes=num_classes, head=model_cfg.head, depth=backbone.depth,
        width=backbone.width, backbone_norm=backbone.norm, output_stride=backbone.output_stride,
        stride_in_1x1=backbone.stride_in_1x1,
        # .get: the config.json of runs from before ResNeXt has no grouping keys
        num_groups=backbone.get("num_groups", 1),
        width_per_group=backbone.get("width_per_group", 64), fpn_channels=model_cfg.fpn_channels,
        head_channels=model_cfg.head_channels, head_norm=model_cfg.head_norm,
        dropout=model_cfg.dropout, aspp_dilations=tuple(model_cfg.aspp_dilations),
        pixel_mean=tuple(model_cfg.pixel_mean),
        pixel_std=tuple(model_cfg.pixel_std), dtype=dtype,
        # .get: the config.json of runs from before the option has no remat
        remat=backbone.get("remat", False))
    p = pointrend_cfg
    return PointRendSegmenter(
        net=net, num_classes=num_classes, fine_features=tuple(p.fine_features),
        enabled=p.enabled, num_fc=p.num_fc, fc_dim=p.fc_dim,
        coarse_pred_each_layer=p.coarse_pred_each_layer, activation=p.activation,
        train_num_points=p.train_num_points, oversample_ratio=p.oversample_ratio,
        importance_sample_ratio=p.importance_sample_ratio,
        subdivision_steps=p.subdivision_steps, subdivision_num_points=p.subdivision_num_points,
        # .get: the config.json of runs from before the option has no subdivision_recall
        subdivision_recall=p.get("subdivision_recall", 1.0),
        upsample_coarse_first=p.upsample_coarse_first, dtype=dtype)
