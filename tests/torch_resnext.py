"""Torch re-statements of ResNeXt (Xie et al. 2017), shared by the ResNeXt tests.

``TorchResNeXt``: torchvision's ResNeXt layout (``resnext50_32x4d`` ...) as a subclass of
``torch_resnet.TorchResNet``: the same module names, the bottleneck's 3x3 conv in ``groups``
groups and its inner width ``int(planes * width_per_group / 64) * groups``, so its
``state_dict()`` has the keys and shapes of a real torchvision ResNeXt checkpoint (minus ``fc``).

``make_c2_resnext_blobs`` / ``c2_forward``: caffe2 blobs with the names of detectron2's FAIR
``X-101-32x8d.pkl`` (MSRA's names: ``res3_0_branch2b_w`` ..., frozen BN as ``_bn_s``/``_bn_b``),
and detectron2's ``ResNet`` driven directly by them: BGR input, stride in the 1x1 or the 3x3
conv (``STRIDE_IN_1X1``), grouped 3x3 (``NUM_GROUPS``), frozen BN ``x * s + b``.
"""
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from torch_resnet import TorchResNet


def inner_width(planes, groups, width_per_group):
    """torchvision's ``Bottleneck`` width: ``int(planes * (base_width / 64.)) * groups``."""
    return int(planes * (width_per_group / 64.0)) * groups


class TorchResNeXtBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, dilation, downsample, stride_in_1x1=False, *,
                 groups, width_per_group):
        super().__init__()
        width = inner_width(planes, groups, width_per_group)
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = tnn.Conv2d(inplanes, width, 1, s1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, s2, dilation, dilation, groups=groups,
                                bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TorchResNeXt(TorchResNet):
    """torchvision's ResNeXt minus avgpool/fc (bottleneck depths); forward returns
    [layer1, ..., layer4] (NCHW)."""

    def __init__(self, depth, width, groups, width_per_group, **kwargs):
        self.grouping = (groups, width_per_group)  # read by _make_layer during __init__
        super().__init__(depth, width, **kwargs)

    def _make_layer(self, block, planes, blocks, stride, dilate, stride_in_1x1):
        groups, width_per_group = self.grouping
        grouped = functools.partial(TorchResNeXtBottleneck, groups=groups,
                                    width_per_group=width_per_group)
        grouped.expansion = TorchResNeXtBottleneck.expansion
        return super()._make_layer(grouped, planes, blocks, stride, dilate, stride_in_1x1)


C2_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def make_c2_resnext_blobs(rng, depth, width, groups, width_per_group):
    """Random caffe2 blobs with the names and shapes of FAIR's ``X-{depth}-...pkl`` (the real
    file: depth 101, width 64, 32 groups x 8), plus its unused ``fc1000_*`` blobs."""
    blobs = {}

    def conv(name, c_out, c_in, k):
        w = rng.standard_normal((c_out, c_in, k, k)) * math.sqrt(2.0 / (c_in * k * k))
        blobs[f"{name}_w"] = w.astype(np.float32)

    def frozen_bn(name, c):
        blobs[f"{name}_bn_s"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        blobs[f"{name}_bn_b"] = rng.normal(0.0, 0.1, c).astype(np.float32)

    conv("conv1", width, 3, 7)
    frozen_bn("res_conv1", width)
    c_in = width
    for stage, count in enumerate(C2_BLOCKS[depth]):
        planes = width * 2**stage
        inner = inner_width(planes, groups, width_per_group)
        for i in range(count):
            block = f"res{stage + 2}_{i}"
            for branch, c_out, c_from, k in (("branch2a", inner, c_in, 1),
                                             ("branch2b", inner, inner // groups, 3),
                                             ("branch2c", 4 * planes, inner, 1)):
                conv(f"{block}_{branch}", c_out, c_from, k)
                frozen_bn(f"{block}_{branch}", c_out)
            if i == 0:
                conv(f"{block}_branch1", 4 * planes, c_in, 1)
                frozen_bn(f"{block}_branch1", 4 * planes)
            c_in = 4 * planes
    blobs["fc1000_w"] = rng.standard_normal((1000, c_in)).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    return blobs


def c2_forward(blobs, images_bgr_nchw, stride_in_1x1, groups):
    """detectron2's ResNet(eXt) on caffe2 blobs, re-stated: -> [res2, res3, res4, res5] NCHW."""
    t = {k: torch.from_numpy(v) for k, v in blobs.items()}

    def affine(x, name):  # FrozenBN of caffe2 weights: scale and bias only
        return x * t[f"{name}_bn_s"][:, None, None] + t[f"{name}_bn_b"][:, None, None]

    def conv_bn(x, name, stride=1, padding=0, conv_groups=1):
        y = F.conv2d(x, t[f"{name}_w"], stride=stride, padding=padding, groups=conv_groups)
        return affine(y, name)

    x = F.relu(affine(F.conv2d(images_bgr_nchw, t["conv1_w"], stride=2, padding=3), "res_conv1"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    s1, s3 = (True, False) if stride_in_1x1 else (False, True)
    outs = []
    stage = 2
    while f"res{stage}_0_branch2a_w" in t:
        i = 0
        while f"res{stage}_{i}_branch2a_w" in t:
            block = f"res{stage}_{i}"
            stride = 2 if stage > 2 and i == 0 else 1
            out = F.relu(conv_bn(x, f"{block}_branch2a", stride if s1 else 1))
            out = F.relu(conv_bn(out, f"{block}_branch2b", stride if s3 else 1, padding=1,
                                 conv_groups=groups))
            out = conv_bn(out, f"{block}_branch2c")
            shortcut = (conv_bn(x, f"{block}_branch1", stride) if f"{block}_branch1_w" in t
                        else x)
            x = F.relu(out + shortcut)
            i += 1
        outs.append(x)
        stage += 1
    return outs
