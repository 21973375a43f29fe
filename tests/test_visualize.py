"""Tests for pointrend_jax/visualize.py: colours, and the PNG the comparison writes."""
import numpy as np
import pytest
from PIL import Image

from pointrend_jax.visualize import (
    STEP_COLOURS,
    colorize,
    comparison_figure,
    palette,
    save_comparison,
)


def test_palette_is_deterministic_distinct_and_never_black():
    colours = palette(300)
    assert colours.shape == (300, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(palette(19), colours[:19])  # a prefix: same colour per id
    classes = np.delete(colours, 255, axis=0)
    assert len({tuple(c) for c in classes}) == len(classes)
    assert classes.max(axis=1).min() >= 100  # no class colour is black or near it
    np.testing.assert_array_equal(colours[255], [0, 0, 0])  # 255 is the ignore label


def test_colorize_maps_ids_to_palette_and_ignore_to_black(np_rng):
    label = np_rng.integers(0, 20, (13, 17))
    label[3:5, 2:9] = 255
    rgb = colorize(label)
    assert rgb.shape == (13, 17, 3) and rgb.dtype == np.uint8
    keep = label != 255
    np.testing.assert_array_equal(rgb[keep], palette(20)[label[keep]])
    assert np.all(rgb[~keep] == 0)


def _example(rng, h=128, w=128):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = rng.integers(0, 5, (h, w))
    coarse = rng.integers(0, 5, (h // 4, w // 4))  # a coarse map may be smaller
    return image, gt, coarse, gt.copy()


def test_save_comparison_writes_png_of_expected_size(np_rng, tmp_path):
    image, gt, coarse, pointrend = _example(np_rng)
    points = [np_rng.random((64, 2)), np_rng.random((256, 2))]
    path = save_comparison(tmp_path / "sub" / "cmp.png", image, gt, coarse, pointrend, points)
    with Image.open(path) as png:
        assert png.format == "PNG"
        size = png.size
        pixels = np.asarray(png.convert("RGB"))
    fig = comparison_figure(image, gt, coarse, pointrend, points)
    assert size == fig.canvas.get_width_height()
    # Four 128-px panels blown up 2x side by side, plus margins, titles and legend.
    assert 4 * 256 <= size[0] <= 4 * 256 + 80 and 256 <= size[1] <= 256 + 80
    assert pixels.std() > 0


def _render(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def test_points_are_drawn_on_pointrend_panel_at_their_locations(np_rng):
    image, gt, coarse, pointrend = _example(np_rng)
    points = [np_rng.uniform(0.05, 0.95, (4, 2)), np_rng.uniform(0.05, 0.95, (4, 2))]
    plain = _render(comparison_figure(image, gt, coarse, pointrend))
    fig = comparison_figure(image, gt, coarse, pointrend, points)
    drawn = _render(fig)
    assert plain.shape == drawn.shape

    height = drawn.shape[0]
    panel = fig.axes[3]
    for step, step_points in enumerate(points):
        colour = np.array([int(STEP_COLOURS[step][i:i + 2], 16) for i in (1, 3, 5)])
        for x, y in step_points:
            px, py = panel.transData.transform((x, y))
            col, row = int(px), int(height - py)
            patch = drawn[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3)
            if step == len(points) - 1:  # earlier steps' markers may be covered by later ones
                assert np.any(np.all(patch == colour, axis=1))
            assert np.any(patch != plain[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3))

    # Nothing changes on the other three panels.
    left_of_panel = int(panel.get_window_extent().x0) - 1
    top_of_legend = int(height - panel.get_window_extent().y0)
    np.testing.assert_array_equal(drawn[:top_of_legend, :left_of_panel],
                                  plain[:top_of_legend, :left_of_panel])


def test_comparison_rejects_bad_inputs(np_rng):
    image, gt, coarse, pointrend = _example(np_rng, 16, 16)
    with pytest.raises(ValueError, match="image"):
        comparison_figure(image[..., 0], gt, coarse, pointrend)
    with pytest.raises(ValueError, match="points"):
        comparison_figure(image, gt, coarse, pointrend, [np.zeros((3, 3))])
    with pytest.raises(ValueError, match="coarse"):
        comparison_figure(image, gt, coarse[None], pointrend)
