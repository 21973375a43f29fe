"""Conv and normalisation helpers shared by the segmentation networks.

Channels-last: every feature map is ``(N, H, W, C)``. Convolutions are padded
explicitly the way torch pads them (``padding = dilation * (k - 1) // 2`` on both
sides), because flax ``padding="SAME"`` with stride 2 puts the extra pixel on the
other side and shifts every strided feature map by half a pixel.

Initialisers are named after the torch/caffe2 fills they reproduce:

- ``msra_fill``: He-normal on ``fan_out`` with the ReLU gain (torchvision ResNet,
  detectron2 ``c2_msra_fill``). jax's "normal" is untruncated, as torch's.
- ``xavier_fill``: detectron2 ``c2_xavier_fill``, i.e. torch ``kaiming_uniform_(a=1)``:
  uniform with variance ``1 / fan_in``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from pointrend_jax.models import conv_grad

Array = jax.Array
Dtype = Any

msra_fill = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
xavier_fill = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")

NORMS = ("frozen_bn", "bn", "gn", "")
BN_MOMENTUM = 0.9  # flax convention: running = 0.9 * running + 0.1 * batch (torch momentum 0.1)
NORM_EPS = 1e-5  # torch BatchNorm2d / GroupNorm default
# torchvision's ImageNet normalisation, RGB on 0..255 pixels (= 255 * [0.485, 0.456, 0.406],
# 255 * [0.229, 0.224, 0.225])
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Dtype:
    """`config.model.dtype` ("float32" | "bfloat16") -> the jnp dtype."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.dtype must be 'float32' or 'bfloat16'; got {name!r}")
    return COMPUTE_DTYPES[name]


def normalize_images(images: Array, mean, std, dtype: Dtype, image_sizes=None) -> Array:
    """`images (N, H, W, 3)` uint8 or float 0..255 RGB -> `(images - mean) / std` in `dtype`
    (computed in float32).

    `image_sizes (N, 2)` int, the `(h, w)` of each image's content at the top left of a padded
    batch: the normalised pixels outside it are set to 0, detectron2's padding (it normalises,
    then pads with zeros: the pixel mean, which uint8 padding cannot hold). None: every pixel
    is content."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    x = (images.astype(jnp.float32) - mean) / std
    if image_sizes is not None:
        sizes = jnp.asarray(image_sizes, jnp.int32)
        rows = jnp.arange(x.shape[1])[None, :, None] < sizes[:, 0, None, None]
        cols = jnp.arange(x.shape[2])[None, None, :] < sizes[:, 1, None, None]
        x = jnp.where((rows & cols)[..., None], x, 0.0)
    return x.astype(dtype)


def check_norm(norm: str, allowed: tuple[str, ...], owner: str) -> None:
    """Raise a ``ValueError`` naming ``owner``'s ``norm`` argument if ``norm`` is not allowed."""
    if norm not in allowed:
        raise ValueError(f"{owner}: norm={norm!r} is not one of {allowed}")


def gn_groups(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups for ``channels``: the largest ``g <= max_groups`` dividing it.

    32 is the GroupNorm paper's (and detectron2's) choice; small CPU-sized models with
    fewer or odd channel counts fall back to fewer groups instead of failing.
    """
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    raise ValueError(f"gn_groups: channels must be positive, got {channels}")


def conv(
    features: int,
    kernel_size: int,
    *,
    name: str,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    use_bias: bool = False,
    kernel_init: Callable = msra_fill,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.Conv:
    """A square ``nn.Conv`` with torch-style symmetric padding ``dilation * (k - 1) // 2``.

    Must be called inside a compact method; ``name`` fixes the parameter path.
    Input ``(N, H, W, C_in)`` -> ``(N, ceil(H / stride), ceil(W / stride), features)``
    for odd kernels, exactly as torch ``Conv2d(padding=dilation * (k - 1) // 2)``.
    ``groups`` splits the channels into that many independent convolutions (torch's
    ``groups``): kernel ``(k, k, C_in / groups, features)``. Its kernel gradient is
    ``conv_grad``'s (matrix products on the CPU).
    """
    pad = dilation * (kernel_size - 1) // 2
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=param_dtype,
        conv_general_dilated=conv_grad.conv_general_dilated,
        name=name,
    )


class FrozenBatchNorm(nn.Module):
    """Batch norm with fixed statistics and affine: ``(x - mean) / sqrt(var + eps) * scale + bias``.

    All four vectors live in the ``"batch_stats"`` collection, so an optimiser over
    ``"params"`` never sees them, and nothing ever updates them. Equals torch
    ``BatchNorm2d`` in eval mode (and detectron2 ``FrozenBatchNorm2d``).
    Input ``(..., C)`` -> output ``(..., C)`` in ``dtype``.
    """

    eps: float = NORM_EPS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]

        def stat(name, init):
            return self.variable("batch_stats", name, lambda: init((c,), self.param_dtype)).value

        scale = stat("scale", jnp.ones)
        bias = stat("bias", jnp.zeros)
        mean = stat("mean", jnp.zeros)
        var = stat("var", jnp.ones)
        # Fold into one multiply-add, computed in float32 and cast once.
        mult = scale.astype(jnp.float32) * jax.lax.rsqrt(var.astype(jnp.float32) + self.eps)
        shift = bias.astype(jnp.float32) - mean.astype(jnp.float32) * mult
        return x.astype(self.dtype) * mult.astype(self.dtype) + shift.astype(self.dtype)


def norm_layer(
    norm: str,
    channels: int,
    *,
    name: str,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> Callable[[Array, bool], Array]:
    """Build the normalisation ``norm`` for ``channels`` as a function ``(x, train) -> y``.

    ``"frozen_bn"``: :class:`FrozenBatchNorm` (``train`` ignored).
    ``"bn"``: flax ``BatchNorm`` (torch momentum 0.1, eps 1e-5); batch statistics when
    ``train`` (global over a sharded batch under jit, i.e. SyncBN), running ones otherwise.
    ``"gn"``: ``GroupNorm`` with :func:`gn_groups` groups, eps 1e-5.
    ``""``: identity. Must be called inside a compact method; ``name`` fixes the path.
    """
    if norm == "":
        return lambda x, train: x
    if norm == "frozen_bn":
        module = FrozenBatchNorm(dtype=dtype, param_dtype=param_dtype, name=name)
        return lambda x, train: module(x)
    if norm == "bn":
        module = nn.BatchNorm(
            momentum=BN_MOMENTUM, epsilon=NORM_EPS, dtype=dtype, param_dtype=param_dtype, name=name
        )
        return lambda x, train: module(x, use_running_average=not train)
    if norm == "gn":
        module = nn.GroupNorm(
            num_groups=gn_groups(channels), epsilon=NORM_EPS, dtype=dtype, param_dtype=param_dtype,
            name=name,
        )
        return lambda x, train: module(x)
    raise ValueError(f"norm_layer: norm={norm!r} is not one of {NORMS}")


def init_variables(model, rng: jax.Array, image_shape: Tuple[int, int]) -> Dict[str, Any]:
    """Model variables for images of `image_shape (h, w)`."""
    params_rng, points_rng = jax.random.split(rng)
    images = jnp.zeros((1, *image_shape, 3), jnp.uint8)
    variables = model.init({"params": params_rng, "points": points_rng}, images, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
