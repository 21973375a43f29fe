"""Image pieces both tasks' transforms and predictors use: settings dataclasses from
configs, detectron2's shortest-edge size, padding to a divisor, and the input check of
`predict`.

Shapes: N images, H x W image.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


def settings_from_config(cls, cfg: Any):
    """The augment dataclass `cls` from `cfg` (a ConfigDict, a mapping, an object with those
    attributes, or already a `cls`): every field `cfg` sets (not None) is used, the rest keep
    their defaults; `crop_size` is required."""
    if isinstance(cfg, cls):
        return cfg
    get = cfg.get if isinstance(cfg, Mapping) or hasattr(cfg, "get") else (
        lambda key, default=None: getattr(cfg, key, default))
    if get("crop_size", None) is None:
        raise ValueError("augment config needs crop_size (h, w).")
    values = {f.name: get(f.name, None) for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if v is not None})


def shortest_edge_size(height: int, width: int, short: int, max_size: int | None) -> tuple[int, int]:
    """(h, w) with the short side ``short`` and the long side at most ``max_size``, the
    aspect ratio kept; rounded half up as detectron2's ResizeShortestEdge."""
    scale = short / min(height, width)
    if max_size is not None and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of `divisor`."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_to_multiple(images, divisor: int, xp=np):
    """Zero-pads `images (N, H, W, C)` at the bottom/right to multiples of `divisor`; `xp` is
    the array module (`numpy`, or `jax.numpy` inside a traced function)."""
    _, h, w, _ = images.shape
    ph, pw = padded_size(h, w, divisor)
    if (ph, pw) == (h, w):
        return images
    return xp.pad(images, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))


def check_image(image) -> np.ndarray:
    """`image` as a uint8 `(H, W, 3)` RGB array, or a ValueError naming what it is instead."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB; got {image.dtype} {image.shape}")
    return image
