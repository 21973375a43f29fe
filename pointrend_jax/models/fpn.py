"""Feature Pyramid Network (Lin et al. 2017) over ResNet stages, as detectron2's ``FPN``.

Shape letters: N images, H x W input image size, C channels.

``res{l}`` (stride ``2**l``) -> lateral 1x1 conv; the top-down path starts at ``res5``,
upsamples 2x with nearest neighbour and adds the next lateral ("sum" fusion); each merged
map gets a 3x3 output conv. Names follow detectron2 (``fpn_lateral{l}``, ``fpn_output{l}``,
with ``_norm`` suffixes when normed). No extra ``p6`` level: semantic segmentation does not
use it.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from pointrend_jax.models.layers import check_norm, conv, norm_layer, xavier_fill

Array = jax.Array
Dtype = Any

_LEVELS = (2, 3, 4, 5)


def upsample_nearest_2x(x: Array) -> Array:
    """``(N, H, W, C) -> (N, 2H, 2W, C)``, torch ``interpolate(scale_factor=2, mode="nearest")``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class FPN(nn.Module):
    """Top-down feature pyramid with lateral connections.

    Attributes:
      out_channels: C of every output level (256 standard).
      norm: ``""`` (convs with bias) or ``"gn"`` (GroupNorm after each conv, no bias).
      dtype, param_dtype: compute and parameter dtypes.

    ``__call__({"res2".."res5"})`` with ``res{l}`` of shape ``(N, H/2**l, W/2**l, C_l)``
    returns ``{"p2".."p5"}``, ``p{l}`` of shape ``(N, H/2**l, W/2**l, out_channels)``.
    Each level must be exactly twice the next one's size, which holds when the image's
    H and W are multiples of 32 and the backbone has ``output_stride=32``.
    Init: detectron2's ``c2_xavier_fill`` (uniform, variance 1/fan_in), biases 0.
    """

    out_channels: int = 256
    norm: str = ""
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        check_norm(self.norm, ("", "gn"), "FPN")
        super().__post_init__()

    @nn.compact
    def __call__(self, features: Mapping[str, Array]) -> dict[str, Array]:
        missing = [f"res{l}" for l in _LEVELS if f"res{l}" not in features]
        if missing:
            raise ValueError(f"FPN: features is missing {missing}; got keys {sorted(features)}")
        for fine, coarse in zip(_LEVELS[:-1], _LEVELS[1:]):
            fs, cs = features[f"res{fine}"].shape[1:3], features[f"res{coarse}"].shape[1:3]
            if fs != (2 * cs[0], 2 * cs[1]):
                raise ValueError(
                    f"FPN: res{fine} spatial size {fs} is not twice res{coarse} {cs}; the image "
                    "H and W must be multiples of 32 and the backbone output_stride must be 32"
                )
        kw = dict(
            use_bias=self.norm == "", kernel_init=xavier_fill,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv_norm(x, kernel_size, name):
            y = conv(self.out_channels, kernel_size, name=name, **kw)(x)
            norm = norm_layer(self.norm, self.out_channels, name=f"{name}_norm", **norm_kw)
            return norm(y, False)

        outputs = {}
        merged = None
        for level in reversed(_LEVELS):
            lateral = conv_norm(features[f"res{level}"], 1, f"fpn_lateral{level}")
            merged = lateral if merged is None else lateral + upsample_nearest_2x(merged)
            outputs[f"p{level}"] = conv_norm(merged, 3, f"fpn_output{level}")
        return {f"p{l}": outputs[f"p{l}"] for l in _LEVELS}


__all__ = ["FPN", "upsample_nearest_2x"]
