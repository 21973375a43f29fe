"""Folder data: reading users' images and masks, and the checks run before training."""
import ml_collections
import numpy as np
import pytest
from PIL import Image

from pointrend_jax.data import DataError, build_datasets
from pointrend_jax.data.folder import (FolderSource, load_image, resolve_class_names,
                                       validate_folder)

NUM_CLASSES = 4


def _random_example(rng, height, width, num_classes=NUM_CLASSES):
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = rng.integers(0, num_classes, (height, width), dtype=np.uint8)
    label[rng.random((height, width)) < 0.1] = 255
    return image, label


def make_split(root, split, rng, count=3, image_format="png", sizes=None):
    """Writes ROOT/split/{images,masks} with random examples; returns {stem: (image, label)}."""
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(count):
        height, width = sizes[i] if sizes else (int(rng.integers(8, 24)), int(rng.integers(8, 24)))
        image, label = _random_example(rng, height, width)
        stem = f"{split}_{i:03d}"
        Image.fromarray(image).save(root / split / "images" / f"{stem}.{image_format}")
        Image.fromarray(label).save(root / split / "masks" / f"{stem}.png")
        written[stem] = (image, label)
    return written


@pytest.fixture
def root(tmp_path, np_rng):
    make_split(tmp_path, "train", np_rng)
    make_split(tmp_path, "val", np_rng, count=2)
    return tmp_path


def test_png_round_trip_is_exact(tmp_path, np_rng):
    written = make_split(tmp_path, "train", np_rng, count=4)
    source = FolderSource(tmp_path, "train")
    assert len(source) == 4 and source.stems == sorted(written)
    for i in range(len(source)):
        ex = source[i]
        image, label = written[ex["stem"]]
        assert ex["image"].dtype == np.uint8 and ex["label"].dtype == np.uint8
        np.testing.assert_array_equal(ex["image"], image)
        np.testing.assert_array_equal(ex["label"], label)


def test_jpeg_images_read_close_and_masks_exact(tmp_path, np_rng):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    smooth = np.kron(np_rng.integers(0, 256, (4, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    label = np_rng.integers(0, NUM_CLASSES, (32, 40), dtype=np.uint8)
    Image.fromarray(smooth).save(tmp_path / "train" / "images" / "a.jpeg", quality=95, subsampling=0)
    Image.fromarray(smooth).save(tmp_path / "train" / "images" / "b.JPG", quality=95, subsampling=0)
    for stem in "ab":
        Image.fromarray(label).save(tmp_path / "train" / "masks" / f"{stem}.png")
    source = FolderSource(tmp_path, "train")
    assert source.stems == ["a", "b"]
    for i in range(2):
        ex = source[i]
        assert ex["image"].shape == (32, 40, 3)
        assert np.abs(ex["image"].astype(int) - smooth).mean() < 4  # lossy, but close
        np.testing.assert_array_equal(ex["label"], label)
    assert validate_folder(tmp_path, "train", NUM_CLASSES) == 2


def test_grayscale_rgba_and_palette_files_are_converted(tmp_path, np_rng):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    grey = np_rng.integers(0, 256, (10, 12), dtype=np.uint8)
    rgba = np_rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "train" / "images" / "grey.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "train" / "images" / "rgba.png")
    label = np_rng.integers(0, NUM_CLASSES, (10, 12), dtype=np.uint8)
    label[0, 0] = 255
    palette_mask = Image.fromarray(label, mode="L").convert("P")
    palette_mask.putpalette(list(np_rng.integers(0, 256, 768)))  # colours must not matter
    Image.fromarray(label).save(tmp_path / "train" / "masks" / "grey.png")
    palette_mask.save(tmp_path / "train" / "masks" / "rgba.png")
    assert Image.open(tmp_path / "train" / "masks" / "rgba.png").mode == "P"
    source = FolderSource(tmp_path, "train")
    grey_ex, rgba_ex = source[0], source[1]
    np.testing.assert_array_equal(grey_ex["image"], np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(rgba_ex["image"], np.asarray(Image.fromarray(rgba).convert("RGB")))
    np.testing.assert_array_equal(rgba_ex["label"], label)
    assert validate_folder(tmp_path, "train", NUM_CLASSES) == 2


def test_validate_accepts_good_data(root):
    assert validate_folder(root, "train", NUM_CLASSES) == 3
    assert validate_folder(root, "val", NUM_CLASSES) == 2


def test_missing_split_folder(root):
    with pytest.raises(DataError, match="test") as err:
        validate_folder(root, "test", NUM_CLASSES)
    assert str(root / "test") in str(err.value)


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_missing_images_or_masks_folder(root, sub):
    for path in (root / "val" / sub).iterdir():
        path.unlink()
    (root / "val" / sub).rmdir()
    with pytest.raises(DataError) as err:
        validate_folder(root, "val", NUM_CLASSES)
    assert str(root / "val" / sub) in str(err.value)


def test_empty_split(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    with pytest.raises(DataError, match="empty") as err:
        validate_folder(tmp_path, "train", NUM_CLASSES)
    assert str(tmp_path / "train" / "images") in str(err.value)


def test_image_without_mask_is_named(root):
    (root / "train" / "masks" / "train_001.png").unlink()
    with pytest.raises(DataError, match="no mask") as err:
        validate_folder(root, "train", NUM_CLASSES)
    assert str(root / "train" / "images" / "train_001.png") in str(err.value)
    with pytest.raises(DataError, match="train_001"):
        FolderSource(root, "train")


def test_extra_mask_without_image_is_named(root):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "val" / "masks" / "stray.png")
    with pytest.raises(DataError, match="no image") as err:
        validate_folder(root, "val", NUM_CLASSES)
    assert str(root / "val" / "masks" / "stray.png") in str(err.value)


def test_image_mask_size_mismatch_is_named(root):
    mask_path = root / "train" / "masks" / "train_002.png"
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask_path)
    with pytest.raises(DataError, match="same size") as err:
        validate_folder(root, "train", NUM_CLASSES)
    assert str(mask_path) in str(err.value) and "7x5" in str(err.value)


def test_rgb_mask_is_rejected(root):
    mask_path = root / "train" / "masks" / "train_000.png"
    size = Image.open(mask_path).size
    Image.new("RGB", size, (1, 2, 3)).save(mask_path)
    with pytest.raises(DataError, match="single-channel") as err:
        validate_folder(root, "train", NUM_CLASSES)
    assert str(mask_path) in str(err.value) and "'RGB'" in str(err.value)


def test_16_bit_mask_is_rejected(root):
    mask_path = root / "val" / "masks" / "val_001.png"
    size = Image.open(mask_path).size
    Image.fromarray(np.full(size[::-1], 300, np.uint16)).save(mask_path)
    with pytest.raises(DataError, match="single-channel") as err:
        validate_folder(root, "val", NUM_CLASSES)
    assert str(mask_path) in str(err.value)


def test_label_value_out_of_range_names_file_value_and_num_classes(root):
    mask_path = root / "train" / "masks" / "train_001.png"
    label = np.asarray(Image.open(mask_path)).copy()
    label[0, 0] = 7
    Image.fromarray(label).save(mask_path)
    with pytest.raises(DataError) as err:
        validate_folder(root, "train", NUM_CLASSES)
    message = str(err.value)
    assert str(mask_path) in message and "7" in message and f"num_classes={NUM_CLASSES}" in message
    assert validate_folder(root, "train", 8) == 3  # 7 is fine with 8 classes; 255 always is


@pytest.mark.parametrize("which", ["image", "mask"])
def test_corrupt_files_are_named(root, which):
    path = root / "train" / ("images" if which == "image" else "masks") / "train_002.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(DataError) as err:
        validate_folder(root, "train", NUM_CLASSES)
    assert str(path) in str(err.value)


def test_truncated_jpeg_is_named(tmp_path, np_rng):
    make_split(tmp_path, "train", np_rng, count=2, image_format="jpg", sizes=[(32, 32), (32, 32)])
    path = tmp_path / "train" / "images" / "train_001.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError) as err:
        validate_folder(tmp_path, "train", NUM_CLASSES)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="train_001"):
        load_image(path)


def test_all_problems_reported_at_once(root):
    (root / "train" / "masks" / "train_000.png").unlink()
    (root / "train" / "images" / "train_001.png").write_bytes(b"garbage")
    mask_path = root / "train" / "masks" / "train_002.png"
    Image.fromarray(np.full((3, 3), 9, np.uint8)).save(mask_path)
    with pytest.raises(DataError) as err:  # pairing problems come first, on their own
        validate_folder(root, "train", NUM_CLASSES)
    assert "train_000" in str(err.value)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / "train" / "masks" / "train_000.png")
    with pytest.raises(DataError) as err:
        validate_folder(root, "train", NUM_CLASSES)
    message = str(err.value)
    assert "train_000" in message and "train_001" in message and "train_002" in message


def test_class_names_from_classes_txt_or_num_classes(tmp_path):
    with pytest.raises(DataError) as err:
        resolve_class_names(tmp_path)
    assert "--config.data.num_classes" in str(err.value) and "classes.txt" in str(err.value)
    assert resolve_class_names(tmp_path, 3) == ["class_0", "class_1", "class_2"]
    (tmp_path / "classes.txt").write_text("road\n\nsky\n  \nperson\n")
    assert resolve_class_names(tmp_path) == ["road", "sky", "person"]
    assert resolve_class_names(tmp_path, 3) == ["road", "sky", "person"]
    with pytest.raises(DataError) as err:
        resolve_class_names(tmp_path, 5)
    assert "classes.txt" in str(err.value) and "5" in str(err.value) and "3" in str(err.value)
    with pytest.raises(DataError, match="255"):
        resolve_class_names(tmp_path / "nowhere", 256)


def test_build_datasets_folder_validates_both_splits(root):
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    spec = build_datasets(ml_collections.ConfigDict(dict(name="folder", root=str(root), num_classes=None)))
    assert spec.num_classes == NUM_CLASSES and list(spec.class_names) == ["a", "b", "c", "d"]
    assert len(spec.train) == 3 and len(spec.val) == 2
    assert spec.val[0]["stem"] == "val_000"
    mask_path = root / "val" / "masks" / "val_000.png"
    label = np.asarray(Image.open(mask_path)).copy()
    label[-1, -1] = 4
    Image.fromarray(label).save(mask_path)
    with pytest.raises(DataError, match="val_000"):
        build_datasets({"name": "folder", "root": str(root)})


def test_build_datasets_unknown_name():
    with pytest.raises(ValueError) as err:
        build_datasets(ml_collections.ConfigDict(dict(name="cityscrapes")))
    message = str(err.value)
    assert "--config.data.name" in message and "synthetic" in message and "folder" in message
