"""Example pictures: image, ground truth, coarse and PointRend predictions, chosen points.

Shape letters used throughout:
  H, W: image (or label map) height and width, K: classes, P: points of one subdivision step.

Label maps are integer `(H, W)` class ids; 255 (ignore) and any id without a colour are drawn
black. Points are `(x, y)` in `[0, 1]` relative to the map, as everywhere in pointrend_jax:
pixel `(i, j)` has its centre at `((j + 0.5) / W, (i + 0.5) / H)`.

Drawing uses matplotlib's object API (`Figure` + the Agg canvas), never pyplot, so it works
headless and leaves the global backend and figure state of other code alone.
"""
from __future__ import annotations

import colorsys
import math
import os
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

IGNORE_LABEL = 255
DEFAULT_TITLES = ("image", "ground truth", "coarse", "PointRend")
# Point colours per subdivision step: chosen to stand out on the label palette (which never
# uses pure black or white) and from each other.
STEP_COLOURS = ("#ffffff", "#000000", "#ff00ff", "#00ffff", "#ffff00", "#ff7f00")

_DPI = 100
_PAD_PX = 8
_TITLE_PX = 22
_LEGEND_PX = 26
_MIN_PANEL_PX = 256
_MAX_PANEL_PX = 512


def palette(num_classes: int) -> np.ndarray:
    """`(K, 3)` uint8 colours, one per class id; deterministic and distinct.

    Colour `i` does not depend on `K` (the palette for fewer classes is a prefix), so
    pictures of different runs match. Hues step by the golden ratio, so neighbouring ids
    get far-apart hues; saturation and brightness cycle so that ids far apart whose hues
    come close still differ. No colour is black: black is the ignore label 255 (row 255 of
    a palette with more than 255 entries is black, as id 255 is never a class).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes must be a Python int >= 1; got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    saturations = (0.85, 0.55, 1.0, 0.7)
    values = (0.95, 0.7, 0.82)
    colours = np.empty((num_classes, 3), np.uint8)
    for i in range(num_classes):
        hue = (0.05 + i * golden) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, saturations[i % 4], values[i % 3])
        colours[i] = np.round(np.asarray(rgb) * 255.0).astype(np.uint8)
    if num_classes > IGNORE_LABEL:
        colours[IGNORE_LABEL] = 0
    return colours


def colorize(label) -> np.ndarray:
    """Class ids `(H, W)` -> colours `(H, W, 3)` uint8; 255 and ids < 0 are black."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be a rank-2 array (H, W); got shape {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must hold integer class ids; got dtype {label.dtype}")
    top = int(label.max(initial=0))
    lut = palette(max(top + 1, IGNORE_LABEL + 1))
    out = lut[np.clip(label, 0, None)]
    out[(label < 0) | (label == IGNORE_LABEL)] = 0
    return out


def _panel_scale(height: int, width: int) -> float:
    """Display pixels per image pixel: small images blown up by a whole factor (crisp
    pixels), large ones shrunk so one panel stays at most _MAX_PANEL_PX wide or high."""
    longest = max(height, width)
    if longest < _MIN_PANEL_PX:
        return float(math.ceil(_MIN_PANEL_PX / longest))
    return min(1.0, _MAX_PANEL_PX / longest)


def _check_points(points) -> list:
    checked = []
    for step, p in enumerate(points):
        p = np.asarray(p, np.float64)
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(
                f"points[{step}] must be (P, 2) with (x, y) in [0, 1]; got shape {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"points[{step}] must be finite")
        checked.append(p)
    if len(checked) > len(STEP_COLOURS):
        raise ValueError(
            f"at most {len(STEP_COLOURS)} subdivision steps can be drawn; got {len(checked)}")
    return checked


def comparison_figure(
    image,
    gt,
    coarse,
    pointrend,
    points: Optional[Sequence[np.ndarray]] = None,
    titles: Sequence[str] = DEFAULT_TITLES,
) -> Figure:
    """Four panels "image | ground truth | coarse | PointRend" as a matplotlib `Figure`.

    `image (H, W, 3)` uint8; `gt`, `coarse`, `pointrend` integer label maps, each shown
    stretched over a panel of the image's size (so a coarse map may be smaller); `points`:
    optional list, one `(P_i, 2)` array of relative `(x, y)` per subdivision step, drawn on
    the PointRend panel in one colour per step, with a legend below the panels. The figure
    has an Agg canvas; its size in pixels is `fig.canvas.get_width_height()`.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8; got shape {image.shape} dtype {image.dtype}")
    if len(titles) != 4:
        raise ValueError(f"titles must name the 4 panels; got {list(titles)}")
    panels = [image]
    for name, label in (("gt", gt), ("coarse", coarse), ("pointrend", pointrend)):
        if np.ndim(label) != 2:
            raise ValueError(
                f"{name} must be a rank-2 label map (H, W); got shape {np.shape(label)}")
        panels.append(colorize(label))
    steps = _check_points(points or [])

    h, w = image.shape[:2]
    scale = _panel_scale(h, w)
    pw, ph = round(w * scale), round(h * scale)
    legend_px = _LEGEND_PX  # kept when there are no points: one size per image size
    fig_w = 4 * pw + 5 * _PAD_PX
    fig_h = _TITLE_PX + ph + legend_px + 2 * _PAD_PX
    fig = Figure(figsize=(fig_w / _DPI, fig_h / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)

    bottom = (_PAD_PX + legend_px) / fig_h
    axes = []
    for i, (panel, title) in enumerate(zip(panels, titles)):
        left = (_PAD_PX + i * (pw + _PAD_PX)) / fig_w
        ax = fig.add_axes((left, bottom, pw / fig_w, ph / fig_h))
        # Relative extent: every panel spans [0, 1] in x and y whatever its resolution, so
        # points in relative coordinates are plotted as they are.
        ax.imshow(panel, extent=(0.0, 1.0, 1.0, 0.0), interpolation="nearest", aspect="auto")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(1.0, 0.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9, pad=3)
        axes.append(ax)

    if steps:
        # Marker diameter grows with the blow-up so points stay visible on small images,
        # and stays small enough that thousands of points do not hide the prediction.
        diameter_pt = min(6.0, max(2.5, 1.2 * scale)) * 72.0 / _DPI
        handles = []
        for step, p in enumerate(steps):
            handles.append(axes[3].scatter(
                p[:, 0], p[:, 1], s=diameter_pt ** 2, c=STEP_COLOURS[step], marker="o",
                linewidths=0, label=f"step {step + 1}: {len(p)} pts", zorder=3 + step))
        # Grey backdrop: white step markers would vanish on the white figure.
        legend_marker_pt = 5.0 * 72.0 / _DPI
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0),
                   ncol=len(handles), fontsize=8,
                   markerscale=max(1.0, legend_marker_pt / diameter_pt),
                   handletextpad=0.2, columnspacing=1.0, borderpad=0.2,
                   frameon=True, facecolor="#a0a0a0", edgecolor="none", framealpha=1.0)
    return fig


def save_comparison(
    path,
    image,
    gt,
    coarse,
    pointrend,
    points: Optional[Sequence[np.ndarray]] = None,
    titles: Sequence[str] = DEFAULT_TITLES,
) -> str:
    """Writes `comparison_figure(...)` as a PNG at `path` (parent folders made) -> path."""
    fig = comparison_figure(image, gt, coarse, pointrend, points=points, titles=titles)
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white")
    return path
