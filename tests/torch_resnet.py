"""Plain-torch re-statement of torchvision's ResNet, shared by the model and converter tests.

``TorchResNet`` has torchvision's module names, so its ``state_dict()`` has the keys of a
real torchvision checkpoint (``conv1.weight``, ``layer3.22.bn2.running_var``,
``layer1.0.downsample.1.weight`` ...) minus ``fc``. ``torch_resnet_to_variables`` is the
test-side statement of the name mapping to the linen ``ResNet``.
"""
import math

import jax.numpy as jnp
import torch
import torch.nn.functional as F
from torch import nn as tnn


# ----------------------------------------------------------------------------------------
# Torch oracle: torchvision's ResNet layout, re-stated.
# ----------------------------------------------------------------------------------------


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, dilation, downsample, stride_in_1x1=False):
        super().__init__()
        del stride_in_1x1  # the only strided conv of a basic block is a 3x3 anyway
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, dilation, downsample, stride_in_1x1=False):
        super().__init__()
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, s1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, s2, dilation, dilation, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TorchResNet(tnn.Module):
    """torchvision ResNet minus avgpool/fc; forward returns [layer1, ..., layer4] (NCHW)."""

    LAYOUT = {
        18: (TorchBasicBlock, (2, 2, 2, 2)),
        34: (TorchBasicBlock, (3, 4, 6, 3)),
        50: (TorchBottleneck, (3, 4, 6, 3)),
        101: (TorchBottleneck, (3, 4, 23, 3)),
        152: (TorchBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth, width, replace_stride_with_dilation=(False, False, False),
                 stride_in_1x1=False):
        super().__init__()
        block, counts = self.LAYOUT[depth]
        self.inplanes, self.dilation = width, 1
        self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        dilate = (False,) + tuple(replace_stride_with_dilation)
        for i, n in enumerate(counts):
            layer = self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2, dilate[i],
                                     stride_in_1x1)
            setattr(self, f"layer{i + 1}", layer)

    def _make_layer(self, block, planes, blocks, stride, dilate, stride_in_1x1):
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(
                tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                tnn.BatchNorm2d(planes * block.expansion),
            )
        layers = [
            block(self.inplanes, planes, stride, previous_dilation, downsample, stride_in_1x1)
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, 1, self.dilation, None, stride_in_1x1))
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


def randomize_(module, seed):
    """Random weights everywhere, including BN/GN affine and BN running statistics."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, tnn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, (tnn.BatchNorm2d, tnn.GroupNorm)):
                c = m.weight.shape[0]
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                if isinstance(m, tnn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                    m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return module.eval()


# ----------------------------------------------------------------------------------------
# Name mapping torch state dict -> linen variables (the future weight converter).
# ----------------------------------------------------------------------------------------

_BN_LEAVES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _torch_module_path(parts):
    """["layer1", "0", "downsample", "1"] -> ("layer1_0", "downsample_bn")."""
    path = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if p.startswith("layer") and i + 1 < len(parts) and parts[i + 1].isdigit():
            path.append(f"{p}_{parts[i + 1]}")
            i += 2
        elif p == "downsample":
            path.append({"0": "downsample_conv", "1": "downsample_bn"}[parts[i + 1]])
            i += 2
        else:
            path.append(p)
            i += 1
    return tuple(path)


def torch_resnet_to_variables(state_dict, norm="frozen_bn"):
    """torchvision ResNet state dict -> ``{"params": ..., "batch_stats": ...}`` for ``ResNet``.

    Conv ``weight (O, I, kh, kw)`` -> ``kernel (kh, kw, I, O)``. BatchNorm ``weight, bias,
    running_mean, running_var`` -> ``scale, bias, mean, var``: all four in "batch_stats"
    for ``norm="frozen_bn"``; ``scale, bias`` in "params" for ``norm="bn"``.
    ``num_batches_tracked`` and ``fc.*`` are dropped.
    """
    variables = {"params": {}, "batch_stats": {}}
    for key, value in state_dict.items():
        *parts, leaf = key.split(".")
        if leaf == "num_batches_tracked" or parts[0] == "fc":
            continue
        path = _torch_module_path(parts)
        array = value.detach().cpu().numpy()
        if array.ndim == 4:
            collection, name, array = "params", "kernel", array.transpose(2, 3, 1, 0)
        else:
            name = _BN_LEAVES[leaf]
            frozen = norm == "frozen_bn" or name in ("mean", "var")
            collection = "batch_stats" if frozen else "params"
        node = variables[collection]
        for p in path:
            node = node.setdefault(p, {})
        node[name] = jnp.asarray(array)
    return variables
