"""detectron2's PointRend, Implicit PointRend and Mask R-CNN models re-stated in plain torch,
as test oracles.

Written from detectron2's source (detectron2/modeling: backbone/resnet.py, backbone/fpn.py,
meta_arch/semantic_seg.py, proposal_generator/rpn.py + proposal_utils.py, anchor_generator.py,
box_regression.py, poolers.py, roi_heads/{box_head,fast_rcnn,mask_head}.py, postprocessing.py;
projects/PointRend/point_rend/{point_features,point_head,mask_head,semantic_seg}.py), NCHW,
inference only (Implicit PointRend's mask head also its losses), one image at a time. Every
module has detectron2's name, so `state_dict()` has the keys of a real detectron2 checkpoint
(`backbone.bottom_up.res2.0.conv1.norm.weight`, `roi_heads.mask_head.point_head.fc1.weight`,
...). torchvision's ops (ROIAlign, NMS) are re-stated too: the project's environment has no
torchvision.

Sizes are free, so the tests build these models at tiny widths.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCALE_CLAMP = math.log(1000.0 / 16)


# ------------------------------------------------------------------------------ layers
class FrozenBatchNorm2d(nn.Module):
    """detectron2.layers.FrozenBatchNorm2d: buffers weight, bias, running_mean, running_var."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


def get_norm(norm, channels):
    """detectron2.layers.get_norm for the norms these models use ("" -> None)."""
    if not norm:
        return None
    return {"FrozenBN": FrozenBatchNorm2d, "GN": lambda c: nn.GroupNorm(32, c)}[norm](channels)


class Conv2d(nn.Conv2d):
    """detectron2.layers.Conv2d: a conv, then its `norm` submodule, then `activation`."""

    def __init__(self, *args, norm=None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x):
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


# ------------------------------------------------------------------------------ backbone
class BasicStem(nn.Module):
    def __init__(self, out_channels, norm):
        super().__init__()
        self.conv1 = Conv2d(3, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x):
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    def __init__(self, in_channels, out_channels, bottleneck_channels, stride, num_groups,
                 norm, stride_in_1x1):
        super().__init__()
        self.shortcut = (Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                norm=get_norm(norm, out_channels))
                         if in_channels != out_channels else None)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=s1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=s3, padding=1,
                            bias=False, groups=num_groups,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False,
                            norm=get_norm(norm, out_channels))

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)


class ResNet(nn.Module):
    """build_resnet_backbone for bottleneck depths: RESNETS.STEM_OUT_CHANNELS = `width`,
    RES2_OUT_CHANNELS = 4 * width, WIDTH_PER_GROUP = `width_per_group`."""

    BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

    def __init__(self, depth, width, norm="FrozenBN", stride_in_1x1=True, num_groups=1,
                 width_per_group=None):
        super().__init__()
        self.stem = BasicStem(width, norm)
        in_channels, out_channels = width, 4 * width
        bottleneck = num_groups * (width if width_per_group is None else width_per_group)
        self.stage_names = []
        for i, count in enumerate(self.BLOCKS[depth]):
            blocks = []
            for b in range(count):
                blocks.append(BottleneckBlock(in_channels, out_channels, bottleneck,
                                              (1 if i == 0 else 2) if b == 0 else 1,
                                              num_groups, norm, stride_in_1x1))
                in_channels = out_channels
            name = f"res{i + 2}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            out_channels *= 2
            bottleneck *= 2

    def forward(self, x):
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs


class FPN(nn.Module):
    """detectron2's FPN (fuse "sum", norm "") with LastLevelMaxPool: {"p2".."p6"}."""

    def __init__(self, bottom_up, in_channels, out_channels):
        super().__init__()
        self.bottom_up = bottom_up
        for level, channels in zip(range(2, 6), in_channels):
            self.add_module(f"fpn_lateral{level}", Conv2d(channels, out_channels, 1))
            self.add_module(f"fpn_output{level}", Conv2d(out_channels, out_channels, 3,
                                                         padding=1))
        self.size_divisibility = 32

    def forward(self, x):
        features = self.bottom_up(x)
        prev = self.fpn_lateral5(features["res5"])
        results = [self.fpn_output5(prev)]
        for level in (4, 3, 2):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{level}")(features[f"res{level}"]) + top_down
            results.insert(0, getattr(self, f"fpn_output{level}")(prev))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return dict(zip(("p2", "p3", "p4", "p5", "p6"), results))


def resnet_fpn(depth, width, fpn_channels, **resnet_kw):
    bottom_up = ResNet(depth, width, **resnet_kw)
    return FPN(bottom_up, [4 * width * 2 ** i for i in range(4)], fpn_channels)


def preprocess(image_bgr, pixel_mean, pixel_std, size_divisibility=32):
    """GeneralizedRCNN/SemanticSegmentor.preprocess_image for one image (3, H, W) float:
    normalise, then zero-pad (ImageList.from_tensors) to a multiple of size_divisibility."""
    x = (image_bgr - pixel_mean.view(-1, 1, 1)) / pixel_std.view(-1, 1, 1)
    h, w = x.shape[-2:]
    ph, pw = (-(-h // size_divisibility) * size_divisibility,
              -(-w // size_divisibility) * size_divisibility)
    padded = x.new_zeros((1, 3, ph, pw))
    padded[0, :, :h, :w] = x
    return padded, (h, w)


# ------------------------------------------------------------------------------ PointRend ops
def point_sample(features, coords):
    """point_features.point_sample: features (N, C, H, W), coords (N, P, 2) in [0, 1]."""
    return F.grid_sample(features, 2.0 * coords[:, :, None] - 1.0, align_corners=False)[..., 0]


def uncertain_points_on_grid(uncertainty, num_points):
    """get_uncertain_point_coords_on_grid: uncertainty (R, 1, H, W) -> indices, coords."""
    r, _, h, w = uncertainty.shape
    num_points = min(h * w, num_points)
    indices = torch.topk(uncertainty.view(r, h * w), k=num_points, dim=1)[1]
    coords = torch.zeros(r, num_points, 2, dtype=uncertainty.dtype)
    coords[:, :, 0] = 1.0 / w / 2.0 + (indices % w).to(uncertainty.dtype) / w
    coords[:, :, 1] = 1.0 / h / 2.0 + (indices // w).to(uncertainty.dtype) / h
    return indices, coords


def regular_grid(r, side, dtype):
    """generate_regular_grid_point_coords: (R, side * side, 2)."""
    aff = torch.tensor([[[0.5, 0, 0.5], [0, 0.5, 0.5]]], dtype=dtype)
    grid = F.affine_grid(aff, torch.Size((1, 1, side, side)), align_corners=False)
    return grid.view(1, -1, 2).expand(r, -1, -1)


def fine_grained_features(features_list, strides, boxes, coords):
    """point_sample_fine_grained_features for one image: boxes (R, 4), box-relative coords
    (R, P, 2) -> (R, C, P)."""
    wrt_image = coords.clone()  # get_point_coords_wrt_image
    for axis in (0, 1):
        extent = boxes[:, None, 2 + axis] - boxes[:, None, axis]
        wrt_image[:, :, axis] = coords[:, :, axis] * extent + boxes[:, None, axis]
    out = []
    for fmap, stride in zip(features_list, strides):
        h, w = fmap.shape[-2:]
        scale = torch.tensor([w, h], dtype=coords.dtype) * stride
        grid = 2.0 * (wrt_image / scale)[None] - 1.0  # (1, R, P, 2)
        out.append(F.grid_sample(fmap, grid, align_corners=False)[0].transpose(1, 0))
    return torch.cat(out, dim=1)


class StandardPointHead(nn.Module):
    def __init__(self, in_channels, num_classes, fc_dim, num_fc, coarse_pred_each_layer,
                 cls_agnostic_mask=False):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        dim_in = in_channels + num_classes
        self.fc_layers = []
        for k in range(num_fc):
            fc = nn.Conv1d(dim_in, fc_dim, kernel_size=1, stride=1, padding=0, bias=True)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            dim_in = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim_in, 1 if cls_agnostic_mask else num_classes, 1)

    def forward(self, fine, coarse):
        x = torch.cat((fine, coarse), dim=1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat((x, coarse), dim=1)
        return self.predictor(x)


# ------------------------------------------------------------------------------ semantic
class SemSegFPNHead(nn.Module):
    """meta_arch/semantic_seg.py's SemSegFPNHead (norm "GN"), in_features p2..p5."""

    def __init__(self, in_channels, num_classes, conv_dims, common_stride=4, norm="GN"):
        super().__init__()
        self.in_features = ["p2", "p3", "p4", "p5"]
        self.scale_heads = []
        for name, stride in zip(self.in_features, (4, 8, 16, 32)):
            ops = []
            for k in range(max(1, int(np.log2(stride) - np.log2(common_stride)))):
                ops.append(Conv2d(in_channels if k == 0 else conv_dims, conv_dims, 3, padding=1,
                                  bias=not norm, norm=get_norm(norm, conv_dims),
                                  activation=F.relu))
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*ops))
            self.add_module(name, self.scale_heads[-1])
        self.predictor = Conv2d(conv_dims, num_classes, 1)

    def layers(self, features):
        x = None
        for head, name in zip(self.scale_heads, self.in_features):
            y = head(features[name])
            x = y if x is None else x + y
        return self.predictor(x)


def semantic_uncertainty(logits):
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


class PointRendSemSegHead(nn.Module):
    def __init__(self, in_channels, num_classes, conv_dims, fc_dim, num_fc,
                 coarse_pred_each_layer, subdivision_steps, subdivision_num_points):
        super().__init__()
        self.coarse_sem_seg_head = SemSegFPNHead(in_channels, num_classes, conv_dims)
        self.point_head = StandardPointHead(in_channels, num_classes, fc_dim, num_fc,
                                            coarse_pred_each_layer)
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points

    def forward(self, features):
        coarse = self.coarse_sem_seg_head.layers(features)
        logits = coarse.clone()
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            indices, coords = uncertain_points_on_grid(semantic_uncertainty(logits),
                                                       self.subdivision_num_points)
            fine = point_sample(features["p2"], coords)
            point_logits = self.point_head(fine, point_sample(coarse, coords))
            n, c, h, w = logits.shape
            logits = (logits.reshape(n, c, h * w)
                      .scatter_(2, indices.unsqueeze(1).expand(-1, c, -1), point_logits)
                      .view(n, c, h, w))
        return logits, coarse


class SemanticSegmentor(nn.Module):
    """SemanticSegmentor with a PointRendSemSegHead: `forward(image_bgr (3, H, W))` ->
    logits (K, H, W) (sem_seg_postprocess at the image's own size) and the coarse logits."""

    def __init__(self, backbone, sem_seg_head, pixel_mean_bgr, pixel_std_bgr):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean_bgr), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std_bgr), False)

    def forward(self, image_bgr):
        x, (h, w) = preprocess(image_bgr, self.pixel_mean, self.pixel_std)
        features = self.backbone(x)
        logits, coarse = self.sem_seg_head(features)
        return logits[0, :, :h, :w], coarse


# ------------------------------------------------------------------------------ boxes
def anchors_for_level(size, aspect_ratios, stride, grid_h, grid_w, dtype):
    """DefaultAnchorGenerator (offset 0) for one level: (H * W * A, 4)."""
    cell = []
    for ratio in aspect_ratios:
        w = math.sqrt(size ** 2 / ratio)
        h = ratio * w
        cell.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    cell = torch.tensor(cell, dtype=torch.float32).to(dtype)
    shift_x = torch.arange(0, grid_w * stride, step=stride, dtype=torch.float32).to(dtype)
    shift_y = torch.arange(0, grid_h * stride, step=stride, dtype=torch.float32).to(dtype)
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    sx, sy = sx.reshape(-1), sy.reshape(-1)
    shifts = torch.stack((sx, sy, sx, sy), dim=1)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


def apply_deltas(deltas, boxes, weights=(1.0, 1.0, 1.0, 1.0)):
    """Box2BoxTransform.apply_deltas: deltas (R, k * 4), boxes (R, 4) -> (R, k * 4)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=SCALE_CLAMP)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    pred = torch.stack((pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                        pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h), dim=-1)
    return pred.reshape(deltas.shape)


def clip(boxes, h, w):
    """Boxes.clip (R, 4) into [0, w] x [0, h]."""
    return torch.stack((boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                        boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)), dim=-1)


def box_iou(a, b):
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes, scores, threshold):
    """torchvision.ops.nms: greedy, by descending score (stable), IoU > threshold
    suppressed -> kept indices in score order."""
    order = torch.sort(scores, descending=True, stable=True)[1]
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= iou[i] > threshold
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)


def batched_nms(boxes, scores, groups, threshold):
    """torchvision.ops.batched_nms: NMS within each group, all kept sorted by score."""
    keep = torch.cat([torch.nonzero(groups == g)[:, 0][nms(boxes[groups == g],
                                                          scores[groups == g], threshold)]
                      for g in torch.unique(groups)]) if len(boxes) else groups[:0]
    return keep[torch.sort(scores[keep], descending=True, stable=True)[1]]


def roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned=True):
    """torchvision.ops.roi_align (ROIAlignV2 when aligned) for one image: features (1, C, H, W),
    boxes (R, 4) -> (R, C, o, o); sampling_ratio 0 is torchvision's adaptive
    ceil(roi_size / o) samples per bin and axis."""
    _, c, height, width = features.shape
    o = output_size
    offset = 0.5 if aligned else 0.0
    start_x, start_y = boxes[:, 0] * spatial_scale - offset, boxes[:, 1] * spatial_scale - offset
    roi_w = boxes[:, 2] * spatial_scale - offset - start_x
    roi_h = boxes[:, 3] * spatial_scale - offset - start_y
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / o, roi_h / o
    grid_w = (torch.full_like(roi_w, sampling_ratio) if sampling_ratio > 0
              else torch.ceil(roi_w / o)).long()
    grid_h = (torch.full_like(roi_h, sampling_ratio) if sampling_ratio > 0
              else torch.ceil(roi_h / o)).long()
    count = (grid_w * grid_h).clamp(min=1).to(features.dtype)
    g = max(int(grid_w.max()), int(grid_h.max()), 1) if len(boxes) else 1

    def axis(start, bin_size, grid, size):
        """Per-axis bilinear taps (torchvision's bilinear_interpolate) of the samples
        (R, o, g): low/high indices, their weights, the sample's validity."""
        i = torch.arange(g, dtype=features.dtype)
        p = (start[:, None, None] + torch.arange(o, dtype=features.dtype)[None, :, None]
             * bin_size[:, None, None]
             + (i[None, None, :] + 0.5) * bin_size[:, None, None] / grid[:, None, None])
        ok = (i[None, None, :] < grid[:, None, None]) & (p >= -1.0) & (p <= size)
        p = p.clamp(min=0)
        low = p.long()
        top = low >= size - 1
        low = torch.where(top, torch.full_like(low, size - 1), low)
        high = torch.where(top, low, low + 1)
        p = torch.where(top, low.to(p.dtype), p)
        frac = p - low
        return low, high, 1 - frac, frac, ok

    ylo, yhi, wy0, wy1, oky = axis(start_y, bin_h, grid_h, height)
    xlo, xhi, wx0, wx1, okx = axis(start_x, bin_w, grid_w, width)
    fmap = features[0]  # (C, H, W)
    out = 0
    for yi, wy in ((ylo, wy0), (yhi, wy1)):
        for xi, wx in ((xlo, wx0), (xhi, wx1)):
            # (C, R, o, g, o, g) values at (y, x), weights (R, o, g, o, g)
            v = fmap[:, yi[:, :, :, None, None], xi[:, None, None, :, :]]
            wgt = wy[:, :, :, None, None] * wx[:, None, None, :, :]
            out = out + v * wgt
    valid = oky[:, :, :, None, None] & okx[:, None, None, :, :]
    out = torch.where(valid, out, torch.zeros_like(out)).sum(dim=(3, 5))  # (C, R, o, o)
    return (out / count[None, :, None, None]).permute(1, 0, 2, 3)


def roi_pooler(features, strides, boxes, output_size, sampling_ratio):
    """ROIPooler (ROIAlignV2, canonical box 224 at level 4) for one image."""
    levels = [int(math.log2(s)) for s in strides]
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    level = torch.floor(4 + torch.log2(size / 224 + 1e-8)).clamp(levels[0], levels[-1])
    index = level.to(torch.int64) - levels[0]
    out = features[0].new_zeros((len(boxes), features[0].shape[1], output_size, output_size))
    for i, (fmap, stride) in enumerate(zip(features, strides)):
        chosen = torch.nonzero(index == i)[:, 0]
        if len(chosen):
            out[chosen] = roi_align(fmap, boxes[chosen], output_size, 1.0 / stride,
                                    sampling_ratio)
    return out


# ------------------------------------------------------------------------------ instance
class StandardRPNHead(nn.Module):
    def __init__(self, channels, num_anchors):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1, activation=nn.ReLU())
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * 4, 1)

    def forward(self, features):
        t = [self.conv(x) for x in features]
        return [self.objectness_logits(x) for x in t], [self.anchor_deltas(x) for x in t]


class RPN(nn.Module):
    """StandardRPN inference: per level the pre_nms_topk best anchors, decoded, clipped,
    nonempty, NMS per level, the post_nms_topk best (find_top_rpn_proposals)."""

    def __init__(self, channels, anchor_sizes, aspect_ratios, pre_nms_topk, post_nms_topk,
                 nms_thresh):
        super().__init__()
        self.rpn_head = StandardRPNHead(channels, len(aspect_ratios))
        self.anchor_sizes, self.aspect_ratios = anchor_sizes, aspect_ratios
        self.pre_nms_topk, self.post_nms_topk, self.nms_thresh = (pre_nms_topk, post_nms_topk,
                                                                  nms_thresh)

    def forward(self, features, image_size):
        names = ["p2", "p3", "p4", "p5", "p6"]
        maps = [features[k] for k in names]
        logits, deltas = self.rpn_head(maps)
        boxes_all, scores_all, levels = [], [], []
        for lvl, (fmap, lg, dl, size) in enumerate(zip(maps, logits, deltas, self.anchor_sizes)):
            h, w = fmap.shape[-2:]
            anchors = anchors_for_level(size, self.aspect_ratios, 2 ** (lvl + 2), h, w,
                                        fmap.dtype)
            lg = lg.permute(0, 2, 3, 1).flatten(1)[0]
            dl = dl.view(1, -1, 4, h, w).permute(0, 3, 4, 1, 2).flatten(1, -2)[0]
            proposals = apply_deltas(dl, anchors)
            k = min(len(lg), self.pre_nms_topk)
            scores, idx = lg.topk(k)
            boxes_all.append(proposals[idx])
            scores_all.append(scores)
            levels.append(torch.full((k,), lvl, dtype=torch.int64))
        boxes, scores, levels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(levels)
        boxes = clip(boxes, *image_size)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, self.nms_thresh)[:self.post_nms_topk]
        return boxes[keep]


class FastRCNNConvFCHead(nn.Module):
    def __init__(self, in_dim, fc_dim, num_fc):
        super().__init__()
        self.fcs = []
        for k in range(num_fc):
            fc = nn.Linear(in_dim if k == 0 else fc_dim, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)

    def forward(self, x):
        x = torch.flatten(x, start_dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return x


class FastRCNNOutputLayers(nn.Module):
    def __init__(self, in_dim, num_classes):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4)

    def inference(self, x, proposals, image_size, score_thresh, nms_thresh, topk):
        """fast_rcnn_inference_single_image -> boxes (D, 4), scores (D,), classes (D,)."""
        scores = F.softmax(self.cls_score(x), dim=-1)[:, :-1]
        boxes = apply_deltas(self.bbox_pred(x), proposals, (10.0, 10.0, 5.0, 5.0))
        k = scores.shape[1]
        boxes = clip(boxes.reshape(-1, 4), *image_size).view(-1, k, 4)
        mask = scores > score_thresh
        inds = mask.nonzero()
        boxes, scores = boxes[mask], scores[mask]
        keep = batched_nms(boxes, scores, inds[:, 1], nms_thresh)[:topk]
        return boxes[keep], scores[keep], inds[keep, 1]


class ConvFCHead(nn.Module):
    """PointRend's coarse mask head (version 2 names: fc1, fc2, prediction)."""

    def __init__(self, in_channels, conv_dim, fc_dim, num_fc, num_classes, side, pooler):
        super().__init__()
        self.output_shape = (num_classes, side, side)
        self.conv_layers = []
        if in_channels > conv_dim:
            self.reduce_channel_dim_conv = Conv2d(in_channels, conv_dim, 1, activation=F.relu)
            self.conv_layers.append(self.reduce_channel_dim_conv)
        self.reduce_spatial_dim_conv = Conv2d(conv_dim, conv_dim, 2, stride=2,
                                              activation=F.relu)
        self.conv_layers.append(self.reduce_spatial_dim_conv)
        dim = conv_dim * pooler * pooler // 4
        self.fcs = []
        for k in range(num_fc):
            fc = nn.Linear(dim, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)
            dim = fc_dim
        self.prediction = nn.Linear(fc_dim, num_classes * side * side)

    def forward(self, x):
        n = x.shape[0]
        for layer in self.conv_layers:
            x = layer(x)
        x = torch.flatten(x, start_dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.prediction(x).view(n, *self.output_shape)


def mask_uncertainty(logits, classes):
    if logits.shape[1] == 1:
        return -torch.abs(logits.clone())
    return -torch.abs(logits[torch.arange(logits.shape[0]), classes].unsqueeze(1))


class PointRendMaskHead(nn.Module):
    """PointRendMaskHead inference: coarse head on a `pooler` regular grid of p2, then the
    point head on an init grid and subdivision (with detectron2's skip of the steps whose
    points cover the whole mask)."""

    def __init__(self, channels, num_classes, conv_dim, coarse_fc_dim, coarse_num_fc, side,
                 pooler, fc_dim, num_fc, coarse_pred_each_layer, steps, num_points):
        super().__init__()
        self.point_head = StandardPointHead(channels, num_classes, fc_dim, num_fc,
                                            coarse_pred_each_layer)
        self.coarse_head = ConvFCHead(channels, conv_dim, coarse_fc_dim, coarse_num_fc,
                                      num_classes, side, pooler)
        self.pooler, self.num_points = pooler, num_points
        self.init_resolution, self.steps = side, steps
        while 4 * self.init_resolution ** 2 <= num_points:
            self.init_resolution *= 2
            self.steps -= 1

    def forward(self, features, boxes, classes):
        """-> mask probabilities of each box's class (R, 1, S, S), coarse logits."""
        p2, stride = [features["p2"]], [4]
        grid = regular_grid(len(boxes), self.pooler, boxes.dtype)
        pooled = fine_grained_features(p2, stride, boxes, grid)
        coarse = self.coarse_head(pooled.reshape(len(boxes), -1, self.pooler, self.pooler))
        logits = None
        for _ in range(self.steps + 1):
            if logits is None:
                coords = regular_grid(len(boxes), self.init_resolution, boxes.dtype)
            else:
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear",
                                       align_corners=False)
                indices, coords = uncertain_points_on_grid(mask_uncertainty(logits, classes),
                                                           self.num_points)
            fine = fine_grained_features(p2, stride, boxes, coords)
            point_logits = self.point_head(fine, point_sample(coarse, coords))
            if logits is None:
                r, c, _ = point_logits.shape
                logits = point_logits.reshape(r, c, self.init_resolution, self.init_resolution)
            else:
                r, c, h, w = logits.shape
                logits = (logits.reshape(r, c, h * w)
                          .scatter_(2, indices.unsqueeze(1).expand(-1, c, -1), point_logits)
                          .view(r, c, h, w))
        return mask_probs(logits, classes), coarse


def mask_probs(logits, classes):
    """mask_rcnn_inference: sigmoid of each box's class channel (R, 1, S, S)."""
    if logits.shape[1] == 1:
        return logits.sigmoid()
    return logits[torch.arange(len(classes)), classes][:, None].sigmoid()


class MaskRCNNConvUpsampleHead(nn.Module):
    def __init__(self, channels, num_classes, conv_dim, num_conv, pooler, sampling_ratio):
        super().__init__()
        self.conv_norm_relus = []
        for k in range(num_conv):
            conv = Conv2d(channels if k == 0 else conv_dim, conv_dim, 3, padding=1,
                          activation=nn.ReLU())
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
        self.deconv = nn.ConvTranspose2d(conv_dim, conv_dim, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        self.pooler, self.sampling_ratio = pooler, sampling_ratio

    def forward(self, features, boxes, classes):
        maps = [features[k] for k in ("p2", "p3", "p4", "p5")]
        x = roi_pooler(maps, (4, 8, 16, 32), boxes, self.pooler, self.sampling_ratio)
        for conv in self.conv_norm_relus:
            x = conv(x)
        logits = self.predictor(F.relu(self.deconv(x)))
        return mask_probs(logits, classes), logits


# ------------------------------------------------------------------------------ Implicit PointRend
def point_coords_wrt_image(boxes, coords):
    """get_point_coords_wrt_image: box-relative coords (R, P, 2) of boxes (R, 4) -> pixels."""
    return boxes[:, None, :2] + coords * (boxes[:, None, 2:] - boxes[:, None, :2])


def sample_point_labels(masks, coords_wrt_image):
    """point_features.sample_point_labels for one image: the 0/1 ground-truth masks (R, H, W)
    of each region's instance, bilinear at image-pixel coords (R, P, 2) -> (R, P)."""
    h, w = masks.shape[-2:]
    scale = torch.tensor([w, h], dtype=coords_wrt_image.dtype)
    return point_sample(masks[:, None].to(coords_wrt_image.dtype), coords_wrt_image / scale)[:, 0]


def roi_mask_point_loss(mask_logits, gt_classes, point_labels):
    """point_head.roi_mask_point_loss: mask_logits (R, M, P) at each region's ground-truth
    class (its one channel if M = 1), labels (R, P) (-1 ignored, counted in the mean)."""
    if mask_logits.shape[1] == 1:
        logits = mask_logits[:, 0]
    else:
        logits = mask_logits[torch.arange(len(gt_classes)), gt_classes]
    ignores = point_labels == -1
    return F.binary_cross_entropy_with_logits(logits, point_labels.to(logits.dtype),
                                              weight=(~ignores).to(logits.dtype),
                                              reduction="mean")


class ImplicitPointHead(nn.Module):
    """point_head.py's ImplicitPointHead: an MLP of num_fc + 1 layers (ReLU between them)
    whose weights and biases are an input, one set per region; buffer
    positional_encoding_gaussian_matrix (2, 128)."""

    def __init__(self, in_channels, num_classes, fc_dim, num_fc, image_feature_enabled=True,
                 pos_enc_enabled=True, cls_agnostic_mask=False):
        super().__init__()
        self.num_layers = num_fc + 1
        self.channels = fc_dim
        self.image_feature_enabled = image_feature_enabled
        self.positional_encoding_enabled = pos_enc_enabled
        self.num_classes = 1 if cls_agnostic_mask else num_classes
        self.in_channels = in_channels if image_feature_enabled else 0
        if pos_enc_enabled:
            self.in_channels += 256
            self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, 128)))
        assert self.in_channels > 0 and self.num_layers >= 2
        outs = [self.channels] * (self.num_layers - 1) + [self.num_classes]
        ins = [self.in_channels] + [self.channels] * (self.num_layers - 1)
        self.num_weight_params = [o * i for o, i in zip(outs, ins)]
        self.num_bias_params = outs
        self.shapes = list(zip(outs, ins))
        self.num_params = sum(self.num_weight_params) + sum(self.num_bias_params)

    def encode(self, coords):
        """The positional encoding of box-relative coords (R, P, 2) -> (R, 256, P)."""
        r, p, _ = coords.shape
        locations = 2 * coords.reshape(r * p, 2) - 1
        locations = 2 * np.pi * (locations @ self.positional_encoding_gaussian_matrix)
        locations = torch.cat([torch.sin(locations), torch.cos(locations)], dim=1)
        return locations.reshape(r, p, 256).permute(0, 2, 1)

    def forward(self, fine, coords, params):
        """fine (R, C, P), coords (R, P, 2), params (R, num_params) -> logits (R, M, P)."""
        r, p = coords.shape[:2]
        x = fine
        if self.positional_encoding_enabled:
            x = self.encode(coords) if not self.image_feature_enabled else \
                torch.cat([self.encode(coords), fine], dim=1)
        pieces = torch.split(params, self.num_weight_params + self.num_bias_params, dim=1)
        weights = [w.reshape(r, o, i) for w, (o, i) in zip(pieces[:self.num_layers], self.shapes)]
        biases = [b.reshape(r, o, 1) for b, (o, _) in zip(pieces[self.num_layers:], self.shapes)]
        for k, (w, b) in enumerate(zip(weights, biases)):  # _dynamic_mlp
            x = torch.einsum("nck,ndc->ndk", x, w) + b
            if k < self.num_layers - 1:
                x = F.relu(x)
        return x.reshape(r, self.num_classes, p)


class ImplicitPointRendMaskHead(nn.Module):
    """mask_head.py's ImplicitPointRendMaskHead on p2: the parameter head (a ConvFCHead of
    output shape (num_params,)) on a `pooler` regular grid, the point head's MLP, training on
    given points (detectron2 draws them with torch.rand), and subdivision inference from a
    sqrt(num_points) grid (no steps skipped)."""

    def __init__(self, channels, num_classes, conv_dim, fc_dim, num_fc, pooler, point_fc_dim,
                 point_num_fc, steps, num_points, regularizer, image_feature_enabled=True,
                 pos_enc_enabled=True, cls_agnostic_mask=False):
        super().__init__()
        self.point_head = ImplicitPointHead(channels, num_classes, point_fc_dim, point_num_fc,
                                            image_feature_enabled, pos_enc_enabled,
                                            cls_agnostic_mask)
        self.parameter_head = ConvFCHead(channels, conv_dim, fc_dim, num_fc,
                                         self.point_head.num_params, 1, pooler)
        self.pooler, self.steps, self.num_points = pooler, steps, num_points
        self.regularizer = regularizer
        self.init_resolution = int(math.sqrt(num_points))
        assert self.init_resolution ** 2 == num_points

    def predict_parameters(self, features, boxes):
        grid = regular_grid(len(boxes), self.pooler, boxes.dtype)
        pooled = fine_grained_features([features["p2"]], [4], boxes, grid)
        return self.parameter_head(pooled.reshape(len(boxes), -1, self.pooler, self.pooler)
                                   ).flatten(1)

    def point_logits(self, features, boxes, coords, params):
        fine = fine_grained_features([features["p2"]], [4], boxes, coords)
        return self.point_head(fine, coords, params)

    def losses(self, features, boxes, gt_classes, coords, point_labels):
        """The training losses at box-relative coords (R, P, 2) with their labels (R, P)."""
        params = self.predict_parameters(features, boxes)
        logits = self.point_logits(features, boxes, coords, params)
        return {"loss_l2": self.regularizer * (params ** 2).mean(),
                "loss_mask_point": roi_mask_point_loss(logits, gt_classes, point_labels)}

    def forward(self, features, boxes, classes):
        """-> mask probabilities of each box's class (R, 1, S, S), the first grid's logits
        (R, M, s, s)."""
        params = self.predict_parameters(features, boxes)
        logits = first = None
        for _ in range(self.steps + 1):
            if logits is None:
                coords = regular_grid(len(boxes), self.init_resolution, boxes.dtype)
            else:
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear",
                                       align_corners=False)
                indices, coords = uncertain_points_on_grid(mask_uncertainty(logits, classes),
                                                           self.num_points)
            point_logits = self.point_logits(features, boxes, coords, params)
            if logits is None:
                r, c, _ = point_logits.shape
                logits = first = point_logits.reshape(r, c, self.init_resolution,
                                                      self.init_resolution)
            else:
                r, c, h, w = logits.shape
                logits = (logits.reshape(r, c, h * w)
                          .scatter_(2, indices.unsqueeze(1).expand(-1, c, -1), point_logits)
                          .view(r, c, h, w))
        return mask_probs(logits, classes), first


class ROIHeads(nn.Module):
    """StandardROIHeads (box head on ROIAlignV2 of p2..p5, then the mask head on the
    detections)."""

    def __init__(self, channels, num_classes, pooler, sampling_ratio, fc_dim, num_fc,
                 mask_head, score_thresh, nms_thresh, detections_per_image):
        super().__init__()
        self.box_head = FastRCNNConvFCHead(channels * pooler * pooler, fc_dim, num_fc)
        self.box_predictor = FastRCNNOutputLayers(fc_dim, num_classes)
        self.mask_head = mask_head
        self.pooler, self.sampling_ratio = pooler, sampling_ratio
        self.score_thresh, self.nms_thresh, self.topk = (score_thresh, nms_thresh,
                                                         detections_per_image)

    def forward(self, features, proposals, image_size):
        maps = [features[k] for k in ("p2", "p3", "p4", "p5")]
        pooled = roi_pooler(maps, (4, 8, 16, 32), proposals, self.pooler, self.sampling_ratio)
        boxes, scores, classes = self.box_predictor.inference(
            self.box_head(pooled), proposals, image_size, self.score_thresh, self.nms_thresh,
            self.topk)
        masks, _ = self.mask_head(features, boxes, classes)
        return boxes, scores, classes, masks


def paste_masks(masks, boxes, height, width, threshold=0.5):
    """paste_masks_in_image (_do_paste_mask over the whole image): masks (R, 1, S, S)."""
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_y = torch.arange(0, height, dtype=masks.dtype) + 0.5
    img_x = torch.arange(0, width, dtype=masks.dtype) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    n = len(boxes)
    grid = torch.stack([img_x[:, None, :].expand(n, height, width),
                        img_y[:, :, None].expand(n, height, width)], dim=3)
    return F.grid_sample(masks, grid, align_corners=False)[:, 0] >= threshold


class GeneralizedRCNN(nn.Module):
    """GeneralizedRCNN inference on one BGR image (3, H, W) at its own size (no resize):
    boxes (D, 4), scores, classes, pasted masks (D, H, W), pre-paste probabilities."""

    def __init__(self, backbone, proposal_generator, roi_heads, pixel_mean_bgr, pixel_std_bgr):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean_bgr), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std_bgr), False)

    def forward(self, image_bgr):
        x, (h, w) = preprocess(image_bgr, self.pixel_mean, self.pixel_std)
        features = self.backbone(x)
        proposals = self.proposal_generator(features, (h, w))
        boxes, scores, classes, probs = self.roi_heads(features, proposals, (h, w))
        # detector_postprocess at the same size: scale 1, clip, drop empty boxes, paste
        boxes = clip(boxes, h, w)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores, classes, probs = boxes[keep], scores[keep], classes[keep], probs[keep]
        return {"boxes": boxes, "scores": scores, "classes": classes,
                "masks": paste_masks(probs, boxes, h, w), "mask_probs": probs[:, 0]}


# ------------------------------------------------------------------------------ weights
def randomize_(module, generator):
    """Gives every tensor of `module`'s state dict (parameters, norm buffers) random values
    of a scale that keeps activations O(1) through the network: weights normal /
    sqrt(fan_in), biases small, FrozenBN/GN scales in [0.5, 1.5], means and variances around
    0 and 1."""
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():  # persistent only
            shape = tensor.shape
            if name.endswith(("norm.weight", "running_var")):
                value = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
            elif tensor.ndim == 1:  # biases, running means
                value = 0.1 * torch.randn(shape, generator=generator, dtype=torch.float64)
            else:  # a stride-2 2x2 deconv gives each output pixel one tap per input channel
                fan_in = shape[0] if name.endswith("deconv.weight") else int(np.prod(shape[1:]))
                value = torch.randn(shape, generator=generator, dtype=torch.float64) \
                    / math.sqrt(fan_in)
            tensor.copy_(value.to(tensor.dtype))
    return module


def save_pkl(module, path, renames=(), extra=None):
    """The model zoo's format: a pickle of {"model": {name: ndarray}, "__author__": ...};
    `renames` (old, new) substrings rewrite names (legacy checkpoints), `extra` adds
    entries (buffers old checkpoints carry)."""
    import pickle

    weights = {}
    for key, value in module.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        weights[key] = value.detach().float().numpy()
    weights.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test"}, f)


def save_pth(module, path, iteration):
    """detectron2's training format: torch.save({"model": state_dict, "iteration": N})."""
    state = {k: v.detach().float() for k, v in module.state_dict().items()}
    torch.save({"model": state, "iteration": iteration, "optimizer": {}}, path)
