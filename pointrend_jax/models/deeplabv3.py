"""DeepLabV3 head (Chen et al. 2017): atrous spatial pyramid pooling on ``res5``.

Shape letters: N images, h x w the backbone's last map (image size / output_stride),
C channels, K classes.

ASPP runs five parallel branches on the same map -- a 1x1 conv, three 3x3 convs with
dilation (= padding) 6, 12, 18, and image pooling (global mean, 1x1 conv, broadcast
back) -- each followed by norm + ReLU; their concatenation is projected by a 1x1 conv +
norm + ReLU, dropped out in training, and a 1x1 predictor gives the logits. The
dilations are meant for output_stride 16 (double them at 8).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pointrend_jax.models.layers import check_norm, conv, norm_layer, xavier_fill

Array = jax.Array
Dtype = Any


class DeepLabV3Head(nn.Module):
    """ASPP + predictor.

    Attributes:
      num_classes: K.
      conv_dims: channels of every ASPP branch and of the projection (256).
      dilations: dilation of the three 3x3 branches.
      norm: ``"gn"`` (GroupNorm, 32 groups or the largest divisor of ``conv_dims`` below
        32) or ``"bn"`` (BatchNorm, batch statistics when ``train``). Convs have no bias.
      dropout: dropout rate after the projection (needs a ``"dropout"`` rng when training).
      in_feature: the key of the backbone map to read.
      dtype, param_dtype: compute and parameter dtypes.

    ``__call__(features, train=False)``: ``features[in_feature]`` ``(N, h, w, C)`` ->
    logits ``(N, h, w, K)`` at the backbone's output stride.
    Init: ASPP convs ``c2_xavier_fill`` (as detectron2's ASPP), predictor normal(std 0.001),
    biases 0.
    """

    num_classes: int
    conv_dims: int = 256
    dilations: Sequence[int] = (6, 12, 18)
    norm: str = "gn"
    dropout: float = 0.1
    in_feature: str = "res5"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        check_norm(self.norm, ("gn", "bn"), "DeepLabV3Head")
        if len(self.dilations) != 3 or any(int(d) < 1 for d in self.dilations):
            raise ValueError(
                f"DeepLabV3Head: dilations must be three positive ints, got {self.dilations!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DeepLabV3Head: dropout must be in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, features: Mapping[str, Array], train: bool = False) -> Array:
        if self.in_feature not in features:
            raise ValueError(
                f"DeepLabV3Head: features has no {self.in_feature!r} (in_feature); "
                f"got keys {sorted(features)}"
            )
        x = features[self.in_feature]
        if x.ndim != 4:
            raise ValueError(
                f"DeepLabV3Head: {self.in_feature} must be (N, h, w, C), got {x.shape}"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv_norm_relu(y, kernel_size, name, dilation=1):
            y = conv(self.conv_dims, kernel_size, dilation=dilation, kernel_init=xavier_fill,
                     name=name, **kw)(y)
            y = norm_layer(self.norm, self.conv_dims, name=f"{name}_norm", **kw)(y, train)
            return nn.relu(y)

        branches = [conv_norm_relu(x, 1, "aspp_0")]
        for i, d in enumerate(self.dilations):
            branches.append(conv_norm_relu(x, 3, f"aspp_{i + 1}", dilation=int(d)))
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        pooled = conv_norm_relu(pooled, 1, "aspp_pool")
        branches.append(jnp.broadcast_to(pooled, branches[0].shape))

        y = conv_norm_relu(jnp.concatenate(branches, axis=-1), 1, "aspp_project")
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return conv(self.num_classes, 1, use_bias=True,
                    kernel_init=nn.initializers.normal(stddev=0.001), name="predictor", **kw)(y)


__all__ = ["DeepLabV3Head"]
