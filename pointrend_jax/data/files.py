"""Reading image and label files, and reporting what is wrong with them, for every reader
under `data/`: one error type, one report format, one decoder of each kind.

Shapes: H x W image.
"""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IGNORE_LABEL = 255
LABEL_MODES = ("L", "P")  # single-channel 8-bit; for "P" the palette indices are the ids
MAX_REPORTED = 30  # problems listed in one DataError before "... and N more"
_PIL_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


class DataError(ValueError):
    """The data on disk does not match the expected layout or format; the message lists
    every problem found, with the file paths."""


def report(title: str, problems: Sequence[str], hint: str = "") -> str:
    """A readable multi-line error: the title, at most `MAX_REPORTED` problems, then `hint`."""
    shown = list(problems[:MAX_REPORTED])
    more = len(problems) - len(shown)
    text = f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n  "
    text += "\n  ".join(shown)
    if more:
        text += f"\n  ... and {more} more"
    return text + (f"\n{hint}" if hint else "")


def _open(source: str | os.PathLike | bytes):
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def read_image(source: str | os.PathLike | bytes, what: str) -> np.ndarray:
    """An image (a path or the encoded bytes) as uint8 (H, W, 3) RGB: grey, palette, CMYK and
    RGBA converted, 16-bit grey reduced to its top byte. `what` names it in errors."""
    try:
        with _open(source) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(img, dtype=np.float64)
                rgb = np.clip(grey / 256.0, 0, 255).astype(np.uint8)
                return np.repeat(rgb[..., None], 3, axis=-1)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except _PIL_ERRORS as err:
        raise DataError(f"Cannot read image {what}: {err}") from err


def read_label(source: str | os.PathLike | bytes, what: str) -> np.ndarray:
    """An 8-bit label PNG (a path or the encoded bytes) as its ids, uint8 (H, W): mode "L",
    or palette "P" whose indices are the ids. `what` names it in errors."""
    try:
        with _open(source) as img:
            img.load()
            mode = img.mode
            if mode in LABEL_MODES:
                return np.asarray(img, dtype=np.uint8)
    except _PIL_ERRORS as err:
        raise DataError(f"Cannot read label {what}: {err}") from err
    raise DataError(
        f"Label {what} has PIL mode {mode!r}; expected a single-channel 8-bit PNG (mode 'L', "
        "or palette 'P' whose indices are the class ids) holding uint8 class ids with "
        f"{IGNORE_LABEL} = ignore.")
