"""Mask heads of the instance model: PointRend's (coarse 7x7 head + point head + the mask
subdivision loop, as detectron2's `PointRendMaskHead`) and Mask R-CNN's 4-conv 28x28 head
(detectron2's `MaskRCNNConvUpsampleHead`), the baseline for A/B. Implicit PointRend's head
(`implicit_mask_head`) has the same interface and reuses the helpers here.

Shapes: N images, R regions (boxes) per image, M ground-truth instances per image,
H x W padded image, K classes, P points per region, C feature channels. Boxes are
`(x0, y0, x1, y1)` in image pixels; "box-relative" points are `(x, y)` in [0, 1] of the box.

Every mask head has the same interface:
  `losses(features, boxes, classes, valid, mask_bits, gt_index, image_shape)` ->
     dict of scalar losses over the `valid` regions (training; needs a "points" rng);
  `losses(..., point_targets=PointTargets)` (point supervision, every head): the same
     losses taken at labelled points only
     (`region_point_targets`, `point_label_loss`); `mask_bits` is not read (None);
  `predict(features, boxes, classes, image_shape)` -> {"masks": (N, R, S, S) logits of each
     region's class, "coarse_masks": (N, R, s, s), "points": [(N, R, P_i, 2)] box-relative}.

With `cls_agnostic_mask` (detectron2's `CLS_AGNOSTIC_MASK`) the final masks have one channel
(M = 1) instead of one per class (M = K), shared by every class, so they never depend on the
class of a region: the 28x28 head's predictor and PointRend's point head predict one channel.
As in detectron2, PointRend's coarse head keeps its K channels (its loss and the coarse
masks stay class-specific) and the point head still sees all K coarse logits.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pointrend_jax.models import conv_grad
from pointrend_jax.models.box_ops import multilevel_roi_align, sample_counts
from pointrend_jax.models.layers import msra_fill, xavier_fill
from pointrend_jax.point_head import PointHead
from pointrend_jax.point_ops import point_sample, sample_training_points
from pointrend_jax.subdivision import subdivide

Array = jax.Array
_predictor_init = nn.initializers.normal(stddev=0.001)


# --------------------------------------------------------------------------- sampling helpers
def regular_grid(side: int) -> Array:
    """`(side * side, 2)` box-relative cell centres of a side x side grid, row-major."""
    c = (jnp.arange(side, dtype=jnp.float32) + 0.5) / side
    ys, xs = jnp.meshgrid(c, c, indexing="ij")
    return jnp.stack([xs.reshape(-1), ys.reshape(-1)], axis=-1)


def points_in_image(boxes: Array, rel: Array) -> Array:
    """Box-relative points `rel (N, R, P, 2)` -> image pixels `(N, R, P, 2)` for `boxes (N, R, 4)`."""
    origin = boxes[..., None, :2]
    size = boxes[..., None, 2:] - boxes[..., None, :2]
    return origin + rel * size


def sample_feature_maps(features: Sequence[Array], strides: Sequence[int], points: Array) -> Array:
    """Bilinear features at image-pixel `points (N, R, P, 2)` from each map `(N, Hf, Wf, C_i)`
    of stride `strides[i]` (zero outside the map), concatenated: `(N, R, P, sum C_i)`
    (detectron2's `point_sample_fine_grained_features`)."""
    n, r, p, _ = points.shape
    out = []
    for fmap, stride in zip(features, strides):
        extent = jnp.asarray([fmap.shape[2] * stride, fmap.shape[1] * stride], jnp.float32)
        coords = (points / extent).reshape(n, r * p, 2)
        out.append(point_sample(fmap, coords).reshape(n, r, p, fmap.shape[-1]))
    return jnp.concatenate(out, axis=-1)


def _instance_pixels(mask_bits: Array, width: int, gt_index: Array, ys: Array, xs: Array) -> Array:
    """Bit-packed masks `mask_bits (N, M, H, ceil(W / 8))` (NumPy's `packbits(axis=-1)`: 8
    pixels a byte along W, the first in the highest bit) at integer pixels `(ys, xs)
    (N, R, ...)` of instance `gt_index (N, R)`, 0 outside the image; float32 `(N, R, ...)`.
    Gathers single bytes from the flat bits, so no per-region copy of a mask is ever made."""
    n, m, h, wb = mask_bits.shape
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < width)
    xs = jnp.clip(xs, 0, width - 1)
    extra = (1,) * (ys.ndim - 2)
    rows = gt_index.reshape(n, -1, *extra) * (h * wb) + jnp.clip(ys, 0, h - 1) * wb + xs // 8
    flat = mask_bits.reshape(n, m * h * wb)
    byte = jnp.take_along_axis(flat, rows.reshape(n, -1), axis=1).reshape(ys.shape)
    bit = (byte.astype(jnp.int32) >> (7 - xs % 8)) & 1
    return jnp.where(inside, bit.astype(jnp.float32), 0.0)


def _bilinear_instance(mask_bits: Array, width: int, gt_index: Array, px: Array, py: Array) -> Array:
    """Bilinear value of instance masks at pixel-index coordinates `(px, py)` (pixel `i` has its
    centre at `i`); corners outside the image count as 0 (grid_sample zero padding)."""
    x0, y0 = jnp.floor(px), jnp.floor(py)
    fx, fy = px - x0, py - y0
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    value = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            value = value + wy * wx * _instance_pixels(mask_bits, width, gt_index, y0 + dy, x0 + dx)
    return value


def sample_instance_masks(mask_bits: Array, width: int, gt_index: Array, points: Array) -> Array:
    """Ground-truth mask values at image-pixel `points (N, R, P, 2)`: bilinear on the 0/1 mask
    of instance `gt_index[n, r]` (`mask_bits (N, M, H, ceil(W / 8))`, see `_instance_pixels`, W =
    `width`), zero outside the image, like detectron2's `sample_point_labels` (grid_sample,
    align_corners=False). -> `(N, R, P)`."""
    return _bilinear_instance(mask_bits, width, gt_index, points[..., 0] - 0.5,
                              points[..., 1] - 0.5)


def crop_and_resize_masks(mask_bits: Array, width: int, gt_index: Array, boxes: Array, size: int,
                          sampling_ratio: int, max_sampling_ratio: int = 8) -> Array:
    """Mask R-CNN's mask targets: instance `gt_index (N, R)` of the packed masks `mask_bits
    (N, M, H, ceil(W / 8))` (W = `width`) cropped to `boxes (N, R, 4)` and resized to
    `(size, size)` by aligned ROIAlign (torchvision's rules; `sampling_ratio` samples per
    cell side, or with 0 detectron2's adaptive ceil(box side / size), at most
    `max_sampling_ratio`; see `box_ops.sample_counts`), thresholded at 0.5 -> float32
    `(N, R, size, size)` of 0/1 (detectron2's `BitMasks.crop_and_resize`)."""
    h, w = mask_bits.shape[2], width
    slots = sampling_ratio if sampling_ratio > 0 else max_sampling_ratio
    start = boxes[..., :2] - 0.5  # aligned: pixel-index coordinates
    extent = boxes[..., 2:] - boxes[..., :2]
    counts = sample_counts(extent, size, sampling_ratio, max_sampling_ratio)  # (N, R, 2)
    cells = jnp.arange(size, dtype=jnp.float32)[:, None]
    slot = jnp.arange(slots, dtype=jnp.float32)[None, :]

    def axis(i):
        n = counts[..., i, None, None]
        frac = (cells + (slot + 0.5) / jnp.maximum(n, 1).astype(jnp.float32)) / size
        p = (start[..., i, None, None] + frac * extent[..., i, None, None]).reshape(
            *boxes.shape[:2], size * slots)
        used = jnp.broadcast_to(slot < n, (*boxes.shape[:2], size, slots))
        return p, used.reshape(*boxes.shape[:2], size * slots)

    py, y_used = axis(1)
    px, x_used = axis(0)
    k = size * slots
    py = jnp.broadcast_to(py[..., :, None], (*py.shape, k))
    px = jnp.broadcast_to(px[..., None, :], (*px.shape[:-1], k, k))
    # torchvision: a sample beyond one pixel outside is 0; otherwise it is clamped inside.
    outside = (py < -1.0) | (py > h) | (px < -1.0) | (px > w)
    value = _bilinear_instance(mask_bits, width, gt_index, jnp.clip(px, 0.0, w - 1.0),
                               jnp.clip(py, 0.0, h - 1.0))
    used = y_used[..., :, None] & x_used[..., None, :]
    value = jnp.where(outside | ~used, 0.0, value)
    n, r = gt_index.shape
    count = jnp.maximum(counts[..., 0] * counts[..., 1], 1).astype(jnp.float32)
    value = value.reshape(n, r, size, slots, size, slots).sum(axis=(3, 5)) / count[..., None, None]
    return (value >= 0.5).astype(jnp.float32)


def _class_channel(logits: Array, classes: Array) -> Array:
    """`logits (N, R, ..., M)` at each region's class `classes (N, R)` -> `(N, R, ...)`; a
    class-agnostic `M = 1` gives its one channel to every class."""
    if logits.shape[-1] == 1:
        return logits[..., 0]
    index = classes.reshape(*classes.shape, *([1] * (logits.ndim - 2)))
    return jnp.take_along_axis(logits, index, axis=-1)[..., 0]


class PointTargets(NamedTuple):
    """The labelled points of each region (point supervision): `coords (N, R, P, 2)`
    box-relative (x, y), `labels (N, R, P)` float32 0/1, `weights (N, R, P)` float32, 1 for a
    labelled point inside the region's box and 0 for one to ignore."""

    coords: Array
    labels: Array
    weights: Array


def region_point_targets(point_coords: Array, point_labels: Array, point_valid: Array,
                         gt_index: Array, boxes: Array) -> PointTargets:
    """The point labels of ground-truth instance `gt_index (N, R)` of each region `boxes
    (N, R, 4)`: image-pixel `point_coords (N, M, P, 2)`, `point_labels (N, M, P)` 0/1 and
    `point_valid (N, M, P)` of the batch, made box-relative; a point outside its region's box
    is ignored (detectron2 PointSup's `get_point_coords_from_point_annotation`)."""
    index = gt_index[:, :, None]
    coords = jnp.take_along_axis(point_coords, index[..., None], axis=1)  # (N, R, P, 2)
    labels = jnp.take_along_axis(point_labels.astype(jnp.float32), index, axis=1)
    valid = jnp.take_along_axis(point_valid, index, axis=1)
    size = jnp.maximum(boxes[..., None, 2:] - boxes[..., None, :2], 1e-6)
    rel = (coords - boxes[..., None, :2]) / size
    inside = valid & jnp.all((rel >= 0.0) & (rel <= 1.0), axis=-1)
    rel = jnp.where(inside[..., None], rel, 0.5)  # ignored points: any finite place
    return PointTargets(jax.lax.stop_gradient(rel), labels, inside.astype(jnp.float32))


def point_label_loss(logits: Array, targets: PointTargets, valid: Array) -> Array:
    """Binary cross-entropy of `logits (N, R, P)` at the labelled points of `targets`, summed
    over the points of weight 1 of the `valid (N, R)` regions and divided by their count of
    point slots, ignored ones included (detectron2's `roi_mask_point_loss`: a mean with
    weight 0 on ignored points); 0 without valid regions."""
    loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets.labels)
    weight = targets.weights * valid[..., None]
    count = jnp.sum(valid) * logits.shape[-1]
    return jnp.sum(loss * weight) / jnp.maximum(count, 1)


def _logits_at(masks: Array, rel: Array) -> Array:
    """Mask logits `masks (N, R, S, S)` sampled at box-relative `rel (N, R, P, 2)` (bilinear,
    `point_sample`) -> `(N, R, P)`."""
    n, r, side, _ = masks.shape
    at = point_sample(masks.reshape(n * r, side, side, 1), rel.reshape(n * r, -1, 2))
    return at.reshape(n, r, -1)


def _masked_bce(logits: Array, targets: Array, valid: Array) -> Array:
    """Mean binary cross-entropy over the entries of the `valid (N, R)` regions (0 if none)."""
    loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets)
    per_region = loss.reshape(*valid.shape, -1)
    count = jnp.sum(valid) * per_region.shape[-1]
    return jnp.sum(jnp.where(valid[..., None], per_region, 0.0)) / jnp.maximum(count, 1)


# --------------------------------------------------------------------------- PointRend
class CoarseMaskHead(nn.Module):
    """detectron2's CoarseMaskHead: `(N, R, 14, 14, C)` pooled features -> 1x1 conv to
    `conv_dim` (only when C > conv_dim), 2x2 stride-2 conv, `num_fc` FC of `fc_dim`, and a
    linear predictor of `side x side` logits per mask channel -> `(N, R, side, side, M)`,
    M = `num_classes` (1 for a class-agnostic head)."""

    num_classes: int
    conv_dim: int = 256
    fc_dim: int = 1024
    num_fc: int = 2
    side: int = 7
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled: Array) -> Array:
        n, r, h, w, c = pooled.shape
        kw = dict(dtype=self.dtype, kernel_init=msra_fill)
        x = pooled.reshape(n * r, h, w, c).astype(self.dtype)
        if c > self.conv_dim:
            x = nn.relu(nn.Conv(self.conv_dim, (1, 1), name="reduce_channel_dim_conv", **kw)(x))
        x = nn.relu(nn.Conv(self.conv_dim, (2, 2), strides=(2, 2), padding="VALID",
                            name="reduce_spatial_dim_conv", **kw)(x))
        x = x.reshape(n * r, -1)
        for i in range(self.num_fc):
            x = nn.relu(nn.Dense(self.fc_dim, kernel_init=xavier_fill, dtype=self.dtype,
                                 name=f"coarse_mask_fc{i + 1}")(x))
        x = nn.Dense(self.side * self.side * self.num_classes, kernel_init=_predictor_init,
                     dtype=self.dtype, name="prediction")(x)
        return x.reshape(n, r, self.side, self.side, self.num_classes).astype(jnp.float32)


class PointRendMaskHead(nn.Module):
    """PointRend's mask head (detectron2 `PointRendMaskHead`).

    Coarse: `coarse_side`x`coarse_side` logits per class from `pooler_side`x`pooler_side`
    features of `coarse_features` sampled on a regular grid in each box. Training: the coarse
    loss against the ground-truth mask cropped to the box, plus the point loss at
    `train_num_points` points per box (oversampled, `importance_sample_ratio` of them the most
    uncertain by `-|logit|` of the ground-truth class), labels bilinear on the full-image mask.
    Inference: the point head on a `coarse_side` regular grid, then `subdivision_steps` times:
    upsample 2x, re-predict the `subdivision_num_points` most uncertain cells of the
    predicted class -> `coarse_side * 2**subdivision_steps` square masks (7 -> 224).
    The point head sees `fine_features` at each point plus all K coarse logits there and
    predicts M channels (M = K, or 1 with `cls_agnostic_mask`, used for every class).
    """

    num_classes: int
    coarse_features: Tuple[str, ...] = ("p2",)
    fine_features: Tuple[str, ...] = ("p2",)
    pooler_side: int = 14
    coarse_side: int = 7
    conv_dim: int = 256
    coarse_fc_dim: int = 1024
    coarse_num_fc: int = 2
    num_fc: int = 3
    fc_dim: int = 256
    coarse_pred_each_layer: bool = True
    activation: str = "relu"
    train_num_points: int = 196
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    subdivision_steps: int = 5
    subdivision_num_points: int = 784
    subdivision_recall: float = 1.0  # < 1: approximate top-k (`uncertain_grid_points`)
    mask_target_sampling_ratio: int = 2  # 0: adaptive, at most max_sampling_ratio
    max_sampling_ratio: int = 8
    cls_agnostic_mask: bool = False
    dtype: Any = jnp.float32

    @property
    def output_side(self) -> int:
        """Side S of the predicted `(S, S)` masks."""
        return self.coarse_side * 2 ** self.subdivision_steps

    @property
    def mask_channels(self) -> int:
        """M: mask logits per region (1 when class-agnostic, else K)."""
        return 1 if self.cls_agnostic_mask else self.num_classes

    def setup(self):
        self.coarse_head = CoarseMaskHead(
            self.num_classes, conv_dim=self.conv_dim, fc_dim=self.coarse_fc_dim,
            num_fc=self.coarse_num_fc, side=self.coarse_side, dtype=self.dtype)
        self.point_head = PointHead(
            self.mask_channels, num_fc=self.num_fc, fc_dim=self.fc_dim,
            coarse_pred_each_layer=self.coarse_pred_each_layer, activation=self.activation,
            dtype=self.dtype)

    def _maps(self, features: Mapping[str, Array], names: Sequence[str]):
        missing = [k for k in names if k not in features]
        if missing:
            raise ValueError(f"PointRendMaskHead: no feature maps {missing}; have {sorted(features)}")
        return [features[k] for k in names], [int(k[1:]) for k in names]

    def coarse_logits(self, features: Mapping[str, Array], boxes: Array) -> Array:
        """`(N, R, coarse_side, coarse_side, K)` coarse mask logits of `boxes (N, R, 4)`."""
        maps, levels = self._maps(features, self.coarse_features)
        n, r, _ = boxes.shape
        grid = jnp.broadcast_to(regular_grid(self.pooler_side), (n, r, self.pooler_side ** 2, 2))
        pooled = sample_feature_maps(maps, [2 ** l for l in levels], points_in_image(boxes, grid))
        pooled = pooled.reshape(n, r, self.pooler_side, self.pooler_side, -1)
        return self.coarse_head(pooled)

    def point_logits(self, features, boxes: Array, rel: Array, coarse: Array) -> Array:
        """Point head logits `(N, R, P, M)` at box-relative points `rel (N, R, P, 2)`."""
        maps, levels = self._maps(features, self.fine_features)
        n, r, p, _ = rel.shape
        fine = sample_feature_maps(maps, [2 ** l for l in levels], points_in_image(boxes, rel))
        coarse_at = point_sample(coarse.reshape(n * r, *coarse.shape[2:]), rel.reshape(n * r, p, 2))
        out = self.point_head(fine.reshape(n * r, p, -1).astype(self.dtype), coarse_at)
        return out.reshape(n, r, p, self.mask_channels).astype(jnp.float32)

    def losses(self, features, boxes, classes, valid, mask_bits, gt_index, image_shape,
               point_targets: Optional[PointTargets] = None) -> Dict[str, Array]:
        coarse = self.coarse_logits(features, boxes)
        if point_targets is not None:  # both losses at the labelled points
            rel = point_targets.coords
            self.sow("choices", "mask_points", rel)
            point = _class_channel(self.point_logits(features, boxes, rel, coarse), classes)
            return {"loss_mask": point_label_loss(_logits_at(_class_channel(coarse, classes), rel),
                                                  point_targets, valid),
                    "loss_mask_point": point_label_loss(point, point_targets, valid)}
        width = image_shape[1]
        targets = crop_and_resize_masks(mask_bits, width, gt_index, boxes, self.coarse_side,
                                        self.mask_target_sampling_ratio,
                                        self.max_sampling_ratio)
        loss_mask = _masked_bce(_class_channel(coarse, classes), targets, valid)
        n, r = classes.shape
        own = jax.lax.stop_gradient(_class_channel(coarse, classes))[..., None]
        rel = sample_training_points(
            self.make_rng("points"), own.reshape(n * r, self.coarse_side, self.coarse_side, 1),
            self.train_num_points, oversample_ratio=self.oversample_ratio,
            importance_sample_ratio=self.importance_sample_ratio).reshape(n, r, -1, 2)
        rel = jax.lax.stop_gradient(rel)
        self.sow("choices", "mask_points", rel)  # the training points (see MaskRCNN.losses)
        labels = sample_instance_masks(mask_bits, width, gt_index, points_in_image(boxes, rel))
        point = _class_channel(self.point_logits(features, boxes, rel, coarse), classes)
        return {"loss_mask": loss_mask, "loss_mask_point": _masked_bce(point, labels, valid)}

    def predict(self, features, boxes, classes) -> Dict[str, Any]:
        coarse = self.coarse_logits(features, boxes)
        n, r = classes.shape
        side = self.coarse_side
        grid = jnp.broadcast_to(regular_grid(side), (n, r, side * side, 2))
        mask = _class_channel(self.point_logits(features, boxes, grid, coarse), classes)
        mask = mask.reshape(n * r, side, side, 1)

        def predict_at(rel):  # (N * R, P, 2) box-relative -> (N * R, P, 1) logits
            rel = rel.reshape(n, r, -1, 2)
            logits = _class_channel(self.point_logits(features, boxes, rel, coarse), classes)
            return logits.reshape(n * r, -1, 1)

        mask, chosen = subdivide(mask, predict_at, num_steps=self.subdivision_steps,
                                 num_points=self.subdivision_num_points,
                                 recall_target=self.subdivision_recall)
        points = [grid] + [rel.reshape(n, r, -1, 2) for rel in chosen]
        return {"masks": mask.reshape(n, r, *mask.shape[1:3]),
                "coarse_masks": _class_channel(coarse, classes), "points": points}


# --------------------------------------------------------------------------- Mask R-CNN
class Upsample2x2(nn.Module):
    """torch `ConvTranspose2d(kernel_size=2, stride=2)`: every input pixel `(N, h, w, C)` becomes
    its own 2x2 output block `(N, 2h, 2w, features)`, so the layer is one matmul per pixel
    (`kernel (C, 2, 2, features)` = torch's weight `(C, features, 2, 2)` transposed, one
    `bias (features,)`) -- 5x faster to train on XLA:CPU than `nn.ConvTranspose`, same
    function. Init: detectron2's c2_msra_fill (He-normal over the fan-out, C * 2 * 2), bias 0."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n, h, w, c = x.shape
        kernel = self.param("kernel", nn.initializers.normal(stddev=(2.0 / (c * 4)) ** 0.5),
                            (c, 2, 2, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jnp.einsum("nhwc,cabf->nhawbf", x.astype(self.dtype), kernel.astype(self.dtype))
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class MaskRCNNConvHead(nn.Module):
    """detectron2's MaskRCNNConvUpsampleHead: ROIAlign `pooler_side` from the FPN level of
    each box, `num_conv` 3x3 convs of `conv_dim`, a 2x2 stride-2 transposed conv and a 1x1
    predictor -> `(N, R, 2 * pooler_side, 2 * pooler_side, M)` logits (28x28 by default),
    M = K, or 1 with `cls_agnostic_mask`."""

    num_classes: int
    in_features: Tuple[str, ...] = ("p2", "p3", "p4", "p5")
    pooler_side: int = 14
    sampling_ratio: int = 2  # 0: adaptive, at most max_sampling_ratio
    max_sampling_ratio: int = 8
    num_conv: int = 4
    conv_dim: int = 256
    cls_agnostic_mask: bool = False
    dtype: Any = jnp.float32

    @property
    def output_side(self) -> int:
        """Side S of the predicted `(S, S)` masks."""
        return 2 * self.pooler_side

    @nn.compact
    def __call__(self, features, boxes):
        maps = [features[k] for k in self.in_features]
        strides = [2 ** int(k[1:]) for k in self.in_features]
        pooled = multilevel_roi_align(maps, strides, boxes, output_size=self.pooler_side,
                                      sampling_ratio=self.sampling_ratio,
                                      max_sampling_ratio=self.max_sampling_ratio)
        n, r = boxes.shape[:2]
        x = pooled.reshape(n * r, *pooled.shape[2:]).astype(self.dtype)
        for i in range(self.num_conv):
            x = nn.relu(nn.Conv(self.conv_dim, (3, 3), padding=((1, 1), (1, 1)), kernel_init=msra_fill,
                                dtype=self.dtype, conv_general_dilated=conv_grad.conv_general_dilated,
                                name=f"mask_fcn{i + 1}")(x))
        x = nn.relu(Upsample2x2(self.conv_dim, dtype=self.dtype, name="deconv")(x))
        x = nn.Conv(1 if self.cls_agnostic_mask else self.num_classes, (1, 1),
                    kernel_init=_predictor_init, dtype=self.dtype, name="predictor")(x)
        return x.reshape(n, r, *x.shape[1:]).astype(jnp.float32)

    def losses(self, features, boxes, classes, valid, mask_bits, gt_index, image_shape,
               point_targets: Optional[PointTargets] = None):
        logits = _class_channel(self(features, boxes), classes)
        if point_targets is not None:  # detectron2 PointSup's MaskRCNNConvUpsamplePointSupHead
            return {"loss_mask": point_label_loss(_logits_at(logits, point_targets.coords),
                                                  point_targets, valid)}
        targets = crop_and_resize_masks(mask_bits, image_shape[1], gt_index, boxes,
                                        logits.shape[-1], self.sampling_ratio,
                                        self.max_sampling_ratio)
        return {"loss_mask": _masked_bce(logits, targets, valid)}

    def predict(self, features, boxes, classes):
        masks = _class_channel(self(features, boxes), classes)
        return {"masks": masks, "coarse_masks": masks, "points": []}


# model.mask_head values; "implicit_pointrend" is models/implicit_mask_head.py
MASK_HEADS = ("pointrend", "maskrcnn", "implicit_pointrend")

__all__ = ["CoarseMaskHead", "MASK_HEADS", "MaskRCNNConvHead",
           "PointRendMaskHead", "PointTargets", "crop_and_resize_masks", "point_label_loss",
           "points_in_image", "region_point_targets", "regular_grid", "sample_feature_maps",
           "sample_instance_masks"]
