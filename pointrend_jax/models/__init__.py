"""Segmentation networks, channels-last NHWC linen modules with ``dtype``/``param_dtype``.

- :class:`ResNet`: backbone -> ``{"res2".."res5"}`` (strides 4..32), torchvision layout.
- :class:`FPN`: ``{"res2".."res5"}`` -> ``{"p2".."p5"}``.
- :class:`SemanticFPNHead`: FPN levels -> coarse logits at stride 4.
- :class:`DeepLabV3Head`: ``res5`` -> logits at the backbone's output stride (ASPP).
"""
from pointrend_jax.models.deeplabv3 import DeepLabV3Head
from pointrend_jax.models.fpn import FPN
from pointrend_jax.models.layers import FrozenBatchNorm, gn_groups
from pointrend_jax.models.resnet import BasicBlock, Bottleneck, ResNet
from pointrend_jax.models.semantic_fpn import SemanticFPNHead

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DeepLabV3Head",
    "FPN",
    "FrozenBatchNorm",
    "ResNet",
    "SemanticFPNHead",
    "gn_groups",
]
