"""Boundary IoU's boundary width (Cheng et al., CVPR 2021), shared by the semantic and the
instance metrics: the boundary of a mask is its pixels within `d` of the outside."""
from __future__ import annotations

import math


def boundary_dilation(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Boundary width `d` in pixels: `max(1, round(dilation_ratio * image diagonal))`."""
    if not dilation_ratio > 0:
        raise ValueError(f"dilation_ratio must be > 0; got {dilation_ratio!r}")
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))
