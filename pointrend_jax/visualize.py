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
import io
import math
from typing import Optional, Sequence

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

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
    return _save(comparison_figure(image, gt, coarse, pointrend, points=points, titles=titles),
                 path)


# ----------------------------------------------------------------------------- instances
# Instance pictures: boxes `(D, 4)` are `(x0, y0, x1, y1)` in image pixels (pixel `(i, j)`
# covers `[j, j + 1) x [i, i + 1)`), masks `(D, H, W)` bool at the image's size, classes
# `(D,)` contiguous ids into `class_names`, and points `(P, 2)` image-pixel `(x, y)`.

_MASK_ALPHA = 0.5
INSTANCE_TITLES = ("ground truth", "coarse", "PointRend")


def _check_instances(name: str, inst: dict, image_shape, num_classes: int) -> dict:
    """Validated copy of one set of instances: boxes, classes, scores (or None), masks."""
    missing = [k for k in ("boxes", "classes", "masks") if k not in inst]
    if missing:
        raise ValueError(f"{name} must have boxes, classes, scores and masks; missing {missing}")
    h, w = image_shape
    masks = np.asarray(inst["masks"])
    if masks.ndim != 3 or masks.shape[1:] != (h, w) or masks.dtype != bool:
        raise ValueError(
            f"{name} masks must be (D, {h}, {w}) bool; got shape {masks.shape} dtype {masks.dtype}")
    d = masks.shape[0]
    boxes = np.asarray(inst["boxes"], np.float64)
    if d == 0 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.shape != (d, 4) or not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name} boxes must be finite, shape (D={d}, 4); got {boxes.shape}")
    classes = np.asarray(inst["classes"]).reshape(-1)
    if classes.shape != (d,) or (d and not np.issubdtype(classes.dtype, np.integer)):
        raise ValueError(f"{name} classes must be (D={d},) integers; got {classes.shape} "
                         f"dtype {classes.dtype}")
    if d and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"{name} classes must lie in [0, {num_classes}) (class_names)")
    scores = inst.get("scores")
    if scores is not None:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if scores.shape != (d,):
            raise ValueError(f"{name} scores must be (D={d},) or None; got {scores.shape}")
    return {"boxes": boxes, "classes": classes.astype(np.int64), "scores": scores,
            "masks": masks}


def blend_masks(image, masks, classes, num_classes: int, alpha: float = _MASK_ALPHA) -> np.ndarray:
    """`image (H, W, 3)` uint8 with each mask painted in its class colour (`palette`) at
    opacity `alpha`, later masks over earlier ones -> `(H, W, 3)` uint8."""
    out = np.asarray(image, np.float64).copy()
    colours = palette(max(int(num_classes), 1)).astype(np.float64)
    for m, c in zip(np.asarray(masks, bool), np.asarray(classes)):
        out[m] = (1.0 - alpha) * out[m] + alpha * colours[int(c)]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _draw_instances(ax, image, inst, class_names, points, title, scale) -> None:
    h, w = image.shape[:2]
    k = len(class_names)
    colours = palette(max(k, 1)) / 255.0
    ax.imshow(blend_masks(image, inst["masks"], inst["classes"], k),
              extent=(0.0, w, h, 0.0), interpolation="nearest", aspect="auto")
    ax.set_xlim(0.0, w)
    ax.set_ylim(h, 0.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9, pad=3)
    for i, (x0, y0, x1, y1) in enumerate(inst["boxes"]):
        c = int(inst["classes"][i])
        colour = colours[c]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=1.2, clip_on=True))
        text = str(class_names[c])
        if inst["scores"] is not None:
            text += f" {inst['scores'][i]:.2f}"
        ax.text(min(max(x0, 0.0), w), min(max(y0, 0.0), h), text, fontsize=7, color="white",
                va="bottom", ha="left", clip_on=True,
                bbox=dict(facecolor=colour, alpha=0.8, pad=1.0, edgecolor="none"))
    if points:
        diameter_pt = min(6.0, max(2.5, 1.2 * scale)) * 72.0 / _DPI
        for step, p in enumerate(points):
            ax.scatter(p[:, 0], p[:, 1], s=diameter_pt ** 2, marker="o", linewidths=0,
                       c=STEP_COLOURS[step % len(STEP_COLOURS)], zorder=3 + step)


def _check_pixel_points(points) -> list:
    checked = []
    for step, p in enumerate(points or []):
        p = np.asarray(p, np.float64)
        if p.size == 0:
            p = p.reshape(0, 2)
        if p.ndim != 2 or p.shape[1] != 2 or not np.all(np.isfinite(p)):
            raise ValueError(
                f"points[{step}] must be finite (P, 2) image-pixel (x, y); got shape {p.shape}")
        checked.append(p)
    return checked


def _instance_panels(image, panels, class_names, points, titles) -> Figure:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8; got shape {image.shape} dtype {image.dtype}")
    class_names = [str(n) for n in class_names]
    h, w = image.shape[:2]
    panels = [_check_instances(name, inst, (h, w), len(class_names)) for name, inst in panels]
    points = _check_pixel_points(points)
    n = len(panels)
    scale = _panel_scale(h, w)
    pw, ph = round(w * scale), round(h * scale)
    fig_w = n * pw + (n + 1) * _PAD_PX
    fig_h = _TITLE_PX + ph + 2 * _PAD_PX
    fig = Figure(figsize=(fig_w / _DPI, fig_h / _DPI), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    for i, (inst, title) in enumerate(zip(panels, titles)):
        left = (_PAD_PX + i * (pw + _PAD_PX)) / fig_w
        ax = fig.add_axes((left, _PAD_PX / fig_h, pw / fig_w, ph / fig_h))
        # Points go on the last panel (the PointRend prediction when there are several).
        _draw_instances(ax, image, inst, class_names, points if i == n - 1 else None,
                        title, scale)
    return fig


def instances_figure(image, boxes, classes, scores, masks, class_names, *, points=None,
                     title=None) -> Figure:
    """One panel: `image (H, W, 3)` uint8 with translucent class-coloured `masks (D, H, W)`
    bool, box outlines and "name score" labels (`scores` may be None: names only), and
    `points` (list of `(P, 2)` image-pixel `(x, y)`, one colour per entry) on top."""
    inst = {"boxes": boxes, "classes": classes, "scores": scores, "masks": masks}
    return _instance_panels(image, [("instances", inst)], class_names, points, [title])


def instance_comparison_figure(image, ground_truth: dict, coarse: dict, pointrend: dict,
                               class_names, points=None,
                               titles: Sequence[str] = INSTANCE_TITLES) -> Figure:
    """Three `instances_figure` panels "ground truth | coarse | PointRend"; each dict has
    boxes, classes, scores (None for the ground truth) and masks `(D, H, W)` bool at the
    image's size; `points` are drawn on the PointRend panel."""
    if len(titles) != 3:
        raise ValueError(f"titles must name the 3 panels; got {list(titles)}")
    panels = [("ground_truth", ground_truth), ("coarse", coarse), ("pointrend", pointrend)]
    return _instance_panels(image, panels, class_names, points, list(titles))


def _save(fig: Figure, path) -> str:
    """Writes `fig` as a PNG at `path` (local or a bucket, parent folders made) -> path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    path.write_bytes(buffer.getvalue())
    return str(path)


def save_instances(path, image, boxes, classes, scores, masks, class_names, *, points=None,
                   title=None) -> str:
    """Writes `instances_figure(...)` as a PNG at `path` (parent folders made) -> path."""
    return _save(instances_figure(image, boxes, classes, scores, masks, class_names,
                                  points=points, title=title), path)


def save_instance_comparison(path, image, ground_truth: dict, coarse: dict, pointrend: dict,
                             class_names, points=None) -> str:
    """Writes `instance_comparison_figure(...)` as a PNG at `path` (parent folders made)."""
    return _save(instance_comparison_figure(image, ground_truth, coarse, pointrend,
                                            class_names, points=points), path)
