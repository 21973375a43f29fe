"""ResNet backbone (He et al. 2016), channels-last, in torchvision's layout.

Shape letters: N images, H x W input size, C channels.

Submodules are named after torchvision's state dict with ``.`` -> ``_`` so a weight
converter maps names one to one: ``conv1``/``bn1`` (stem), ``layer{1..4}_{i}`` blocks
holding ``conv1, bn1, conv2, bn2[, conv3, bn3]`` and ``downsample_conv, downsample_bn``.
Convolutions have no bias and He-normal (fan_out) init, norms scale 1 / bias 0,
as torchvision. Outputs ``res2..res5`` are torchvision's ``layer1..layer4``.

ResNeXt (Xie et al. 2017; ``num_groups > 1``) is torchvision's and detectron2's layout too:
the bottleneck's 3x3 conv is split into ``num_groups`` groups and its inner width is
``int(planes * width_per_group / 64) * num_groups`` (``planes`` the stage's base channels,
64 at res2 for ``width=64``), so X-101-32x8d has 256 inner channels at res2 (32 groups of
8), doubling per stage; the block outputs stay ``4 * planes``.

Dilation (``output_stride`` 16 or 8) follows torchvision's
``replace_stride_with_dilation``: a dilated stage drops its stride, and its first block
still uses the previous stage's dilation in its 3x3 conv while the rest use the new one.
torchvision refuses dilation in ``BasicBlock``; here both 3x3 convs of a basic block take
that block's dilation, the same rule carried over.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pointrend_jax.models.layers import check_norm, conv, norm_layer

Array = jax.Array
Dtype = Any

# depth -> (block kind, blocks per stage)
STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
# output_stride -> which of (layer2, layer3, layer4) trade their stride 2 for dilation
_DILATE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
RESNET_NORMS = ("frozen_bn", "bn", "gn")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34).

    ``(N, H, W, C_in) -> (N, H/s, W/s, planes)``, ``s`` the stride.
    """

    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    norm: str = "frozen_bn"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = conv(self.planes, 3, stride=self.stride, dilation=self.dilation, name="conv1",
                   **kw)(x)
        out = nn.relu(norm_layer(self.norm, self.planes, name="bn1", **kw)(out, train))
        out = conv(self.planes, 3, dilation=self.dilation, name="conv2", **kw)(out)
        out = norm_layer(self.norm, self.planes, name="bn2", **kw)(out, train)
        return nn.relu(out + _shortcut(self, x, self.planes, train))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual (ResNet-50+, ResNeXt).

    ``(N, H, W, C_in) -> (N, H/s, W/s, 4 * planes)``; the 1x1 and 3x3 convs have
    ``inner_width`` channels, the 3x3 in ``groups`` groups. The stride sits in the 3x3 conv
    (torchvision "v1.5") unless ``stride_in_1x1`` (MSRA / caffe2 weights).
    """

    planes: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    stride_in_1x1: bool = False
    groups: int = 1
    width_per_group: int = 64
    norm: str = "frozen_bn"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def inner_width(self) -> int:
        """Channels of the 1x1 reduce and the 3x3 conv (torchvision's ``width``)."""
        return int(self.planes * (self.width_per_group / 64.0)) * self.groups

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        inner = self.inner_width
        out = conv(inner, 1, stride=s1, name="conv1", **kw)(x)
        out = nn.relu(norm_layer(self.norm, inner, name="bn1", **kw)(out, train))
        out = conv(inner, 3, stride=s3, dilation=self.dilation, groups=self.groups,
                   name="conv2", **kw)(out)
        out = nn.relu(norm_layer(self.norm, inner, name="bn2", **kw)(out, train))
        out = conv(self.planes * 4, 1, name="conv3", **kw)(out)
        out = norm_layer(self.norm, self.planes * 4, name="bn3", **kw)(out, train)
        return nn.relu(out + _shortcut(self, x, self.planes * 4, train))


def _shortcut(block: nn.Module, x: Array, channels: int, train: bool) -> Array:
    """The residual branch of ``block``: identity, or strided 1x1 conv + norm if ``downsample``."""
    if not block.downsample:
        return x
    kw = dict(dtype=block.dtype, param_dtype=block.param_dtype)
    y = conv(channels, 1, stride=block.stride, name="downsample_conv", **kw)(x)
    return norm_layer(block.norm, channels, name="downsample_bn", **kw)(y, train)


class ResNet(nn.Module):
    """ResNet backbone returning the four stage outputs.

    Attributes:
      depth: 18, 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
      width: base channels (64 standard); stage ``i`` (1..4) has ``width * 2**(i-1)``
        planes, times 4 for bottleneck blocks.
      norm: ``"frozen_bn"`` (fixed statistics in ``"batch_stats"``, as detectron2),
        ``"bn"`` (trainable BatchNorm, global statistics under jit) or ``"gn"``
        (GroupNorm, 32 groups or the largest divisor of the channels below 32).
      output_stride: 32, 16 (res5 dilated by 2) or 8 (res4 dilated by 2, res5 by 4).
      stride_in_1x1: put the bottleneck stride in the first 1x1 conv (MSRA weights).
      num_groups, width_per_group: ResNeXt's grouped 3x3 convs (bottleneck depths only):
        ``num_groups`` groups of ``width_per_group * planes / 64`` channels each; 1 and 64
        are the plain ResNet.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); param_dtype: parameter dtype.
      remat: rematerialise every block (``nn.remat``): the backward pass recomputes a
        block's activations from its input instead of keeping them, trading compute for
        memory; parameter names and results are unchanged.

    ``__call__(images (N, H, W, 3), train=False)`` returns ``{"res2", "res3", "res4",
    "res5"}`` with strides 4, 8, 16, 32 (res4/res5 capped at ``output_stride``); spatial
    sizes round up like torch (``ceil(H / stride)``) when ``H`` is not a multiple.
    """

    depth: int = 50
    width: int = 64
    norm: str = "frozen_bn"
    output_stride: int = 32
    stride_in_1x1: bool = False
    num_groups: int = 1
    width_per_group: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    def __post_init__(self):
        if self.depth not in STAGES:
            raise ValueError(f"ResNet: depth={self.depth!r} is not one of {tuple(STAGES)}")
        if self.output_stride not in _DILATE:
            raise ValueError(
                f"ResNet: output_stride={self.output_stride!r} is not one of {tuple(_DILATE)}"
            )
        check_norm(self.norm, RESNET_NORMS, "ResNet")
        if not (isinstance(self.width, int) and self.width > 0):
            raise ValueError(f"ResNet: width must be a positive int, got {self.width!r}")
        for name in ("num_groups", "width_per_group"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"ResNet: {name} must be a positive int, got {value!r}")
        grouped = (self.num_groups, self.width_per_group) != (1, 64)
        if grouped and STAGES[self.depth][0] == "basic":
            raise ValueError(f"ResNet: num_groups={self.num_groups}, width_per_group="
                             f"{self.width_per_group} (ResNeXt) needs bottleneck blocks "
                             f"(depth 50, 101 or 152), not depth={self.depth}")
        if int(self.width * (self.width_per_group / 64.0)) < 1:
            raise ValueError(f"ResNet: width={self.width} with width_per_group="
                             f"{self.width_per_group} leaves res2's groups no channels "
                             f"(width * width_per_group must be >= 64)")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> dict[str, Array]:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"ResNet: images must be (N, H, W, 3) channels-last, got shape {images.shape}"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        kind, blocks = STAGES[self.depth]
        expansion = _EXPANSION[kind]
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        if self.remat:
            block_cls = nn.remat(block_cls, static_argnums=(2,))  # (self, x, train): train static

        x = conv(self.width, 7, stride=2, name="conv1", **kw)(images)
        x = nn.relu(norm_layer(self.norm, self.width, name="bn1", **kw)(x, train))
        # Padding of a max pool counts as -inf (flax pads with the reduction's init value).
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        in_channels = self.width
        dilation = 1
        outputs = {}
        for stage, num_blocks in enumerate(blocks):
            planes = self.width * 2**stage
            stride = 1 if stage == 0 else 2
            previous_dilation = dilation
            if stage > 0 and _DILATE[self.output_stride][stage - 1]:
                dilation *= stride
                stride = 1
            for i in range(num_blocks):
                block_kw = dict(
                    planes=planes,
                    stride=stride if i == 0 else 1,
                    dilation=previous_dilation if i == 0 else dilation,
                    downsample=i == 0 and (stride != 1 or in_channels != planes * expansion),
                    norm=self.norm,
                    name=f"layer{stage + 1}_{i}",
                    **kw,
                )
                if kind == "bottleneck":
                    block_kw.update(stride_in_1x1=self.stride_in_1x1, groups=self.num_groups,
                                    width_per_group=self.width_per_group)
                x = block_cls(**block_kw)(x, train)
                in_channels = planes * expansion
            outputs[f"res{stage + 2}"] = x
        return outputs


__all__ = ["ResNet", "BasicBlock", "Bottleneck"]
