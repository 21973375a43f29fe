"""The recipes' augmentations: detectron2's ResizeShortestEdge and SSD colour distortions."""
import colorsys

import numpy as np
import pytest

from pointrend_jax.semantic import augment as aug_lib

PALETTE = np.array([[30, 200, 100], [70, 170, 120], [110, 140, 140], [150, 110, 160], [190, 80, 180]],
                   np.uint8)


def block_example(rng, blocks=(5, 10), cell=8):
    label = np.kron(rng.integers(0, len(PALETTE), blocks), np.ones((cell, cell), np.int64)).astype(np.uint8)
    return {"image": PALETTE[label], "label": label}


# ---------------------------------------------------------------------------------------
# ResizeShortestEdge
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw, short, max_size, expected", [
    ((1024, 2048), 512, 4096, (512, 1024)),
    ((1024, 2048), 2048, 4096, (2048, 4096)),
    ((1024, 2048), 2048, 3000, (1500, 3000)),   # long side capped, ratio kept
    ((375, 500), 256, None, (256, 341)),        # 341.33 rounds down
    ((500, 375), 512, None, (683, 512)),        # 682.67 rounds up
    ((3, 5), 2, None, (2, 3)),                  # 3.33 -> 3 (half up, as detectron2)
])
def test_shortest_edge_size_sets_short_side_and_caps_long_side(hw, short, max_size, expected):
    assert aug_lib.shortest_edge_size(*hw, short, max_size) == expected


def test_resize_shortest_edge_draws_every_listed_length_and_keeps_labels_aligned(np_rng):
    example = block_example(np_rng)  # 40 x 80
    lengths = (20, 32, 48, 64)
    seen = set()
    for seed in range(40):
        image, label = aug_lib.resize_shortest_edge(example["image"], example["label"],
                                                    np.random.default_rng(seed), lengths)
        assert label.shape == image.shape[:2] and label.shape[1] == 2 * label.shape[0]
        seen.add(label.shape[0])
        assert set(np.unique(label)) <= set(np.unique(example["label"]))  # nearest: no new ids
        # Away from block edges (PIL's filter reaches 2 input pixels when downscaling by 2)
        # the bilinear image shows the colour of the nearest-neighbour label.
        interior = np.ones(label.shape, bool)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                interior &= np.roll(label, (dy, dx), (0, 1)) == label
        np.testing.assert_array_equal(image[interior], PALETTE[label[interior]])
    assert seen == set(lengths)


def test_short_side_replaces_the_random_scale_factor(np_rng):
    example = block_example(np_rng)  # 40 x 80
    cfg = dict(crop_size=(32, 64), min_scale=0.5, max_scale=2.0, flip=False, color_jitter=0.0,
               short_side=(20,))
    for seed in range(5):
        out = aug_lib.augment(example, np.random.default_rng(seed), cfg)
        # Always resized to 20 x 40, then padded with 255 to the 32 x 64 crop.
        assert (out["label"][20:] == 255).all() and (out["label"][:, 40:] == 255).all()
        assert (out["label"][:20, :40] != 255).all()
        assert (out["image"][20:] == 0).all()


def test_max_size_caps_the_long_side_in_augment(np_rng):
    example = block_example(np_rng)  # 40 x 80
    cfg = dict(crop_size=(64, 128), flip=False, color_jitter=0.0, short_side=(60,), max_size=100)
    out = aug_lib.augment(example, np.random.default_rng(0), cfg)
    labelled = out["label"] != 255
    assert labelled.any(axis=1).sum() == 50 and labelled.any(axis=0).sum() == 100


def test_defaults_keep_the_previous_augmentation_exactly(np_rng):
    """No short_side, no SSD colour: the same generator gives what the scale / pad / crop /
    flip / jitter sequence gave before (no extra random draws)."""
    example = block_example(np_rng)
    cfg = aug_lib.AugmentConfig(crop_size=(24, 32), min_scale=0.5, max_scale=2.0, flip=True,
                                color_jitter=0.3, max_class_ratio=0.75)
    out = aug_lib.augment(example, np.random.default_rng(7), cfg)
    rng = np.random.default_rng(7)
    image, label = aug_lib.random_scale(example["image"], example["label"], rng, 0.5, 2.0)
    image, label = aug_lib.pad_to(image, label, (24, 32))
    image, label = aug_lib.random_crop(image, label, rng, (24, 32), 0.75)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    image = aug_lib.color_jitter(image, rng, 0.3)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["label"], label)


@pytest.mark.parametrize("bad, match", [
    (dict(short_side=(512, 0)), "short_side must list positive"),
    (dict(max_size=1024), "max_size=1024 only applies with short_side"),
    (dict(short_side=(64,), max_size=0), "max_size must be positive"),
])
def test_bad_resize_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        aug_lib.AugmentConfig(crop_size=(32, 32), **bad)


def test_augment_config_reads_the_new_keys_from_base_config():
    from pointrend_jax.config import base_config

    c = base_config()
    cfg = aug_lib.AugmentConfig.from_config(c.augment)
    assert cfg.short_side == () and cfg.max_size is None and cfg.color_aug_ssd is False
    c.augment.short_side = (512, 768)
    c.augment.max_size = 4096
    c.augment.color_aug_ssd = True
    cfg = aug_lib.AugmentConfig.from_config(c.augment)
    assert cfg.short_side == (512, 768) and cfg.max_size == 4096 and cfg.color_aug_ssd


# ---------------------------------------------------------------------------------------
# SSD colour distortions
# ---------------------------------------------------------------------------------------


def test_hsv_conversion_matches_colorsys_and_round_trips(np_rng):
    rgb = np_rng.uniform(0, 255, (200, 3))
    rgb[:10] = rgb[:10, :1]  # some greys
    hsv = aug_lib.rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in rgb])
    np.testing.assert_allclose(hsv[:, 1:2], expected[:, 1:2], atol=1e-9)
    np.testing.assert_allclose(hsv[:, 2], expected[:, 2] * 255.0, atol=1e-9)
    # Hue is circular: compare on the circle.
    np.testing.assert_allclose(np.cos(2 * np.pi * hsv[:, 0]), np.cos(2 * np.pi * expected[:, 0]), atol=1e-9)
    np.testing.assert_allclose(np.sin(2 * np.pi * hsv[:, 0]), np.sin(2 * np.pi * expected[:, 0]), atol=1e-9)
    np.testing.assert_allclose(aug_lib.hsv_to_rgb(hsv), rgb, atol=1e-9)


def test_hue_shift_is_in_opencv_half_degrees():
    red = np.array([[[255.0, 0.0, 0.0]]])
    # +18 steps of 2 degrees = 36 degrees: from red towards yellow, G = 255 * 36 / 60.
    np.testing.assert_allclose(aug_lib.adjust_hue(red, 18), [[[255.0, 153.0, 0.0]]], atol=1e-9)
    np.testing.assert_allclose(aug_lib.adjust_hue(red, -18), [[[255.0, 0.0, 153.0]]], atol=1e-9)
    np.testing.assert_allclose(aug_lib.adjust_hue(red, 90), [[[0.0, 255.0, 255.0]]], atol=1e-9)


def test_saturation_zero_gives_grey_and_one_is_identity(np_rng):
    x = np_rng.uniform(0, 255, (4, 5, 3))
    np.testing.assert_allclose(aug_lib.adjust_saturation(x, 1.0), x, atol=1e-9)
    grey = aug_lib.adjust_saturation(x, 0.0)
    np.testing.assert_allclose(grey, np.repeat(x.max(-1, keepdims=True), 3, -1), atol=1e-9)


def test_brightness_and_contrast_clip_to_the_pixel_range():
    x = np.array([0.0, 100.0, 250.0])
    np.testing.assert_allclose(aug_lib.adjust_brightness(x, 10.0), [10.0, 110.0, 255.0])
    np.testing.assert_allclose(aug_lib.adjust_contrast(x, 1.5), [0.0, 150.0, 255.0])


def test_color_aug_ssd_on_grey_is_brightness_then_contrast_each_half_the_time():
    """Saturation and hue leave grey alone; what is left is (g + d) * a with d in
    [-32, 32] (p 0.5) and a in [0.5, 1.5] (p 0.5), so a quarter of the draws keep g."""
    grey = np.full((2, 3, 3), 100, np.uint8)
    outs = [aug_lib.color_aug_ssd(grey, np.random.default_rng(seed)) for seed in range(400)]
    values = np.array([o[0, 0, 0] for o in outs], np.int64)
    for o in outs:
        assert (o == o[0, 0, 0]).all()  # still grey, still uniform
    assert values.min() >= round((100 - 32) * 0.5) and values.max() <= round((100 + 32) * 1.5)
    assert 0.15 < np.mean(values == 100) < 0.35
    assert values.min() < 70 and values.max() > 140  # both ends of the range are reached


def test_color_aug_ssd_is_deterministic_and_touches_only_the_image(np_rng):
    example = block_example(np_rng)
    cfg = dict(crop_size=(32, 64), flip=True, color_jitter=0.0, short_side=(40, 48))
    plain = aug_lib.augment(example, np.random.default_rng(3), cfg)
    first = aug_lib.augment(example, np.random.default_rng(3), {**cfg, "color_aug_ssd": True})
    again = aug_lib.augment(example, np.random.default_rng(3), {**cfg, "color_aug_ssd": True})
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["label"], plain["label"])  # colour is drawn last
    changed = [not np.array_equal(
        aug_lib.augment(example, np.random.default_rng(s), {**cfg, "color_aug_ssd": True})["image"],
        aug_lib.augment(example, np.random.default_rng(s), cfg)["image"]) for s in range(8)]
    assert sum(changed) >= 4  # all four distortions skipped has probability 1/16
    assert first["image"].dtype == np.uint8
