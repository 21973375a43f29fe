"""Implicit PointRend's mask head (Cheng, Kirillov et al., "Pointly-Supervised Instance
Segmentation", CVPR 2022), as detectron2's `ImplicitPointRendMaskHead` with its
`ImplicitPointHead`: no coarse mask; a parameter head predicts, for each region, the weights
and biases of a small MLP that maps a point's features to its mask logits.

Shapes and boxes as in `mask_head` (N images, R regions per image, P points per region, C
fine-feature channels, K classes, M mask channels: K, or 1 with `cls_agnostic_mask`; points
`(x, y)` box-relative in [0, 1]). The interface is the other heads' (see `mask_head`):
`losses(...)` -> `{"loss_mask_point", "loss_l2"}` and `predict(...)` -> `{"masks" (N, R, S, S),
"coarse_masks" (N, R, s, s): the first, regular-grid prediction, "points"}`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.models.mask_head import (CoarseMaskHead, PointTargets, _class_channel,
                                            point_label_loss, points_in_image, regular_grid,
                                            sample_feature_maps, sample_instance_masks)
from pointrend_jax.subdivision import subdivide

Array = jax.Array
FOURIER_FEATURES = 128  # Gaussian directions of the positional encoding: sin and cos of each


def fourier_features(rel: Array, gaussian: Array) -> Array:
    """The positional encoding of box-relative points `rel (B, P, 2)`: `[sin(v), cos(v)]` of
    `v = 2 pi (2 rel - 1) @ gaussian` for the fixed `gaussian (2, F)` -> `(B, P, 2F)`."""
    v = 2.0 * np.pi * ((2.0 * rel - 1.0) @ gaussian)
    return jnp.concatenate([jnp.sin(v), jnp.cos(v)], axis=-1)


def _feature_maps(features: Mapping[str, Array], names: Sequence[str]):
    """The maps `names` ("p2", ...) of `features` and their strides (2 ** level)."""
    missing = [k for k in names if k not in features]
    if missing:
        raise ValueError(f"ImplicitPointRendMaskHead: no feature maps {missing}; have "
                         f"{sorted(features)}")
    return [features[k] for k in names], [2 ** int(k[1:]) for k in names]


class ImplicitPointHead(nn.Module):
    """detectron2's ImplicitPointHead: an MLP of `num_fc + 1` layers (`fc_dim` wide, ReLU
    between them, M outputs) whose weights are an input, one set per region.

    `__call__(fine (B, P, C) or None, rel (B, P, 2), params (B, num_params)) -> (B, P, M)`.
    A point's input is the concatenation of its positional encoding (`fourier_features` with
    the fixed Gaussian matrix `positional_encoding_gaussian_matrix (2, 128)`, drawn once at
    initialisation and kept in the "batch_stats" collection: checkpointed, never trained) and
    its `fine_channels` fine-grained features, either of them off by `positional_encoding` /
    `image_features`. `params` holds detectron2's layout: every layer's weight `(out, in)`
    row-major, layer by layer, then every layer's bias.
    """

    num_classes: int  # M
    fine_channels: int  # C
    num_fc: int = 3
    fc_dim: int = 256
    image_features: bool = True
    positional_encoding: bool = True
    dtype: Any = jnp.float32

    @property
    def in_channels(self) -> int:
        """Inputs of the first layer: 2 x 128 encoding channels and/or C features."""
        return ((2 * FOURIER_FEATURES if self.positional_encoding else 0)
                + (self.fine_channels if self.image_features else 0))

    @property
    def layer_shapes(self) -> Tuple[Tuple[int, int], ...]:
        """`(out, in)` of each layer."""
        dims = [self.in_channels] + [self.fc_dim] * self.num_fc + [self.num_classes]
        return tuple((dims[i + 1], dims[i]) for i in range(len(dims) - 1))

    @property
    def num_params(self) -> int:
        """Weights and biases of the MLP: what the parameter head predicts per region."""
        return sum(o * i + o for o, i in self.layer_shapes)

    def _check(self, fine, params):
        if self.num_fc < 1 or self.in_channels < 1:
            raise ValueError(f"ImplicitPointHead needs num_fc >= 1 (got {self.num_fc}) and the "
                             "positional encoding or the image features (or both)")
        if params.shape[-1] != self.num_params:
            raise ValueError(f"ImplicitPointHead: params have {params.shape[-1]} values per "
                             f"region, the MLP {self.layer_shapes} needs {self.num_params}")
        if self.image_features and (fine is None or fine.shape[-1] != self.fine_channels):
            got = None if fine is None else tuple(fine.shape)
            raise ValueError(f"ImplicitPointHead: fine features (B, P, {self.fine_channels}) "
                             f"expected, got {got}")

    @nn.compact
    def __call__(self, fine: Optional[Array], rel: Array, params: Array) -> Array:
        self._check(fine, params)
        parts = []
        if self.positional_encoding:
            gaussian = self.variable(
                "batch_stats", "positional_encoding_gaussian_matrix",
                lambda: jax.random.normal(self.make_rng("params"), (2, FOURIER_FEATURES)))
            parts.append(fourier_features(rel.astype(jnp.float32), gaussian.value))
        if self.image_features:
            parts.append(fine)
        x = jnp.concatenate([p.astype(self.dtype) for p in parts], axis=-1)
        shapes = self.layer_shapes
        sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
        pieces = jnp.split(params.astype(self.dtype), np.cumsum(sizes)[:-1].tolist(), axis=-1)
        for layer, (o, i) in enumerate(shapes):
            weight = pieces[layer].reshape(-1, o, i)
            x = jnp.einsum("bpi,boi->bpo", x, weight) + pieces[len(shapes) + layer][:, None, :]
            if layer < len(shapes) - 1:
                x = nn.relu(x)
        return x


class ImplicitPointRendMaskHead(nn.Module):
    """Implicit PointRend's mask head (detectron2 `ImplicitPointRendMaskHead`).

    Parameters: `parameter_features` sampled on a `pooler_side` x `pooler_side` regular grid
    in each box (detectron2's `_roi_pooler`, as PointRend's coarse head) -> detectron2's
    ConvFCHead (`conv_dim`, `parameter_num_fc` FC of `parameter_fc_dim`) predicting the
    `ImplicitPointHead.num_params` values of the region's MLP. Training: `train_num_points`
    points drawn uniformly in each box, labels bilinear on the full-image ground-truth mask
    (or, given `point_targets`, the labelled points of point supervision); `loss_mask_point`
    is their sigmoid cross-entropy on the ground-truth class, `loss_l2` `params_l2_weight`
    times the mean squared predicted parameter of the valid regions. Inference: the MLP on a
    `sqrt(subdivision_num_points)` regular grid, then `subdivision_steps` times: upsample 2x,
    re-predict the `subdivision_num_points` most uncertain cells of the predicted class
    -> `sqrt(subdivision_num_points) * 2**subdivision_steps` square masks (28 -> 224).
    """

    num_classes: int
    parameter_features: Tuple[str, ...] = ("p2",)
    fine_features: Tuple[str, ...] = ("p2",)
    fine_channels: int = 256  # C: channels of the fine_features maps together
    pooler_side: int = 14
    conv_dim: int = 256
    parameter_fc_dim: int = 1024
    parameter_num_fc: int = 2
    num_fc: int = 3
    fc_dim: int = 256
    image_features: bool = True
    positional_encoding: bool = True
    params_l2_weight: float = 1e-5
    train_num_points: int = 196
    subdivision_steps: int = 3
    subdivision_num_points: int = 784
    subdivision_recall: float = 1.0  # < 1: approximate top-k (`uncertain_grid_points`)
    cls_agnostic_mask: bool = False
    dtype: Any = jnp.float32

    @property
    def init_side(self) -> int:
        """Side of the first, regular prediction grid: sqrt(subdivision_num_points)."""
        side = math.isqrt(self.subdivision_num_points)
        if side * side != self.subdivision_num_points:
            raise ValueError(f"ImplicitPointRendMaskHead: subdivision_num_points="
                             f"{self.subdivision_num_points} must be a square (the first "
                             "prediction is on a sqrt(N) x sqrt(N) grid)")
        return side

    @property
    def output_side(self) -> int:
        """Side S of the predicted `(S, S)` masks."""
        return self.init_side * 2 ** self.subdivision_steps

    @property
    def mask_channels(self) -> int:
        """M: mask logits per region (1 when class-agnostic, else K)."""
        return 1 if self.cls_agnostic_mask else self.num_classes

    def setup(self):
        self.point_head = ImplicitPointHead(
            self.mask_channels, self.fine_channels, num_fc=self.num_fc, fc_dim=self.fc_dim,
            image_features=self.image_features, positional_encoding=self.positional_encoding,
            dtype=self.dtype)
        # detectron2's ConvFCHead with output_shape (num_params,): one "pixel" of num_params
        self.parameter_head = CoarseMaskHead(
            self.point_head.num_params, conv_dim=self.conv_dim, fc_dim=self.parameter_fc_dim,
            num_fc=self.parameter_num_fc, side=1, dtype=self.dtype)

    def mlp_params(self, features: Mapping[str, Array], boxes: Array) -> Array:
        """`(N, R, num_params)` MLP parameters of `boxes (N, R, 4)`, from the features
        `(N, R, pooler_side, pooler_side, C)` sampled on the grid in each box."""
        maps, strides = _feature_maps(features, self.parameter_features)
        n, r, _ = boxes.shape
        side = self.pooler_side
        grid = jnp.broadcast_to(regular_grid(side), (n, r, side * side, 2))
        pooled = sample_feature_maps(maps, strides, points_in_image(boxes, grid))
        pooled = pooled.reshape(n, r, side, side, -1)
        return self.parameter_head(pooled).reshape(n, r, -1)

    def point_logits(self, features: Mapping[str, Array], boxes: Array, rel: Array,
                     params: Array) -> Array:
        """MLP logits `(N, R, P, M)` at box-relative points `rel (N, R, P, 2)` of `boxes`,
        with each region's `params (N, R, num_params)`."""
        n, r, p, _ = rel.shape
        fine = None
        if self.image_features:
            maps, strides = _feature_maps(features, self.fine_features)
            fine = sample_feature_maps(maps, strides, points_in_image(boxes, rel))
            fine = fine.reshape(n * r, p, -1)
        out = self.point_head(fine, rel.reshape(n * r, p, 2), params.reshape(n * r, -1))
        return out.reshape(n, r, p, self.mask_channels).astype(jnp.float32)

    def losses(self, features, boxes, classes, valid, mask_bits, gt_index, image_shape,
               point_targets: Optional[PointTargets] = None) -> Dict[str, Array]:
        if point_targets is None:  # uniform points in each box, labelled by the masks
            n, r = classes.shape
            rel = jax.random.uniform(self.make_rng("points"), (n, r, self.train_num_points, 2))
            labels = sample_instance_masks(mask_bits, image_shape[1], gt_index,
                                           points_in_image(boxes, rel))
            point_targets = PointTargets(rel, labels, jnp.ones_like(labels))
        # else the labelled points (detectron2 PointSup's ImplicitPointRendPointSupHead)
        rel = point_targets.coords
        self.sow("choices", "mask_points", rel)  # the training points (see MaskRCNN.losses)
        params = self.mlp_params(features, boxes)
        logits = _class_channel(self.point_logits(features, boxes, rel, params), classes)
        squared = jnp.where(valid[..., None], jnp.square(params), 0.0)
        mean_squared = jnp.sum(squared) / jnp.maximum(jnp.sum(valid) * params.shape[-1], 1)
        return {"loss_mask_point": point_label_loss(logits, point_targets, valid),
                "loss_l2": self.params_l2_weight * mean_squared}

    def predict(self, features, boxes, classes) -> Dict[str, Any]:
        params = self.mlp_params(features, boxes)
        n, r = classes.shape
        side = self.init_side
        grid = jnp.broadcast_to(regular_grid(side), (n, r, side * side, 2))
        first = _class_channel(self.point_logits(features, boxes, grid, params), classes)
        first = first.reshape(n, r, side, side)

        def predict_at(rel):  # (N * R, P, 2) box-relative -> (N * R, P, 1) logits
            rel = rel.reshape(n, r, -1, 2)
            logits = _class_channel(self.point_logits(features, boxes, rel, params), classes)
            return logits.reshape(n * r, -1, 1)

        mask, chosen = subdivide(first.reshape(n * r, side, side, 1), predict_at,
                                 num_steps=self.subdivision_steps,
                                 num_points=self.subdivision_num_points,
                                 recall_target=self.subdivision_recall)
        points = [grid] + [rel.reshape(n, r, -1, 2) for rel in chosen]
        return {"masks": mask.reshape(n, r, *mask.shape[1:3]), "coarse_masks": first,
                "points": points}


__all__ = ["FOURIER_FEATURES", "ImplicitPointHead", "ImplicitPointRendMaskHead",
           "fourier_features"]
