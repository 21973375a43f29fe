"""Users' own data in a folder, checked before training starts.

Layout (one sub-folder per split; a mask has its image's stem)::

    ROOT/classes.txt               optional: one class name per line (sets the class count)
    ROOT/train/images/*.jpg|jpeg|png
    ROOT/train/masks/*.png         uint8 class ids, 255 = ignore ("L" or palette "P" PNGs)
    ROOT/val/images/...
    ROOT/val/masks/...

``FolderSource`` is a random-access source (``__len__``, ``__getitem__``) that grain reads
directly; ``validate_folder`` opens every file once and raises one ``DataError`` that names
each offending file and what was expected, so a bad file fails the run at the start and
not hours into training.

Shapes: H, W image height and width.
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from pointrend_jax.data.files import IGNORE_LABEL, DataError, read_image, read_label, report

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIX = ".png"
SPLITS = ("train", "val")


# --------------------------------------------------------------------------------------
# Classes.
# --------------------------------------------------------------------------------------


def read_classes_file(root: str | os.PathLike) -> list[str] | None:
    """Names in ``ROOT/classes.txt`` (blank lines ignored), or None when there is no file."""
    path = pathlib.Path(root) / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    if not names:
        raise DataError(f"{path} lists no class names; write one class name per line.")
    return names


def resolve_class_names(root: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """Class names from ``ROOT/classes.txt``, else ``class_0..`` for ``num_classes``.

    Raises DataError when neither is given, when they disagree, or when the count does not
    leave 255 free for "ignore".
    """
    names = read_classes_file(root)
    classes_path = pathlib.Path(root) / "classes.txt"
    if names is not None:
        if num_classes is not None and int(num_classes) != len(names):
            raise DataError(
                f"--config.data.num_classes={num_classes} disagrees with {classes_path}, which "
                f"lists {len(names)} classes; fix one of them (or leave num_classes unset).")
    elif num_classes is None:
        raise DataError(
            f"The number of classes is unknown: set --config.data.num_classes or write "
            f"{classes_path} with one class name per line.")
    else:
        names = [f"class_{i}" for i in range(int(num_classes))]
    if not 1 <= len(names) <= IGNORE_LABEL:
        raise DataError(
            f"--config.data.num_classes must be in [1, {IGNORE_LABEL}] (255 means ignore), "
            f"got {len(names)}.")
    return names


# --------------------------------------------------------------------------------------
# Listing and decoding.
# --------------------------------------------------------------------------------------


def _split_dirs(root: str | os.PathLike, split: str) -> tuple[pathlib.Path, pathlib.Path]:
    split_dir = pathlib.Path(root) / split
    if not split_dir.is_dir():
        raise DataError(
            f"Missing split folder {split_dir}: expected {split_dir}/images/ and "
            f"{split_dir}/masks/ (root {root}).")
    images_dir, masks_dir = split_dir / "images", split_dir / "masks"
    for sub in (images_dir, masks_dir):
        if not sub.is_dir():
            raise DataError(
                f"Missing folder {sub}: each split needs images/ "
                f"({'/'.join(IMAGE_SUFFIXES)}) and masks/ ({MASK_SUFFIX}) with matching stems.")
    return images_dir, masks_dir


def _list_files(folder: pathlib.Path, suffixes: Sequence[str]) -> dict[str, pathlib.Path]:
    """stem -> path for the files in ``folder`` with one of ``suffixes`` (any letter case)."""
    found: dict[str, list[pathlib.Path]] = {}
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in suffixes:
            found.setdefault(path.stem, []).append(path)
    duplicates = {stem: paths for stem, paths in found.items() if len(paths) > 1}
    if duplicates:
        listed = "; ".join(", ".join(str(p) for p in sorted(ps)) for ps in list(duplicates.values())[:10])
        raise DataError(f"Several files share a stem in {folder} (which one is meant?): {listed}")
    return {stem: paths[0] for stem, paths in found.items()}


def list_pairs(root: str | os.PathLike, split: str) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
    """(stem, image path, mask path) of a split, sorted by stem.

    Raises DataError on a missing folder, an empty split, or an image without a mask (or a
    mask without an image), naming the files.
    """
    images_dir, masks_dir = _split_dirs(root, split)
    images = _list_files(images_dir, IMAGE_SUFFIXES)
    masks = _list_files(masks_dir, (MASK_SUFFIX,))
    if not images:
        raise DataError(f"Split {split!r} is empty: no {'/'.join(IMAGE_SUFFIXES)} files in {images_dir}.")
    problems = [f"image {images[s]} has no mask: expected {masks_dir / (s + MASK_SUFFIX)}"
                for s in sorted(images.keys() - masks.keys())]
    problems += [f"mask {masks[s]} has no image: expected {images_dir / s}"
                 f"{{{','.join(IMAGE_SUFFIXES)}}}" for s in sorted(masks.keys() - images.keys())]
    if problems:
        raise DataError(report(f"Images and masks of split {split!r} do not pair up", problems))
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (grayscale, palette and RGBA converted)."""
    return read_image(path, str(path))


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask PNG as uint8 (H, W) class ids; mode "L" or palette "P" (its indices)."""
    return read_label(path, str(path))


# --------------------------------------------------------------------------------------
# The source.
# --------------------------------------------------------------------------------------


class FolderSource:
    """Random access to ``ROOT/split``: ``source[i]`` -> {"image", "label", "stem"}.

    The file list is taken once, at construction, sorted by stem; files are decoded on access.
    """

    def __init__(self, root: str | os.PathLike, split: str):
        self.root = pathlib.Path(root)
        self.split = split
        self._pairs = list_pairs(root, split)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem, image_path, mask_path = self._pairs[index]
        image, label = load_image(image_path), load_mask(mask_path)
        if image.shape[:2] != label.shape:
            raise DataError(f"Image {image_path} is {_hw(image.shape)} but its mask {mask_path} "
                            f"is {_hw(label.shape)}; they must be the same size.")
        return {"image": image, "label": label, "stem": stem}

    @property
    def stems(self) -> list[str]:
        return [stem for stem, _, _ in self._pairs]

    def paths(self, index: int) -> tuple[pathlib.Path, pathlib.Path]:
        """(image path, mask path) of example ``index``."""
        return self._pairs[index][1], self._pairs[index][2]

    def __repr__(self) -> str:
        return f"FolderSource(root={str(self.root)!r}, split={self.split!r}, len={len(self)})"


def _hw(shape) -> str:
    return f"{shape[1]}x{shape[0]} (WxH)"


def _check_pair(image_path: pathlib.Path, mask_path: pathlib.Path, num_classes: int) -> list[str]:
    """Every problem of one image/mask pair, as readable lines (empty when it is fine)."""
    problems = []
    image_size = mask = None
    try:
        with Image.open(image_path) as img:
            img.load()  # decodes everything: truncated or corrupt files fail here
            image_size = img.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        problems.append(f"image {image_path} is unreadable or corrupt: {err}")
    try:
        mask = load_mask(mask_path)
    except DataError as err:
        problems.append(str(err))
    if mask is None:
        return problems
    if image_size is not None and (mask.shape[1], mask.shape[0]) != image_size:
        problems.append(f"mask {mask_path} is {_hw(mask.shape)} but its image {image_path} is "
                        f"{image_size[0]}x{image_size[1]} (WxH); they must be the same size")
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        listed = ", ".join(str(int(v)) for v in bad[:10])
        problems.append(f"mask {mask_path} has label value(s) {listed} >= num_classes={num_classes} "
                        f"(valid ids are 0..{num_classes - 1}, and 255 = ignore)")
    return problems


def validate_folder(root: str | os.PathLike, split: str, num_classes: int, *,
                    num_threads: int | None = None) -> int:
    """Checks one split of a folder data set; returns its number of examples.

    Opens and decodes every image and mask (in a few threads; PIL decodes outside the GIL).
    Raises DataError naming each offending file: missing folders, an empty split, unpaired
    files, unreadable files, a mask that is not single-channel 8-bit, an image/mask size
    mismatch, or a label >= num_classes other than 255.
    """
    if not 1 <= int(num_classes) <= IGNORE_LABEL:
        raise DataError(f"num_classes must be in [1, {IGNORE_LABEL}], got {num_classes}.")
    pairs = list_pairs(root, split)
    workers = num_threads or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda p: _check_pair(p[1], p[2], int(num_classes)), pairs))
    problems = [line for lines in results for line in lines]
    if problems:
        raise DataError(report(f"Bad files in split {split!r} of {root}", problems))
    return len(pairs)
