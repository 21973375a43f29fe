"""Training augmentation in NumPy/PIL: scale, pad, crop, flip, colour.

Scale is either a random factor of the image size or, as detectron2's recipes do, a
shortest-edge length drawn from a list (``ResizeShortestEdge``, "choice" sampling, with a cap
on the longer edge). Colour is either a simple brightness/contrast/saturation jitter or the
SSD photometric distortions (detectron2's ``ColorAugSSDTransform``, mmsegmentation's
``PhotoMetricDistortion``): brightness, contrast, saturation and hue, each with p = 0.5.

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

from pointrend_jax.data.transforms import settings_from_config, shortest_edge_size

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
    short_side: shortest-edge lengths in pixels, e.g. (512, 768, ..., 2048); when not
      empty, each image is resized so its short side is one of them, drawn uniformly, and
      min_scale/max_scale are not used (detectron2's ResizeShortestEdge, "choice").
    max_size: with short_side, the longer side is capped at this (None = no cap).
    color_aug_ssd: SSD colour distortions (see ``color_aug_ssd``), after color_jitter.
    """

    crop_size: tuple[int, int]
    min_scale: float = 1.0
    max_scale: float = 1.0
    flip: bool = True
    color_jitter: float = 0.0
    max_class_ratio: float = 1.0
    short_side: tuple[int, ...] = ()
    max_size: int | None = None
    color_aug_ssd: bool = False

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
        short_side = tuple(int(v) for v in self.short_side)
        if any(v < 1 for v in short_side):
            raise ValueError(f"augment short_side must list positive lengths, got {self.short_side!r}.")
        object.__setattr__(self, "short_side", short_side)
        if self.max_size is not None:
            if not short_side:
                raise ValueError(f"augment max_size={self.max_size} only applies with short_side; "
                                 "set short_side too, or leave max_size None.")
            if int(self.max_size) < 1:
                raise ValueError(f"augment max_size must be positive, got {self.max_size}.")
            object.__setattr__(self, "max_size", int(self.max_size))

    @classmethod
    def from_config(cls, cfg: Any) -> "AugmentConfig":
        """From an ml_collections ConfigDict, a mapping, or an AugmentConfig."""
        return settings_from_config(cls, cfg)


def resize(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resizes to ``size`` (h, w): image bilinear, label nearest (pixel centres aligned)."""
    if size == label.shape:
        return image, label
    wh = (size[1], size[0])
    image = np.asarray(Image.fromarray(image).resize(wh, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(wh, Image.NEAREST))
    return image, label


def random_scale(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                 min_scale: float, max_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resizes by a factor in [min_scale, max_scale]: image bilinear, label nearest."""
    scale = rng.uniform(min_scale, max_scale)
    if min_scale == max_scale == 1.0:
        return image, label
    height, width = label.shape
    return resize(image, label, (max(1, int(round(height * scale))), max(1, int(round(width * scale)))))


def resize_shortest_edge(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                         short_side, max_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resizes so the short side is one of ``short_side`` (drawn uniformly) and the long
    side at most ``max_size``: image bilinear, label nearest."""
    short = int(short_side[int(rng.integers(len(short_side)))])
    return resize(image, label, shortest_edge_size(*label.shape, short, max_size))


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


# --------------------------------------------------------------------------------------
# SSD colour distortions, on float RGB pixels in [0, 255].
# --------------------------------------------------------------------------------------

SSD_BRIGHTNESS_DELTA = 32.0  # added to every channel, uniform in [-32, 32]
SSD_CONTRAST_RANGE = (0.5, 1.5)  # every channel multiplied by a factor in this range
SSD_SATURATION_RANGE = (0.5, 1.5)  # HSV saturation multiplied by a factor in this range
SSD_HUE_DELTA = 18  # hue shifted by an integer in [-18, 18] of OpenCV's 180 hue steps


def rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """Float RGB (..., 3) in [0, 255] -> HSV with hue in [0, 1) turns, saturation in [0, 1],
    value in [0, 255]."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = x.max(axis=-1)
    chroma = value - x.min(axis=-1)
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(value == r, ((g - b) / safe) % 6.0,
                   np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(chroma > 0, hue / 6.0, 0.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    return np.stack([hue, saturation, value], axis=-1)


# For each hue sector 0..5, which of (value, t, p, q) (see hsv_to_rgb) are R, G and B.
_SECTOR_CHANNELS = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of ``rgb_to_hsv``."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    t = value * (1.0 - saturation * (1.0 - frac))
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * frac)
    candidates = np.stack([value, t, p, q], axis=-1)
    index = _SECTOR_CHANNELS[sector.astype(np.int64) % 6]
    return np.take_along_axis(candidates, index, axis=-1)


def adjust_brightness(x: np.ndarray, delta: float) -> np.ndarray:
    return np.clip(x + delta, 0.0, 255.0)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Scales every channel (SSD's contrast: about 0, not about the mean)."""
    return np.clip(x * factor, 0.0, 255.0)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    return adjust_saturation_hue(x, factor, 0)


def adjust_hue(x: np.ndarray, delta: int) -> np.ndarray:
    """Rotates the hue by ``delta`` of OpenCV's 180 steps (2 degrees each)."""
    return adjust_saturation_hue(x, 1.0, delta)


def adjust_saturation_hue(x: np.ndarray, factor: float, delta: int) -> np.ndarray:
    """Saturation times ``factor`` (clipped to 1), then hue + ``delta`` / 180 of a turn, in
    one round trip through HSV."""
    hsv = rgb_to_hsv(x)
    if factor != 1.0:
        hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0.0, 1.0)
    if delta:
        hsv[..., 0] = (hsv[..., 0] + delta / 180.0) % 1.0
    return hsv_to_rgb(hsv)


def color_aug_ssd(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SSD photometric distortions of a uint8 RGB image, in SSD's order: brightness; then
    contrast either first or last (a coin flip); saturation; hue. Each is applied with
    probability 0.5. Computed in float, rounded once at the end (detectron2 truncates to
    uint8 after each step, a difference of at most a few levels)."""
    x = image.astype(np.float32)
    if rng.random() < 0.5:
        x = adjust_brightness(x, rng.uniform(-SSD_BRIGHTNESS_DELTA, SSD_BRIGHTNESS_DELTA))
    contrast_first = rng.random() < 0.5

    def maybe_contrast(x):
        if rng.random() < 0.5:
            return adjust_contrast(x, rng.uniform(*SSD_CONTRAST_RANGE))
        return x

    if contrast_first:
        x = maybe_contrast(x)
    saturation = rng.uniform(*SSD_SATURATION_RANGE) if rng.random() < 0.5 else 1.0
    hue = int(rng.integers(-SSD_HUE_DELTA, SSD_HUE_DELTA + 1)) if rng.random() < 0.5 else 0
    if saturation != 1.0 or hue:  # both in one HSV round trip
        x = adjust_saturation_hue(x, saturation, hue)
    if not contrast_first:
        x = maybe_contrast(x)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment(example: Mapping[str, Any], rng: np.random.Generator, cfg: AugmentConfig | Any) -> dict[str, np.ndarray]:
    """Scale, pad, crop, flip and colour one example -> {"image" (h, w, 3), "label" (h, w)}."""
    cfg = AugmentConfig.from_config(cfg)
    image, label = np.asarray(example["image"]), np.asarray(example["label"])
    if image.dtype != np.uint8 or label.dtype != np.uint8 or image.shape[:2] != label.shape:
        raise ValueError(f"augment expects image uint8 (H, W, 3) and label uint8 (H, W), got "
                         f"{image.dtype} {image.shape} and {label.dtype} {label.shape}.")
    if cfg.short_side:
        image, label = resize_shortest_edge(image, label, rng, cfg.short_side, cfg.max_size)
    else:
        image, label = random_scale(image, label, rng, cfg.min_scale, cfg.max_scale)
    image, label = pad_to(image, label, cfg.crop_size)
    image, label = random_crop(image, label, rng, cfg.crop_size, cfg.max_class_ratio)
    if rng.random() < 0.5 and cfg.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    if cfg.color_jitter > 0:
        image = color_jitter(image, rng, cfg.color_jitter)
    if cfg.color_aug_ssd:
        image = color_aug_ssd(image, rng)
    return {"image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}


class SemanticAugment:
    """``augment`` as grain's random_map transform (a class, so worker processes can pickle
    it): ``(example, rng) -> {"image" uint8 (h, w, 3), "label" uint8 (h, w)}``."""

    def __init__(self, cfg: AugmentConfig | Any):
        self.cfg = AugmentConfig.from_config(cfg)

    def __call__(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return augment(example, rng, self.cfg)

    def __repr__(self) -> str:
        return f"SemanticAugment({self.cfg!r})"
