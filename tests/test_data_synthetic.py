"""SyntheticShapes: prepared by tfds (array_record), read back without TensorFlow."""
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from pointrend_jax.data import build_datasets
from pointrend_jax.data import synthetic

NUM_TRAIN, NUM_VAL = 12, 4


def _all(source):
    """{stem: example} of a whole source."""
    return {ex["stem"]: ex for ex in (source[i] for i in range(len(source)))}


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_a")
    return synthetic.load_synthetic("multiclass", data_dir=data_dir, num_train=NUM_TRAIN, num_val=NUM_VAL)


def test_prepares_array_record_and_reads_back_without_tensorflow(multiclass, tmp_path):
    assert len(multiclass["train"]) == NUM_TRAIN and len(multiclass["val"]) == NUM_VAL
    for split, source in multiclass.items():
        examples = _all(source)
        assert sorted(examples) == [f"{split}_{i:06d}" for i in range(len(source))]
        for ex in examples.values():
            assert ex["image"].dtype == np.uint8 and ex["image"].shape == (128, 128, 3)
            assert ex["label"].dtype == np.uint8 and ex["label"].shape == (128, 128)
            assert isinstance(ex["stem"], str)
    # Preparing and reading in a fresh interpreter: other test files in this pytest process
    # may have imported TensorFlow themselves.
    script = textwrap.dedent(f"""
        import sys
        from pointrend_jax.data import synthetic
        sources = synthetic.load_synthetic("multiclass", data_dir={str(tmp_path)!r}, num_train=2, num_val=1)
        assert sources["train"][1]["image"].shape == (128, 128, 3)
        assert "tensorflow" not in sys.modules, "preparing or reading imported TensorFlow"
        """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=600)
    assert list((tmp_path / "synthetic_shapes").glob("*/1.0.0/*.array_record*"))


def test_two_preparations_in_different_dirs_are_identical(multiclass, tmp_path):
    again = synthetic.load_synthetic("multiclass", data_dir=tmp_path, num_train=NUM_TRAIN, num_val=NUM_VAL)
    for split in ("train", "val"):
        first, second = _all(multiclass[split]), _all(again[split])
        assert first.keys() == second.keys()
        for stem in first:
            np.testing.assert_array_equal(first[stem]["image"], second[stem]["image"])
            np.testing.assert_array_equal(first[stem]["label"], second[stem]["label"])
    # And the stored arrays are exactly what the drawing function makes.
    direct = synthetic.make_example("multiclass", "train", 3)
    np.testing.assert_array_equal(_all(multiclass["train"])["train_000003"]["label"], direct["label"])
    np.testing.assert_array_equal(_all(multiclass["train"])["train_000003"]["image"], direct["image"])


def test_labels_in_range_and_every_class_present(multiclass):
    labels = np.stack([ex["label"] for ex in _all(multiclass["train"]).values()])
    num_classes = len(synthetic.SYNTHETIC_CLASS_NAMES["multiclass"])
    assert labels.max() < num_classes
    assert set(np.unique(labels)) == set(range(num_classes))
    # Each image is more than background, and background is not everything.
    per_image_classes = [len(np.unique(lab)) for lab in labels]
    assert min(per_image_classes) >= 2
    assert 0.5 < np.mean(labels == 0) < 0.95


def test_thin_curved_strokes_are_mostly_boundary_pixels(multiclass):
    labels = np.stack([ex["label"] for ex in _all(multiclass["train"]).values()])
    padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), mode="edge")
    centre = padded[:, 1:-1, 1:-1]
    neighbours = [padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]]
    on_boundary = np.any([n != centre for n in neighbours], axis=0)
    curve = labels == synthetic.CURVE
    assert curve.sum() > 500
    # 1-3 px strokes: most stroke pixels touch another class; filled shapes mostly do not.
    assert on_boundary[curve].mean() > 0.6
    assert on_boundary[labels == synthetic.BLOB].mean() < 0.3


def test_colour_alone_does_not_give_the_class(multiclass):
    """Nearest class-mean colour labels well under all of the structure pixels correctly."""
    examples = list(_all(multiclass["train"]).values())
    images = np.stack([ex["image"] for ex in examples]).reshape(-1, 3).astype(np.float64)
    labels = np.stack([ex["label"] for ex in examples]).ravel()
    means = np.stack([images[labels == c].mean(axis=0) for c in range(5)])
    guess = np.argmin(((images[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    structure = labels > 0
    assert np.mean(guess[structure] == labels[structure]) < 0.7


def test_binary_is_the_same_pictures_with_structures_as_one_class(multiclass, tmp_path):
    binary = synthetic.load_synthetic("binary", data_dir=tmp_path, num_train=NUM_TRAIN, num_val=NUM_VAL)
    multi = _all(multiclass["val"])
    for stem, ex in _all(binary["val"]).items():
        np.testing.assert_array_equal(ex["image"], multi[stem]["image"])
        np.testing.assert_array_equal(ex["label"], (multi[stem]["label"] > 0).astype(np.uint8))


def test_custom_sizes_get_their_own_config_and_defaults_the_registered_one():
    assert synthetic.synthetic_config("multiclass").name == "multiclass"
    assert synthetic.synthetic_config("binary", num_train=1024, num_val=128).name == "binary"
    tiny = synthetic.synthetic_config("binary", num_train=5, num_val=2, image_size=64)
    assert tiny.name != "binary" and (tiny.num_train, tiny.num_val, tiny.image_size) == (5, 2, 64)
    with pytest.raises(ValueError, match="tricolour"):
        synthetic.synthetic_config("tricolour")


def test_image_size_is_configurable(tmp_path):
    sources = synthetic.load_synthetic("binary", data_dir=tmp_path, num_train=2, num_val=1, image_size=48)
    ex = sources["train"][0]
    assert ex["image"].shape == (48, 48, 3) and ex["label"].shape == (48, 48)


def test_build_datasets_synthetic(tmp_path):
    cfg = ml_collections.ConfigDict(dict(name="synthetic", variant="binary", data_dir=str(tmp_path),
                                         num_train=3, num_val=2))
    spec = build_datasets(cfg)
    assert spec.num_classes == 2 and list(spec.class_names) == synthetic.SYNTHETIC_CLASS_NAMES["binary"]
    assert len(spec.train) == 3 and len(spec.val) == 2
    assert set(spec.train[0]) == {"image", "label", "stem"}
    with pytest.raises(ValueError, match="num_classes"):
        build_datasets(ml_collections.ConfigDict(dict(name="synthetic", variant="binary",
                                                      data_dir=str(tmp_path), num_train=3, num_val=2,
                                                      num_classes=7)))
    with pytest.raises(ValueError, match="variant"):
        build_datasets(ml_collections.ConfigDict(dict(name="synthetic", variant="tricolour")))


def test_feeds_the_training_pipeline(multiclass):
    from pointrend_jax.data.pipeline import train_iterator
    from pointrend_jax.semantic.augment import SemanticAugment

    cfg = dict(crop_size=(96, 96), min_scale=0.75, max_scale=1.25, flip=True, color_jitter=0.2,
               max_class_ratio=0.75)
    batch = next(train_iterator(multiclass["train"], global_batch_size=4, seed=0, process_index=0,
                                process_count=1, transform=SemanticAugment(cfg)))
    assert batch["image"].shape == (4, 96, 96, 3) and batch["label"].shape == (4, 96, 96)
    assert batch["label"].max() < len(synthetic.SYNTHETIC_CLASS_NAMES["multiclass"])
