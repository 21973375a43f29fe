"""Semantic FPN head (Kirillov et al., "Panoptic FPN", 2019), as detectron2's ``SemSegFPNHead``.

Shape letters: N images, H x W input image size, C channels, K classes.

Each pyramid level of stride ``s`` goes through ``max(1, log2(s) - log2(common_stride))``
blocks of [3x3 conv, norm, ReLU, then 2x bilinear upsampling unless ``s`` is already
``common_stride``]; the levels, now all at ``common_stride``, are summed and a 1x1
predictor gives the logits. In PointRend this is the coarse head (stride 4 logits).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from pointrend_jax.models.layers import check_norm, conv, msra_fill, norm_layer
from pointrend_jax.point_ops import upsample_bilinear

Array = jax.Array
Dtype = Any


def _log2_int(value: int, what: str) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"SemanticFPNHead: {what} must be a power of two, got {value!r}")
    return int(math.log2(value))


class SemanticFPNHead(nn.Module):
    """Coarse semantic segmentation head over FPN levels.

    Attributes:
      num_classes: K.
      conv_dims: channels of the 3x3 convs (128 in detectron2).
      common_stride: stride of the summed map and of the logits (4).
      norm: ``"gn"`` (GroupNorm, 32 groups or the largest divisor of ``conv_dims`` below
        32; convs without bias) or ``""`` (convs with bias).
      in_strides: ``{level name: stride}`` of the levels to use, e.g. FPN's p2..p5.
      dtype, param_dtype: compute and parameter dtypes.

    ``__call__(features)``: ``features[name]`` of shape ``(N, H/s, W/s, C)`` for every
    ``name, s`` in ``in_strides`` -> logits ``(N, H/common_stride, W/common_stride, K)``.
    Init: convs and predictor He-normal fan_out (``c2_msra_fill``), biases 0.
    """

    num_classes: int
    conv_dims: int = 128
    common_stride: int = 4
    norm: str = "gn"
    in_strides: Mapping[str, int] = FrozenDict({"p2": 4, "p3": 8, "p4": 16, "p5": 32})
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        check_norm(self.norm, ("", "gn"), "SemanticFPNHead")
        common = _log2_int(self.common_stride, "common_stride")
        if not self.in_strides:
            raise ValueError("SemanticFPNHead: in_strides is empty")
        for name, stride in self.in_strides.items():
            if _log2_int(stride, f"in_strides[{name!r}]") < common:
                raise ValueError(
                    f"SemanticFPNHead: in_strides[{name!r}]={stride} is finer than "
                    f"common_stride={self.common_stride}"
                )
        super().__post_init__()

    @nn.compact
    def __call__(self, features: Mapping[str, Array]) -> Array:
        missing = [name for name in self.in_strides if name not in features]
        if missing:
            raise ValueError(
                f"SemanticFPNHead: features is missing {missing} (from in_strides); "
                f"got keys {sorted(features)}"
            )
        kw = dict(kernel_init=msra_fill, dtype=self.dtype, param_dtype=self.param_dtype)
        norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        total = None
        for name, stride in self.in_strides.items():
            x = features[name]
            num_blocks = max(1, int(math.log2(stride)) - int(math.log2(self.common_stride)))
            for k in range(num_blocks):
                x = conv(self.conv_dims, 3, use_bias=self.norm == "", name=f"{name}_{k}", **kw)(x)
                norm = norm_layer(self.norm, self.conv_dims, name=f"{name}_{k}_norm", **norm_kw)
                x = nn.relu(norm(x, False))
                if stride != self.common_stride:
                    x = upsample_bilinear(x, 2)
            if total is not None and x.shape != total.shape:
                raise ValueError(
                    f"SemanticFPNHead: level {name!r} (stride {stride}) reaches shape {x.shape} "
                    f"at common_stride, others {total.shape}; the image H and W must be "
                    f"multiples of the largest stride {max(self.in_strides.values())}"
                )
            total = x if total is None else total + x
        return conv(self.num_classes, 1, use_bias=True, name="predictor", **kw)(total)


__all__ = ["SemanticFPNHead"]
