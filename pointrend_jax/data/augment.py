"""Training augmentation in NumPy/PIL: scale, pad, crop, flip, colour.

Deterministic given a ``np.random.Generator``: the same generator state gives the same
output, so grain's ``random_map`` (which seeds a generator from the pipeline seed and the
element's index) makes a whole run reproducible.

The image is resampled bilinearly and the label with nearest neighbour; PIL puts pixel
centres at ``i + 0.5`` for both, so the two stay aligned. The image stays uint8.

Shapes: H, W input size; h, w crop size.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
from PIL import Image

IGNORE_LABEL = 255
_CROP_TRIES = 10  # as detectron2's RandomCrop_CategoryAreaConstraint


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings (the keys of ``config.augment``).

    crop_size: (h, w) of every training example.
    min_scale, max_scale: the image is resized by a factor drawn uniformly from this range.
    flip: horizontal flip with probability 0.5.
    color_jitter: max relative change of brightness, contrast and saturation (0 = off).
    max_class_ratio: crops are redrawn (up to 10 times) while one class (not 255) covers at
      least this fraction of the labelled pixels (detectron2's single_category_max_area;
      1.0 = off).
    """

    crop_size: tuple[int, int]
    min_scale: float = 1.0
    max_scale: float = 1.0
    flip: bool = True
    color_jitter: float = 0.0
    max_class_ratio: float = 1.0

    def __post_init__(self):
        crop = tuple(int(v) for v in self.crop_size)
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(f"augment crop_size must be (h, w) with positive sizes, got {self.crop_size!r}.")
        object.__setattr__(self, "crop_size", crop)
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"augment needs 0 < min_scale <= max_scale, got "
                             f"min_scale={self.min_scale}, max_scale={self.max_scale}.")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"augment color_jitter must be in [0, 1), got {self.color_jitter}.")
        if not 0 < self.max_class_ratio <= 1:
            raise ValueError(f"augment max_class_ratio must be in (0, 1], got {self.max_class_ratio}.")

    @classmethod
    def from_config(cls, cfg: Any) -> "AugmentConfig":
        """From an ml_collections ConfigDict, a mapping, or an AugmentConfig."""
        if isinstance(cfg, cls):
            return cfg
        get = cfg.get if isinstance(cfg, Mapping) or hasattr(cfg, "get") else (
            lambda key, default=None: getattr(cfg, key, default))
        if get("crop_size", None) is None:
            raise ValueError("augment config needs crop_size (h, w).")
        values = {f.name: get(f.name, None) for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if v is not None})


def random_scale(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                 min_scale: float, max_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resizes by a factor in [min_scale, max_scale]: image bilinear, label nearest."""
    scale = rng.uniform(min_scale, max_scale)
    if min_scale == max_scale == 1.0:
        return image, label
    height, width = label.shape
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return image, label


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pads bottom/right to at least ``size`` (h, w): image with 0, label with 255."""
    pad_h, pad_w = max(size[0] - label.shape[0], 0), max(size[1] - label.shape[1], 0)
    if pad_h == pad_w == 0:
        return image, label
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
    label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_LABEL)
    return image, label


def _dominated(label: np.ndarray, max_class_ratio: float) -> bool:
    """True when the crop shows fewer than two classes or one covers >= max_class_ratio."""
    counts = np.bincount(label.ravel(), minlength=256)[:IGNORE_LABEL]
    counts = counts[counts > 0]
    return counts.size < 2 or counts.max() >= max_class_ratio * counts.sum()


def random_crop(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                size: tuple[int, int], max_class_ratio: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A random (h, w) window of arrays at least that large.

    With ``max_class_ratio < 1`` up to 10 windows are drawn and the first in which no single
    class covers ``max_class_ratio`` or more of the labelled pixels is kept (else the last).
    """
    (crop_h, crop_w), (height, width) = size, label.shape
    tries = _CROP_TRIES if max_class_ratio < 1.0 else 1
    for _ in range(tries):
        y0 = int(rng.integers(0, height - crop_h + 1))
        x0 = int(rng.integers(0, width - crop_w + 1))
        crop_label = label[y0:y0 + crop_h, x0:x0 + crop_w]
        if tries == 1 or not _dominated(crop_label, max_class_ratio):
            break
    return image[y0:y0 + crop_h, x0:x0 + crop_w], crop_label


def color_jitter(image: np.ndarray, rng: np.random.Generator, max_delta: float) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1 - d, 1 + d]."""
    brightness, contrast, saturation = rng.uniform(1.0 - max_delta, 1.0 + max_delta, 3)
    x = image.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.asarray([0.299, 0.587, 0.114], np.float32)
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment(example: Mapping[str, Any], rng: np.random.Generator, cfg: AugmentConfig | Any) -> dict[str, np.ndarray]:
    """Scale, pad, crop, flip and colour one example -> {"image" (h, w, 3), "label" (h, w)}."""
    cfg = AugmentConfig.from_config(cfg)
    image, label = np.asarray(example["image"]), np.asarray(example["label"])
    if image.dtype != np.uint8 or label.dtype != np.uint8 or image.shape[:2] != label.shape:
        raise ValueError(f"augment expects image uint8 (H, W, 3) and label uint8 (H, W), got "
                         f"{image.dtype} {image.shape} and {label.dtype} {label.shape}.")
    image, label = random_scale(image, label, rng, cfg.min_scale, cfg.max_scale)
    image, label = pad_to(image, label, cfg.crop_size)
    image, label = random_crop(image, label, rng, cfg.crop_size, cfg.max_class_ratio)
    if rng.random() < 0.5 and cfg.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    if cfg.color_jitter > 0:
        image = color_jitter(image, rng, cfg.color_jitter)
    return {"image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}
