"""Mask R-CNN (He et al. 2017) on a ResNet-FPN, as detectron2's GeneralizedRCNN with
StandardRPN and StandardROIHeads, in static shapes (every count fixed at trace time).

Shapes: N images, H x W padded image (multiples of 32), M ground-truth instances per image
(padded, with a `valid` mask), A anchors per location, T anchors per image, R regions per
image, D detections per image, K classes. Boxes are `(x0, y0, x1, y1)` in image pixels.

Training, `__call__(images, targets, train=True)` (needs a "points" rng) -> dict of scalar
losses: `loss_rpn_cls`, `loss_rpn_loc`, `loss_cls`, `loss_box_reg`, `loss_mask` and, with
the PointRend head, `loss_mask_point` (Implicit PointRend's head: `loss_mask_point` and
`loss_l2`, no `loss_mask`). `targets` is the batch of `data.instance_augment`:
`boxes (N, M, 4)`, `classes (N, M)`, `mask_bits (N, M, H, ceil(W / 8))` uint8 (the 0/1
masks packed 8 pixels a byte along W, `numpy.packbits(axis=-1)`), `valid (N, M)`,
`image_size (N, 2)` (the unpadded (h, w) boxes are clipped to). Point supervision replaces
`mask_bits` with `point_coords (N, M, P, 2)` image pixels (x, y), `point_labels (N, M, P)`
0/1 and `point_valid (N, M, P)`: the mask losses are then taken at those points
(`mask_head.region_point_targets`).

Inference, `predict(images, image_sizes)` (or `__call__(images)` with train=False) ->
`{"boxes" (N, D, 4), "scores" (N, D), "classes" (N, D) int32, "valid" (N, D) bool,
"masks" (N, D, S, S) logits of the detected class (S = 224 for PointRend and Implicit
PointRend's recipe, 28 for Mask R-CNN), "coarse_masks" (N, D, s, s) (PointRend's 7x7,
Implicit PointRend's first 28x28 grid; the same 28x28 for Mask R-CNN),
"points": [(N, D, P_i, 2)] box-relative points each subdivision step re-predicted}`.
Masks are pasted into the image on the host (`coco_metrics.paste_masks`).

In both, the pixels outside each image's `image_size` / `image_sizes` (the padding at the
bottom/right) are 0 after normalisation, whatever the uint8 padding holds: detectron2
pads the normalised image with zeros.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pointrend_jax.models import box_ops, conv_grad
from pointrend_jax.models.fpn import FPN
from pointrend_jax.models.implicit_mask_head import ImplicitPointRendMaskHead
from pointrend_jax.models.layers import (IMAGENET_MEAN, IMAGENET_STD, compute_dtype,
                                         normalize_images, xavier_fill)
from pointrend_jax.models.mask_head import (MASK_HEADS, MaskRCNNConvHead, PointRendMaskHead,
                                            region_point_targets)
from pointrend_jax.models.resnet import ResNet

Array = jax.Array
RPN_LEVELS = (2, 3, 4, 5, 6)
ROI_LEVELS = (2, 3, 4, 5)
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # detectron2 ROI_BOX_HEAD.BBOX_REG_WEIGHTS


@dataclasses.dataclass(frozen=True)
class RPNSettings:
    """detectron2's MODEL.RPN / ANCHOR_GENERATOR defaults."""

    anchor_sizes: Tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # one per level p2..p6
    aspect_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_topk_train: int = 2000  # per level
    post_nms_topk_train: int = 1000  # per image
    pre_nms_topk_test: int = 1000
    post_nms_topk_test: int = 1000
    nms_thresh: float = 0.7
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    iou_thresholds: Tuple[float, float] = (0.3, 0.7)


@dataclasses.dataclass(frozen=True)
class ROISettings:
    """detectron2's MODEL.ROI_HEADS / ROI_BOX_HEAD defaults, except ROIAlign's sampling ratio
    (detectron2: 0, adaptive; here 2 unless a config asks for 0)."""

    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    iou_threshold: float = 0.5
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    test_topk_candidates: int = 2000  # (region, class) pairs kept for NMS (static cap)
    pooler_side: int = 7
    sampling_ratio: int = 2  # 0: adaptive (ceil(bin side)), at most max_sampling_ratio
    max_sampling_ratio: int = 8
    fc_dim: int = 1024
    num_fc: int = 2
    # Mask head trained on the box head's regressed boxes (detectron2's
    # ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES, True in its PointRend configs) instead of the proposals.
    train_on_pred_boxes: bool = True


class ResNetFPN(nn.Module):
    """Normalised images -> ResNet -> FPN `{"p2".."p6"}` (p6: p5 subsampled 2x, detectron2's
    LastLevelMaxPool). `images (N, H, W, 3)` 0..255 RGB, H and W multiples of 32;
    `image_sizes (N, 2)` the (h, w) of each image's content (None: all of it), outside which
    the normalised pixels are 0, detectron2's padding."""

    depth: int = 50
    width: int = 64
    norm: str = "frozen_bn"
    stride_in_1x1: bool = False
    num_groups: int = 1
    width_per_group: int = 64
    fpn_channels: int = 256
    pixel_mean: Sequence[float] = IMAGENET_MEAN
    pixel_std: Sequence[float] = IMAGENET_STD
    dtype: Any = jnp.float32
    remat: bool = False  # rematerialise the backbone's blocks (`ResNet.remat`)

    @nn.compact
    def __call__(self, images: Array, train: bool = False,
                 image_sizes: Optional[Array] = None) -> Dict[str, Array]:
        x = normalize_images(images, self.pixel_mean, self.pixel_std, self.dtype, image_sizes)
        features = ResNet(depth=self.depth, width=self.width, norm=self.norm, output_stride=32,
                          stride_in_1x1=self.stride_in_1x1, num_groups=self.num_groups,
                          width_per_group=self.width_per_group, dtype=self.dtype,
                          remat=self.remat, name="backbone")(x, train)
        pyramid = dict(FPN(self.fpn_channels, dtype=self.dtype, name="fpn")(features))
        pyramid["p6"] = pyramid["p5"][:, ::2, ::2]
        return pyramid


class RPNHead(nn.Module):
    """detectron2's StandardRPNHead, shared over levels: 3x3 conv + ReLU, then per anchor an
    objectness logit and 4 deltas. Level `(N, h, w, C)` -> `(N, h*w*A)`, `(N, h*w*A, 4)`,
    ordered (y, x, anchor) like `box_ops.anchors_for_level`."""

    num_anchors: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[Array]):
        init = nn.initializers.normal(0.01)
        channels = features[0].shape[-1]
        conv = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), kernel_init=init,
                       dtype=self.dtype, conv_general_dilated=conv_grad.conv_general_dilated,
                       name="conv")
        objectness = nn.Conv(self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype,
                             name="objectness_logits")
        deltas = nn.Conv(self.num_anchors * 4, (1, 1), kernel_init=init, dtype=self.dtype,
                         name="anchor_deltas")
        logits, offsets = [], []
        for x in features:
            h = nn.relu(conv(x))
            n = x.shape[0]
            logits.append(objectness(h).reshape(n, -1).astype(jnp.float32))
            offsets.append(deltas(h).reshape(n, -1, 4).astype(jnp.float32))
        return logits, offsets


class FastRCNNHead(nn.Module):
    """Box head (`num_fc` FC of `fc_dim`) and predictor: pooled `(N, R, s, s, C)` ->
    class logits `(N, R, K + 1)` (last = background) and class-specific deltas `(N, R, K, 4)`."""

    num_classes: int
    fc_dim: int = 1024
    num_fc: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled: Array):
        n, r = pooled.shape[:2]
        x = pooled.reshape(n, r, -1).astype(self.dtype)
        for i in range(self.num_fc):
            x = nn.relu(nn.Dense(self.fc_dim, kernel_init=xavier_fill, dtype=self.dtype,
                                 name=f"fc{i + 1}")(x))
        logits = nn.Dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01),
                          dtype=self.dtype, name="cls_score")(x)
        deltas = nn.Dense(self.num_classes * 4, kernel_init=nn.initializers.normal(0.001),
                          dtype=self.dtype, name="bbox_pred")(x)
        return logits.astype(jnp.float32), deltas.reshape(n, r, self.num_classes, 4).astype(jnp.float32)


def _l1(x: Array) -> Array:
    """detectron2's smooth_l1 with beta = 0 (its RPN and box-head default): plain L1."""
    return jnp.abs(x)


class MaskRCNN(nn.Module):
    """Mask R-CNN with a pluggable mask head (see the module docstring for the contract)."""

    num_classes: int
    net: nn.Module  # ResNetFPN
    mask_head: nn.Module  # PointRendMaskHead, MaskRCNNConvHead, ImplicitPointRendMaskHead
    rpn: RPNSettings = RPNSettings()
    roi: ROISettings = ROISettings()
    dtype: Any = jnp.float32

    def setup(self):
        self.rpn_head = RPNHead(len(self.rpn.aspect_ratios), dtype=self.dtype)
        self.box_head = FastRCNNHead(self.num_classes, fc_dim=self.roi.fc_dim,
                                     num_fc=self.roi.num_fc, dtype=self.dtype)

    # ------------------------------------------------------------------ shared pieces
    def _anchors(self, features) -> list:
        out = []
        for level, size in zip(RPN_LEVELS, self.rpn.anchor_sizes):
            h, w = features[f"p{level}"].shape[1:3]
            out.append(jnp.asarray(box_ops.anchors_for_level(
                h, w, 2 ** level, (size,), self.rpn.aspect_ratios)))
        return out

    def _proposals(self, logits, deltas, anchors, image_sizes, train: bool):
        """Top proposals per image: per level the `pre_nms_topk` best anchors, decoded, clipped,
        NMS per level; then the `post_nms_topk` best of all levels. -> boxes `(N, R, 4)`,
        valid `(N, R)` (detectron2's find_top_rpn_proposals)."""
        pre = self.rpn.pre_nms_topk_train if train else self.rpn.pre_nms_topk_test
        post = self.rpn.post_nms_topk_train if train else self.rpn.post_nms_topk_test

        def one_image(logits_i, deltas_i, size):
            boxes_all, scores_all, valid_all = [], [], []
            for lg, dl, an in zip(logits_i, deltas_i, anchors):
                k = min(pre, lg.shape[0])
                scores, idx = jax.lax.top_k(lg, k)
                boxes = box_ops.clip_boxes(box_ops.decode_boxes(dl[idx], an[idx]), size[0], size[1])
                valid = (box_ops.box_is_nonempty(boxes) & jnp.all(jnp.isfinite(boxes), -1)
                         & jnp.isfinite(scores))
                keep, kept = box_ops.nms(boxes, scores, iou_threshold=self.rpn.nms_thresh,
                                         max_output=min(post, k), valid=valid)
                boxes_all.append(boxes[keep])
                scores_all.append(jnp.where(kept, scores[keep], -jnp.inf))
                valid_all.append(kept)
            boxes, scores, valid = (jnp.concatenate(x) for x in (boxes_all, scores_all, valid_all))
            _, order = jax.lax.top_k(scores, min(post, scores.shape[0]))
            return boxes[order], valid[order]

        boxes, valid = jax.vmap(one_image)(logits, deltas, image_sizes)
        return jax.lax.stop_gradient(boxes), valid

    def _box_features(self, features, boxes):
        maps = [features[f"p{l}"] for l in ROI_LEVELS]
        return box_ops.multilevel_roi_align(maps, [2 ** l for l in ROI_LEVELS], boxes,
                                            output_size=self.roi.pooler_side,
                                            sampling_ratio=self.roi.sampling_ratio,
                                            max_sampling_ratio=self.roi.max_sampling_ratio)

    # ------------------------------------------------------------------ training
    def _rpn_losses(self, logits, deltas, anchors, targets):
        anchors_all = jnp.concatenate(anchors)
        logits = jnp.concatenate(logits, axis=1)
        deltas = jnp.concatenate(deltas, axis=1)
        n = logits.shape[0]
        rngs = jax.random.split(self.make_rng("points"), n)

        def one_image(rng, gt_boxes, gt_valid):
            iou = box_ops.pairwise_iou(gt_boxes, anchors_all)
            matched, labels = box_ops.match_boxes(
                iou, gt_valid, thresholds=self.rpn.iou_thresholds, labels=(0, -1, 1),
                allow_low_quality_matches=True)
            positive, negative = box_ops.subsample_labels(
                rng, labels, num_samples=self.rpn.batch_size_per_image,
                positive_fraction=self.rpn.positive_fraction)
            return positive, negative, box_ops.encode_boxes(anchors_all, gt_boxes[matched])

        positive, negative, target = jax.vmap(one_image)(rngs, targets["boxes"], targets["valid"])
        normalizer = float(self.rpn.batch_size_per_image * n)
        cls = optax.sigmoid_binary_cross_entropy(logits, positive.astype(jnp.float32))
        loss_cls = jnp.sum(jnp.where(positive | negative, cls, 0.0)) / normalizer
        loc = jnp.sum(_l1(deltas - jax.lax.stop_gradient(target)), axis=-1)
        loss_loc = jnp.sum(jnp.where(positive, loc, 0.0)) / normalizer
        return {"loss_rpn_cls": loss_cls, "loss_rpn_loc": loss_loc}

    def _sample_regions(self, proposals, proposal_valid, targets):
        """detectron2's label_and_sample_proposals: ground-truth boxes join the proposals,
        IoU >= `iou_threshold` is foreground, `batch_size_per_image` regions sampled (positives
        first). -> regions `(N, S, 4)`, classes `(N, S)` (K = background), matched gt `(N, S)`,
        is_positive, is_valid `(N, S)`, box targets `(N, S, 4)`."""
        n = proposals.shape[0]
        rngs = jax.random.split(self.make_rng("points"), n)
        k = self.num_classes

        def one_image(rng, props, props_valid, gt_boxes, gt_classes, gt_valid):
            boxes = jnp.concatenate([props, gt_boxes])
            valid = jnp.concatenate([props_valid, gt_valid])
            iou = box_ops.pairwise_iou(gt_boxes, boxes)
            matched, labels = box_ops.match_boxes(
                iou, gt_valid, thresholds=(self.roi.iou_threshold,), labels=(0, 1),
                allow_low_quality_matches=False)
            labels = jnp.where(valid, labels.astype(jnp.int32), -1)
            index, positive, chosen = box_ops.sample_indices(
                rng, labels, self.roi.batch_size_per_image, self.roi.positive_fraction)
            regions = boxes[index]
            gt = matched[index]
            classes = jnp.where(positive, gt_classes[gt], k)
            deltas = box_ops.encode_boxes(regions, gt_boxes[gt], BOX_WEIGHTS)
            return regions, classes, gt, positive, chosen, deltas

        return jax.vmap(one_image)(rngs, proposals, proposal_valid, targets["boxes"],
                                   targets["classes"].astype(jnp.int32), targets["valid"])

    def _box_losses(self, features, regions, classes, positive, chosen, target_deltas):
        logits, deltas = self.box_head(self._box_features(features, regions))
        count = jnp.maximum(jnp.sum(chosen), 1)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, classes[..., None], axis=-1)[..., 0]
        loss_cls = jnp.sum(jnp.where(chosen, nll, 0.0)) / count
        own = jnp.take_along_axis(
            deltas, jnp.minimum(classes, self.num_classes - 1)[..., None, None], axis=2)[:, :, 0]
        reg = jnp.sum(_l1(own - target_deltas), axis=-1)
        loss_box = jnp.sum(jnp.where(positive, reg, 0.0)) / count
        # detectron2's predict_boxes_for_gt_classes: each region regressed by its own class
        predicted = box_ops.decode_boxes(jax.lax.stop_gradient(own), regions, BOX_WEIGHTS)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box}, predicted

    def losses(self, images: Array, targets: Mapping[str, Array]) -> Dict[str, Array]:
        features = self.net(images, train=True, image_sizes=targets["image_size"])
        anchors = self._anchors(features)
        logits, deltas = self.rpn_head([features[f"p{l}"] for l in RPN_LEVELS])
        out = self._rpn_losses(logits, deltas, anchors, targets)
        proposals, proposal_valid = self._proposals(logits, deltas, anchors,
                                                    targets["image_size"], train=True)
        regions, classes, gt, positive, chosen, box_targets = self._sample_regions(
            proposals, proposal_valid, targets)
        # The discrete choices of the step, for inspection (apply with mutable=["choices"];
        # otherwise a no-op): which proposals were sampled, with which labels.
        self.sow("choices", "regions", regions)
        self.sow("choices", "region_classes", jnp.where(chosen, classes, -1))
        box_losses, predicted = self._box_losses(features, regions, classes, positive, chosen,
                                                 box_targets)
        out.update(box_losses)
        if self.roi.train_on_pred_boxes:  # the mask head learns on the boxes it will see
            regions = predicted
        # Positives come first in each image's sample, and there are at most this many:
        num_fg = int(self.roi.batch_size_per_image * self.roi.positive_fraction)
        regions, gt = regions[:, :num_fg], gt[:, :num_fg]
        head_inputs = (features, regions, classes[:, :num_fg].clip(0, self.num_classes - 1),
                       positive[:, :num_fg])
        if "point_coords" in targets:  # point supervision: the mask losses at labelled points
            point_targets = region_point_targets(targets["point_coords"], targets["point_labels"],
                                                 targets["point_valid"], gt, regions)
            out.update(self.mask_head.losses(*head_inputs, None, gt, images.shape[1:3],
                                             point_targets=point_targets))
        else:
            out.update(self.mask_head.losses(*head_inputs, targets["mask_bits"], gt,
                                             images.shape[1:3]))
        return out

    # ------------------------------------------------------------------ inference
    def _detect(self, features, proposals, proposal_valid, image_sizes):
        """detectron2's fast_rcnn_inference with static sizes -> boxes, scores, classes, valid."""
        logits, deltas = self.box_head(self._box_features(features, proposals))
        k = self.num_classes
        cfg = self.roi

        def one_image(logits_i, deltas_i, props, props_valid, size):
            scores = jax.nn.softmax(logits_i)[:, :k]
            boxes = box_ops.decode_boxes(deltas_i, props[:, None, :], BOX_WEIGHTS)
            boxes = box_ops.clip_boxes(boxes, size[0], size[1])
            valid = (props_valid[:, None] & (scores > cfg.score_thresh_test)
                     & jnp.all(jnp.isfinite(boxes), -1))
            scores, boxes, valid = scores.reshape(-1), boxes.reshape(-1, 4), valid.reshape(-1)
            classes = jnp.tile(jnp.arange(k, dtype=jnp.int32), props.shape[0])
            _, top = jax.lax.top_k(jnp.where(valid, scores, -jnp.inf),
                                   min(cfg.test_topk_candidates, scores.shape[0]))
            keep, kept = box_ops.batched_nms(
                boxes[top], scores[top], classes[top], iou_threshold=cfg.nms_thresh_test,
                max_output=cfg.detections_per_image, valid=valid[top])
            pick = top[keep]
            return (jnp.where(kept[:, None], boxes[pick], 0.0), jnp.where(kept, scores[pick], 0.0),
                    jnp.where(kept, classes[pick], 0), kept)

        return jax.vmap(one_image)(logits, deltas, proposals, proposal_valid, image_sizes)

    def predict(self, images: Array, image_sizes: Optional[Array] = None) -> Dict[str, Any]:
        n, h, w, _ = images.shape
        if image_sizes is None:
            image_sizes = jnp.tile(jnp.asarray([[h, w]], jnp.int32), (n, 1))
        features = self.net(images, train=False, image_sizes=image_sizes)
        anchors = self._anchors(features)
        logits, deltas = self.rpn_head([features[f"p{l}"] for l in RPN_LEVELS])
        proposals, proposal_valid = self._proposals(logits, deltas, anchors, image_sizes, train=False)
        boxes, scores, classes, valid = self._detect(features, proposals, proposal_valid, image_sizes)
        masks = self.mask_head.predict(features, boxes, classes)
        return {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid, **masks}

    def __call__(self, images: Array, targets: Optional[Mapping[str, Array]] = None,
                 train: bool = False):
        if train:
            if targets is None:
                raise ValueError("MaskRCNN: training needs targets (boxes, classes, mask_bits, "
                                 "valid, image_size)")
            return self.losses(images, targets)
        return self.predict(images)


def build_instance_model(model_cfg, pointrend_cfg, num_classes: int) -> MaskRCNN:
    """The Mask R-CNN a config describes (`config.model` with `mask_head`, `rpn`, `roi_heads`,
    `implicit_pointrend`; `config.pointrend` for the point heads of both PointRend mask
    heads)."""
    dtype = compute_dtype(model_cfg.dtype)
    b = model_cfg.backbone
    net = ResNetFPN(depth=b.depth, width=b.width, norm=b.norm, stride_in_1x1=b.stride_in_1x1,
                    # .get: the config.json of runs from before ResNeXt has no grouping keys
                    num_groups=b.get("num_groups", 1), width_per_group=b.get("width_per_group", 64),
                    fpn_channels=model_cfg.fpn_channels, pixel_mean=tuple(model_cfg.pixel_mean),
                    pixel_std=tuple(model_cfg.pixel_std), dtype=dtype,
                    # .get: the config.json of runs from before the option has no remat
                    remat=b.get("remat", False))
    r, h, p = model_cfg.rpn, model_cfg.roi_heads, pointrend_cfg
    rpn = RPNSettings(
        anchor_sizes=tuple(float(x) for x in r.anchor_sizes),
        aspect_ratios=tuple(float(x) for x in r.aspect_ratios),
        pre_nms_topk_train=r.pre_nms_topk_train, post_nms_topk_train=r.post_nms_topk_train,
        pre_nms_topk_test=r.pre_nms_topk_test, post_nms_topk_test=r.post_nms_topk_test,
        nms_thresh=r.nms_thresh, batch_size_per_image=r.batch_size_per_image,
        positive_fraction=r.positive_fraction, iou_thresholds=tuple(r.iou_thresholds))
    max_sampling_ratio = h.get("max_sampling_ratio", 8)
    roi = ROISettings(
        batch_size_per_image=h.batch_size_per_image, positive_fraction=h.positive_fraction,
        iou_threshold=h.iou_threshold, score_thresh_test=h.score_thresh_test,
        nms_thresh_test=h.nms_thresh_test, detections_per_image=h.detections_per_image,
        test_topk_candidates=h.test_topk_candidates, pooler_side=h.box_pooler_side,
        sampling_ratio=h.sampling_ratio, max_sampling_ratio=max_sampling_ratio,
        fc_dim=h.box_fc_dim, num_fc=h.box_num_fc,
        train_on_pred_boxes=h.get("train_on_pred_boxes", True))
    # .get: the config.json of runs from before the options has no cls_agnostic_mask or
    # max_sampling_ratio
    cls_agnostic_mask = h.get("cls_agnostic_mask", False)
    if model_cfg.mask_head == "pointrend":
        mask_head = PointRendMaskHead(
            num_classes, coarse_features=tuple(h.coarse_mask_features),
            fine_features=tuple(p.fine_features), pooler_side=h.coarse_mask_pooler_side,
            coarse_side=h.coarse_mask_side, conv_dim=h.mask_conv_dim,
            coarse_fc_dim=h.coarse_mask_fc_dim, coarse_num_fc=h.coarse_mask_num_fc,
            num_fc=p.num_fc, fc_dim=p.fc_dim, coarse_pred_each_layer=p.coarse_pred_each_layer,
            activation=p.activation, train_num_points=p.train_num_points,
            oversample_ratio=p.oversample_ratio, importance_sample_ratio=p.importance_sample_ratio,
            subdivision_steps=p.subdivision_steps, subdivision_num_points=p.subdivision_num_points,
            # .get: the config.json of runs from before the option has no subdivision_recall
            subdivision_recall=p.get("subdivision_recall", 1.0),
            mask_target_sampling_ratio=h.sampling_ratio, max_sampling_ratio=max_sampling_ratio,
            cls_agnostic_mask=cls_agnostic_mask,
            dtype=dtype)
    elif model_cfg.mask_head == "maskrcnn":
        mask_head = MaskRCNNConvHead(num_classes, pooler_side=h.mask_pooler_side,
                                     sampling_ratio=h.sampling_ratio,
                                     max_sampling_ratio=max_sampling_ratio, conv_dim=h.mask_conv_dim,
                                     cls_agnostic_mask=cls_agnostic_mask, dtype=dtype)
    elif model_cfg.mask_head == "implicit_pointrend":
        implicit = model_cfg.implicit_pointrend
        mask_head = ImplicitPointRendMaskHead(
            num_classes, parameter_features=tuple(h.coarse_mask_features),
            fine_features=tuple(p.fine_features),
            fine_channels=model_cfg.fpn_channels * len(p.fine_features),
            pooler_side=h.coarse_mask_pooler_side, conv_dim=h.mask_conv_dim,
            parameter_fc_dim=h.coarse_mask_fc_dim, parameter_num_fc=h.coarse_mask_num_fc,
            num_fc=p.num_fc, fc_dim=p.fc_dim,
            image_features=implicit.image_feature_enabled,
            positional_encoding=implicit.pos_enc_enabled,
            params_l2_weight=implicit.params_l2_regularizer,
            train_num_points=p.train_num_points, subdivision_steps=p.subdivision_steps,
            subdivision_num_points=p.subdivision_num_points,
            subdivision_recall=p.get("subdivision_recall", 1.0),
            cls_agnostic_mask=cls_agnostic_mask, dtype=dtype)
    else:
        raise ValueError(f"--config.model.mask_head={model_cfg.mask_head!r} is not one of "
                         f"{list(MASK_HEADS)}")
    return MaskRCNN(num_classes=num_classes, net=net, mask_head=mask_head, rpn=rpn, roi=roi,
                    dtype=dtype)


__all__ = ["FastRCNNHead", "MaskRCNN", "RPNHead", "RPNSettings", "ROISettings", "ResNetFPN",
           "build_instance_model"]
