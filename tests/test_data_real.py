"""Cityscapes, ADE20K and Pascal VOC builders on tiny fakes written in the official layouts:
labels mapped pixel by pixel, the stored bytes, and errors for missing or partial downloads."""
import shutil
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

import fake_downloads as fakes
from pointrend_jax.data import DataError, build_datasets

CITYSCAPES_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                    "truck", "bus", "train", "motorcycle", "bicycle"]
VOC_NAMES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
             "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
             "sheep", "sofa", "train", "tvmonitor"]


def data_cfg(name, variant, manual_dir, data_dir, **extra):
    return ml_collections.ConfigDict(dict(name=name, variant=variant, data_dir=str(data_dir),
                                          manual_dir=None if manual_dir is None else str(manual_dir),
                                          num_classes=None, **extra))


def assert_split_matches(source, written, expected_fn):
    """Every example of ``source`` is the written one: same stems, same pixels, and the label
    equal to ``expected_fn(raw label)`` at every pixel."""
    by_stem = {stem: (image, raw) for stem, image, raw in written}
    assert len(source) == len(written)
    seen = set()
    for i in range(len(source)):
        example = source[i]
        image, raw = by_stem[example["stem"]]
        seen.add(example["stem"])
        assert example["image"].dtype == np.uint8 and example["label"].dtype == np.uint8
        np.testing.assert_array_equal(example["image"], image)
        np.testing.assert_array_equal(example["label"], expected_fn(raw))
    assert seen == set(by_stem)


@pytest.fixture
def cityscapes_dir(tmp_path, np_rng):
    root = tmp_path / "cityscapes"
    return root, fakes.write_cityscapes(root, np_rng)


def test_cityscapes_label_ids_become_the_19_train_ids(cityscapes_dir, tmp_path):
    root, written = cityscapes_dir
    spec = build_datasets(data_cfg("cityscapes", "fine", root, tmp_path / "tfds"))
    assert list(spec.class_names) == CITYSCAPES_NAMES and spec.num_classes == 19
    for split in ("train", "val"):
        source = getattr(spec, split)
        assert_split_matches(source, written[split],
                             lambda raw: fakes.cityscapes_expected(raw, CITYSCAPES_NAMES))
    # Every label id appears in the fakes; exactly the 19 class ids survive, the rest are 255.
    raw = np.concatenate([r.ravel() for _, _, r in written["train"]])
    mapped = fakes.cityscapes_expected(raw, CITYSCAPES_NAMES)
    assert set(np.unique(raw[mapped != 255])) == set(fakes.CITYSCAPES_LABEL_IDS.values())
    assert {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255} <= set(np.unique(raw[mapped == 255]))


def test_ade20k_zero_is_ignored_and_ids_shift_down(tmp_path, np_rng):
    written = fakes.write_ade20k(tmp_path / "ade", np_rng)
    spec = build_datasets(data_cfg("ade20k", "scene_parsing", tmp_path / "ade", tmp_path / "tfds"))
    assert spec.num_classes == 150 and len(set(spec.class_names)) == 150
    assert spec.class_names[:4] == ["wall", "building", "sky", "floor"]
    assert spec.class_names[-1] == "flag" and spec.class_names[149 - 1] == "clock"
    for split in ("train", "val"):
        assert_split_matches(getattr(spec, split), written[split], fakes.ade20k_expected)
    # Images of different sizes come back at their own size.
    assert {spec.train[i]["image"].shape for i in range(len(spec.train))} == {
        (48, 64, 3), (64, 48, 3), (40, 56, 3)}


def test_ade20k_manual_dir_may_be_the_extracted_folder_itself(tmp_path, np_rng):
    written = fakes.write_ade20k(tmp_path / "ade", np_rng)
    spec = build_datasets(data_cfg("ade20k", "scene_parsing", tmp_path / "ade" / "ADEChallengeData2016",
                                   tmp_path / "tfds"))
    assert_split_matches(spec.val, written["val"], fakes.ade20k_expected)


def test_voc_palette_indices_are_ids_and_255_stays_ignore(tmp_path, np_rng):
    written = fakes.write_voc(tmp_path / "voc", np_rng)
    with Image.open(tmp_path / "voc/VOCdevkit/VOC2012/SegmentationClass" / f"{written['val'][0][0]}.png") as img:
        assert img.mode == "P"  # as the official PNGs
    spec = build_datasets(data_cfg("voc", "voc2012", tmp_path / "voc", tmp_path / "tfds"))
    assert list(spec.class_names) == VOC_NAMES
    for split in ("train", "val"):
        assert_split_matches(getattr(spec, split), written[split], fakes.voc_expected)


def test_voc_aug_adds_sbd_without_val_images_and_prefers_voc_labels(tmp_path, np_rng):
    written = fakes.write_voc(tmp_path / "voc", np_rng, sbd=True)
    spec = build_datasets(data_cfg("voc", "voc2012_aug", tmp_path / "voc", tmp_path / "tfds"))
    # train_aug = VOC train + SBD-only images; the SBD image that is in VOC val is left out,
    # and the one in VOC train keeps its VOC annotation (its .mat says class 7 everywhere).
    assert_split_matches(spec.train, written["train_aug"], fakes.voc_expected)
    assert_split_matches(spec.val, written["val"], fakes.voc_expected)
    # Both variants live side by side in one data_dir.
    plain = build_datasets(data_cfg("voc", "voc2012", tmp_path / "voc", tmp_path / "tfds"))
    assert len(plain.train) == len(written["train"])


def test_prepared_data_stores_the_downloaded_bytes_and_reads_without_manual_dir(cityscapes_dir, tmp_path):
    from pointrend_jax.data import cityscapes

    root, written = cityscapes_dir
    build_datasets(data_cfg("cityscapes", "fine", root, tmp_path / "tfds"))
    builder = cityscapes.cityscapes_builder("fine", data_dir=tmp_path / "tfds")
    raw = builder.as_data_source("val")[0]
    stem = raw["stem"].decode()
    city = stem.split("_")[0]
    assert raw["image"] == (root / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png").read_bytes()
    assert raw["label"] == (root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png").read_bytes()
    # Once prepared, the download is not needed any more.
    shutil.rmtree(root)
    spec = build_datasets(data_cfg("cityscapes", "fine", None, tmp_path / "tfds"))
    assert_split_matches(spec.val, written["val"],
                         lambda r: fakes.cityscapes_expected(r, CITYSCAPES_NAMES))
    assert "tensorflow" not in sys.modules


# ---------------------------------------------------------------------------------------
# Errors: each names the expected path and where to download.
# ---------------------------------------------------------------------------------------

URLS = {"cityscapes": "cityscapes-dataset.com", "ade20k": "sceneparsing.csail.mit.edu",
        "voc": "host.robots.ox.ac.uk/pascal/VOC/voc2012"}
VARIANT = {"cityscapes": "fine", "ade20k": "scene_parsing", "voc": "voc2012"}


def expect_error(name, manual_dir, data_dir, *fragments, variant=None):
    with pytest.raises(DataError) as info:
        build_datasets(data_cfg(name, variant or VARIANT[name], manual_dir, data_dir))
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in:\n{message}"
    return message


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "voc"])
def test_unset_missing_or_empty_manual_dir_says_where_to_download(name, tmp_path):
    expect_error(name, None, tmp_path / "tfds", "not prepared", "--config.data.manual_dir", URLS[name])
    expect_error(name, tmp_path / "nowhere", tmp_path / "tfds", "nowhere", "is not a folder", URLS[name])
    (tmp_path / "empty").mkdir()
    expect_error(name, tmp_path / "empty", tmp_path / "tfds", "is empty", URLS[name])
    assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*.array_record*"))


def test_cityscapes_missing_labels_zip_is_named(cityscapes_dir, tmp_path):
    root, _ = cityscapes_dir
    shutil.rmtree(root / "gtFine")
    expect_error("cityscapes", root, tmp_path / "tfds", root / "gtFine", "gtFine_trainvaltest.zip",
                 URLS["cityscapes"])
    (root / "gtFine_trainvaltest.zip").write_bytes(b"PK")
    expect_error("cityscapes", root, tmp_path / "tfds", "not extracted", "unzip gtFine_trainvaltest.zip")


def test_cityscapes_partial_extraction_names_each_missing_file(cityscapes_dir, tmp_path):
    root, written = cityscapes_dir
    stem = written["train"][1][0]
    city = stem.split("_")[0]
    (root / "gtFine/train" / city / f"{stem}_gtFine_labelIds.png").unlink()
    shutil.rmtree(root / "leftImg8bit/val")
    expect_error("cityscapes", root, tmp_path / "tfds", root / "leftImg8bit/val", "leftImg8bit_trainvaltest.zip")
    (root / "leftImg8bit/val").mkdir()
    expect_error("cityscapes", root, tmp_path / "tfds", "no images", root / "leftImg8bit/val")
    shutil.copytree(root / "leftImg8bit/train", root / "leftImg8bit/val", dirs_exist_ok=True)
    # train: one image without its label; val: train's images have no val labels.
    message = expect_error("cityscapes", root, tmp_path / "tfds",
                           root / "gtFine/train" / city / f"{stem}_gtFine_labelIds.png", "has no label")
    assert "partial extraction" in message


def test_cityscapes_pointed_one_folder_too_deep_says_so(cityscapes_dir, tmp_path):
    root, _ = cityscapes_dir
    expect_error("cityscapes", root / "leftImg8bit", tmp_path / "tfds", "sub-folder of the download")


def test_ade20k_partial_download_names_the_folder_and_files(tmp_path, np_rng):
    written = fakes.write_ade20k(tmp_path / "ade", np_rng)
    base = tmp_path / "ade" / "ADEChallengeData2016"
    (base / "annotations/training" / f"{written['train'][0][0]}.png").unlink()
    expect_error("ade20k", tmp_path / "ade", tmp_path / "tfds",
                 base / "annotations/training" / f"{written['train'][0][0]}.png", "has no label")
    shutil.rmtree(base / "annotations/validation")
    expect_error("ade20k", tmp_path / "ade", tmp_path / "tfds", base / "annotations/validation",
                 URLS["ade20k"])
    shutil.rmtree(base)
    (tmp_path / "ade" / "ADEChallengeData2016.zip").write_bytes(b"PK")
    expect_error("ade20k", tmp_path / "ade", tmp_path / "tfds", base, "not extracted",
                 "unzip ADEChallengeData2016.zip")


def test_voc_missing_lists_files_and_sbd_are_named(tmp_path, np_rng):
    written = fakes.write_voc(tmp_path / "voc", np_rng)
    voc = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    expect_error("voc", tmp_path / "voc", tmp_path / "tfds", tmp_path / "voc/benchmark_RELEASE/dataset",
                 "home.bharathh.info", "--config.data.variant=voc2012", variant="voc2012_aug")
    stem = written["val"][1][0]
    (voc / "JPEGImages" / f"{stem}.jpg").unlink()
    expect_error("voc", tmp_path / "voc", tmp_path / "tfds", voc / "JPEGImages" / f"{stem}.jpg",
                 "val.txt")
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    expect_error("voc", tmp_path / "voc", tmp_path / "tfds", voc / "ImageSets/Segmentation/val.txt",
                 URLS["voc"])


def test_label_of_the_wrong_size_or_mode_stops_preparation(cityscapes_dir, tmp_path):
    root, written = cityscapes_dir
    stem = written["val"][0][0]
    city = stem.split("_")[0]
    label = root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png"
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(label)
    expect_error("cityscapes", root, tmp_path / "tfds", label, "is 64x32", "128x64")
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(label)
    expect_error("cityscapes", root, tmp_path / "tfds", label, "mode 'RGB'")


def test_data_prepared_from_another_copy_is_not_reused(tmp_path, np_rng):
    fakes.write_voc(tmp_path / "small", np_rng, num_train=2)
    fakes.write_voc(tmp_path / "bigger", np_rng, num_train=4)
    build_datasets(data_cfg("voc", "voc2012", tmp_path / "small", tmp_path / "tfds"))
    expect_error("voc", tmp_path / "bigger", tmp_path / "tfds", "prepared from another copy",
                 "has 2 examples", "has 4")


def test_unknown_variant_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"--config.data.variant='multiclass' is not a cityscapes "
                                         r"variant; choose one of \['fine'\]"):
        build_datasets(data_cfg("cityscapes", "multiclass", tmp_path, tmp_path / "tfds"))
