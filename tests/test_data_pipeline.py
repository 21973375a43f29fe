"""Augmentation and the grain pipelines: shapes, determinism, sharding, resuming."""
import json

import ml_collections
import numpy as np
import pytest

from pointrend_jax.semantic import augment as aug_lib
from pointrend_jax.data.pipeline import eval_examples, num_eval_examples, train_iterator

NUM_CLASSES = 5
# Class c is painted in PALETTE[c]; no class colour is black, the padding colour.
PALETTE = np.array([[30, 200, 100], [70, 170, 120], [110, 140, 140], [150, 110, 160], [190, 80, 180]],
                   np.uint8)


class IndexSource:
    """In-memory source whose image encodes the example index (channels 0 and 1)."""

    def __init__(self, n, size=(12, 16)):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = np.zeros(self.size + (3,), np.uint8)
        image[..., 0], image[..., 1] = i % 256, i // 256
        label = np.full(self.size, i % NUM_CLASSES, np.uint8)
        return {"image": image, "label": label, "stem": f"ex{i}"}


class BlockSource:
    """Random block labels, image = PALETTE[label]; sizes vary around the crop size."""

    def __init__(self, rng, n=16):
        self.examples = []
        for _ in range(n):
            blocks = rng.integers(0, NUM_CLASSES, (int(rng.integers(2, 7)), int(rng.integers(2, 7))))
            label = np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)
            self.examples.append({"image": PALETTE[label], "label": label, "stem": str(len(self.examples))})

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def identity_cfg(size=(12, 16)):
    return ml_collections.ConfigDict(dict(crop_size=size, min_scale=1.0, max_scale=1.0, flip=False,
                                          color_jitter=0.0, max_class_ratio=1.0))


FULL_CFG = dict(crop_size=(24, 32), min_scale=0.5, max_scale=2.0, flip=True, color_jitter=0.3,
                max_class_ratio=0.75)


def _indices(batch):
    pixel = batch["image"][:, 0, 0].astype(int)
    return [int(i) for i in pixel[:, 0] + 256 * pixel[:, 1]]


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
    for a, b in zip(batches_a, batches_b, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


# ---------------------------------------------------------------------------------------
# augment
# ---------------------------------------------------------------------------------------


def _uniform_interior(label, radius=2):
    """Pixels whose (2r+1)^2 neighbourhood lies in the crop and has a single label value."""
    height, width = label.shape
    padded = np.pad(label.astype(int), radius, constant_values=-1)  # beyond the crop: unknown
    same = np.ones(label.shape, bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            same &= padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width] == label
    return same


def test_augment_crop_size_dtypes_and_label_values(np_rng):
    source = BlockSource(np_rng)
    for i in range(len(source)):
        out = aug_lib.augment(source[i], np_rng, FULL_CFG)
        assert out["image"].shape == (24, 32, 3) and out["image"].dtype == np.uint8
        assert out["label"].shape == (24, 32) and out["label"].dtype == np.uint8
        assert set(np.unique(out["label"])) <= set(range(NUM_CLASSES)) | {255}


def test_augment_keeps_image_and_label_aligned(np_rng):
    """Through scale, pad, crop and flip the colour at a pixel still names its label."""
    cfg = dict(FULL_CFG, color_jitter=0.0, max_class_ratio=1.0)
    source = BlockSource(np_rng)
    checked = 0
    for _ in range(3):
        for i in range(len(source)):
            out = aug_lib.augment(source[i], np_rng, cfg)
            label, image = out["label"], out["image"].astype(int)
            interior = _uniform_interior(label)
            classes = interior & (label != 255)
            expected = PALETTE[label[classes]].astype(int)
            assert np.all(np.abs(image[classes] - expected) <= 1)
            assert np.all(image[interior & (label == 255)] == 0)  # padding is black
            checked += classes.sum()
    assert checked > 0.12 * 3 * len(source) * 24 * 32  # typically ~0.29 of all pixels


def test_augment_flip_mirrors_image_and_label_together(np_rng):
    image = np_rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    label = np_rng.integers(0, NUM_CLASSES, (10, 14), dtype=np.uint8)
    cfg = dict(crop_size=(10, 14), flip=True)
    outs = [aug_lib.augment({"image": image, "label": label}, np.random.default_rng(s), cfg) for s in range(20)]
    flipped = [np.array_equal(o["image"], image[:, ::-1]) and np.array_equal(o["label"], label[:, ::-1])
               for o in outs]
    kept = [np.array_equal(o["image"], image) and np.array_equal(o["label"], label) for o in outs]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_augment_pads_small_images_with_zero_and_ignore(np_rng):
    image = np.full((5, 6, 3), 77, np.uint8)
    label = np.ones((5, 6), np.uint8)
    out = aug_lib.augment({"image": image, "label": label}, np_rng, dict(crop_size=(8, 10), flip=False))
    np.testing.assert_array_equal(out["label"][:5, :6], 1)
    np.testing.assert_array_equal(out["image"][:5, :6], 77)
    assert np.all(out["label"][5:] == 255) and np.all(out["label"][:, 6:] == 255)
    assert np.all(out["image"][5:] == 0) and np.all(out["image"][:, 6:] == 0)


def test_augment_is_deterministic_given_the_generator(np_rng):
    example = BlockSource(np_rng, n=1)[0]
    seed = int(np_rng.integers(2**31))
    a = aug_lib.augment(example, np.random.default_rng(seed), FULL_CFG)
    b = aug_lib.augment(example, np.random.default_rng(seed), FULL_CFG)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_color_jitter_changes_image_only(np_rng):
    example = BlockSource(np_rng, n=1)[0]
    cfg = dict(crop_size=(16, 16), flip=False, color_jitter=0.4)
    seed = int(np_rng.integers(2**31))
    plain = aug_lib.augment(example, np.random.default_rng(seed), dict(cfg, color_jitter=0.0))
    jittered = aug_lib.augment(example, np.random.default_rng(seed), cfg)
    np.testing.assert_array_equal(plain["label"], jittered["label"])
    assert jittered["image"].dtype == np.uint8 and not np.array_equal(plain["image"], jittered["image"])


def _class_ratio(label):
    counts = np.bincount(label[label != 255].ravel(), minlength=NUM_CLASSES)
    return counts.max() / counts.sum()


def test_max_class_ratio_is_respected_when_a_crop_allows_it(np_rng):
    # Class 1 fills columns 40..63 of a 64x64 label: a 32x32 crop has a class-1 share of
    # (x0 - 8) / 32, so 15 of the 33 offsets keep both classes under 75%.
    label = np.zeros((64, 64), np.uint8)
    label[:, 40:] = 1
    example = {"image": PALETTE[label], "label": label}
    cfg = dict(crop_size=(32, 32), flip=False)
    on = [_class_ratio(aug_lib.augment(example, np_rng, dict(cfg, max_class_ratio=0.75))["label"])
          for _ in range(50)]
    off = [_class_ratio(aug_lib.augment(example, np_rng, cfg)["label"]) for _ in range(50)]
    assert sum(r >= 0.75 for r in on) <= 4  # each fails only if 10 tries all miss (p ~ 0.55^10)
    assert sum(r >= 0.75 for r in off) >= 10
    # One class everywhere: no crop can satisfy the ratio, and a crop still comes back.
    flat = {"image": PALETTE[np.zeros((40, 40), np.uint8)], "label": np.zeros((40, 40), np.uint8)}
    assert aug_lib.augment(flat, np_rng, dict(cfg, max_class_ratio=0.75))["label"].shape == (32, 32)


def test_augment_config_rejects_bad_values():
    with pytest.raises(ValueError, match="crop_size"):
        aug_lib.AugmentConfig.from_config({"min_scale": 0.5})
    with pytest.raises(ValueError, match="min_scale"):
        aug_lib.AugmentConfig(crop_size=(4, 4), min_scale=2.0, max_scale=1.0)
    with pytest.raises(ValueError, match="max_class_ratio"):
        aug_lib.AugmentConfig(crop_size=(4, 4), max_class_ratio=0.0)


# ---------------------------------------------------------------------------------------
# train_iterator / eval_examples
# ---------------------------------------------------------------------------------------


def test_batches_have_local_shape_and_dtype(np_rng):
    it = train_iterator(BlockSource(np_rng), global_batch_size=8, seed=0, process_index=1,
                        process_count=2, transform=aug_lib.SemanticAugment(ml_collections.ConfigDict(FULL_CFG)))
    for batch in _take(it, 3):
        assert set(batch) == {"image", "label"}
        assert batch["image"].shape == (4, 24, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].shape == (4, 24, 32) and batch["label"].dtype == np.uint8


def test_global_batch_must_divide_over_processes():
    with pytest.raises(ValueError, match="global_batch_size=6.*process_count=4"):
        train_iterator(IndexSource(8), global_batch_size=6, seed=0, process_index=0, process_count=4,
                       transform=aug_lib.SemanticAugment(identity_cfg()))
    with pytest.raises(ValueError, match="process_index"):
        train_iterator(IndexSource(8), global_batch_size=4, seed=0, process_index=2, process_count=2,
                       transform=aug_lib.SemanticAugment(identity_cfg()))


def test_same_seed_same_batches_different_seed_different(np_rng):
    source = BlockSource(np_rng)
    seed = int(np_rng.integers(2**31))

    def run(s):
        return _take(train_iterator(source, global_batch_size=4, seed=s, process_index=0, process_count=1,
                                    transform=aug_lib.SemanticAugment(FULL_CFG)), 6)

    first = run(seed)
    _assert_same(first, run(seed))
    other = run(seed + 1)
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))


@pytest.mark.parametrize("num_examples", [12, 11])
def test_stream_covers_every_epoch_once_and_reshuffles(num_examples):
    it = train_iterator(IndexSource(num_examples), global_batch_size=1, seed=3,
                        transform=aug_lib.SemanticAugment(identity_cfg()))
    stream = [i for batch in _take(it, 3 * num_examples) for i in _indices(batch)]
    epochs = [stream[e * num_examples:(e + 1) * num_examples] for e in range(3)]
    assert all(sorted(e) == list(range(num_examples)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # a new order each epoch


class RecordingSource(BlockSource):
    def __init__(self, rng, n):
        super().__init__(rng, n)
        self.read = set()

    def __getitem__(self, i):
        self.read.add(i)
        return super().__getitem__(i)


@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batches_do_not_depend_on_the_process_count(np_rng, process_count):
    source = RecordingSource(np_rng, n=13)
    kwargs = dict(global_batch_size=8, seed=int(np_rng.integers(2**31)), transform=aug_lib.SemanticAugment(FULL_CFG),
                  num_threads=0)
    single = _take(train_iterator(source, **kwargs), 4)
    per_process = [_take(train_iterator(source, process_index=p, process_count=process_count,
                                        **kwargs), 4) for p in range(process_count)]
    for j in range(4):  # rows of global batch j, process by process, augmentation included
        np.testing.assert_array_equal(
            np.concatenate([per_process[p][j]["image"] for p in range(process_count)]),
            single[j]["image"])
        np.testing.assert_array_equal(
            np.concatenate([per_process[p][j]["label"] for p in range(process_count)]),
            single[j]["label"])
    # The first global batch (8 of the 13 examples): each process reads only its own rows.
    reads = []
    for p in range(process_count):
        source.read = set()
        next(train_iterator(source, process_index=p, process_count=process_count,
                            prefetch_batches=0, **kwargs))
        reads.append(source.read)
    assert [len(r) for r in reads] == [8 // process_count] * process_count
    assert len(set().union(*reads)) == 8


def test_start_batch_resumes_the_stream_on_any_process_count(np_rng):
    source = BlockSource(np_rng, n=10)
    kwargs = dict(global_batch_size=4, seed=int(np_rng.integers(2**31)), transform=aug_lib.SemanticAugment(FULL_CFG))
    uninterrupted = _take(train_iterator(source, **kwargs), 7)
    _assert_same(_take(train_iterator(source, start_batch=3, **kwargs), 4), uninterrupted[3:])
    halves = [_take(train_iterator(source, start_batch=5, process_index=p, process_count=2,
                                   **kwargs), 2) for p in range(2)]
    for j in range(2):
        np.testing.assert_array_equal(np.concatenate([halves[0][j]["image"], halves[1][j]["image"]]),
                                      uninterrupted[5 + j]["image"])


def test_resume_from_state_continues_the_same_stream(np_rng):
    source = BlockSource(np_rng, n=10)
    kwargs = dict(global_batch_size=3, seed=int(np_rng.integers(2**31)), process_index=0,
                  process_count=1, transform=aug_lib.SemanticAugment(FULL_CFG))
    uninterrupted = _take(train_iterator(source, **kwargs), 9)

    it = train_iterator(source, **kwargs)
    _assert_same(_take(it, 4), uninterrupted[:4])
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    _take(it, 2)  # the first run goes on past the save; the resumed one must not notice

    resumed = train_iterator(source, **kwargs)
    resumed.set_state(state)
    _assert_same(_take(resumed, 5), uninterrupted[4:])


def test_eval_examples_split_over_processes_in_fixed_order():
    source = IndexSource(7)
    shares = [[ex["stem"] for ex in eval_examples(source, process_index=p, process_count=3)] for p in range(3)]
    assert shares == [["ex0", "ex3", "ex6"], ["ex1", "ex4"], ["ex2", "ex5"]]
    assert [num_eval_examples(source, process_index=p, process_count=3) for p in range(3)] == [3, 2, 2]
    again = [ex["stem"] for ex in eval_examples(source, process_index=0, process_count=1)]
    assert again == [f"ex{i}" for i in range(7)]


@pytest.mark.parametrize("process_count", [1, 2, 3, 4])
@pytest.mark.parametrize("max_examples", [None, 0, 1, 2, 5, 7, 20])
def test_eval_max_examples_counts_over_all_processes(process_count, max_examples):
    """--config.eval.max_images: the first `max_examples` of the split, split between the
    processes; so the same images whatever the process count, and the counts add up."""
    source = IndexSource(7)
    first = [f"ex{i}" for i in range(7)][:max_examples]
    shares = [[ex["stem"] for ex in eval_examples(source, process_index=p, process_count=process_count,
                                                  max_examples=max_examples)]
              for p in range(process_count)]
    assert sorted(sum(shares, []), key=lambda stem: int(stem[2:])) == first
    for p, share in enumerate(shares):  # interleaved: every process_count-th, from p
        assert share == first[p::process_count]
        assert num_eval_examples(source, process_index=p, process_count=process_count,
                                 max_examples=max_examples) == len(share)
    assert sum(num_eval_examples(source, process_index=p, process_count=process_count,
                                 max_examples=max_examples)
               for p in range(process_count)) == len(first)


def test_eval_max_examples_examples_by_hand():
    source = IndexSource(7)
    # the first 4 of the split over 3 processes: ex0, ex3 | ex1 | ex2
    assert [ex["stem"] for ex in eval_examples(source, process_index=0, process_count=3,
                                               max_examples=4)] == ["ex0", "ex3"]
    assert [ex["stem"] for ex in eval_examples(source, process_index=1, process_count=3,
                                               max_examples=4)] == ["ex1"]
    assert [ex["stem"] for ex in eval_examples(source, process_index=2, process_count=3,
                                               max_examples=1)] == []
    assert num_eval_examples(source, process_index=0, process_count=3, max_examples=2) == 1
    assert num_eval_examples(source, process_index=2, process_count=3, max_examples=5) == 1
    with pytest.raises(ValueError, match="process_index"):
        num_eval_examples(source, process_index=3, process_count=3, max_examples=5)


def test_train_iterator_needs_the_task_transform():
    with pytest.raises(TypeError, match="transform"):
        train_iterator(IndexSource(4), global_batch_size=2, seed=0)
    with pytest.raises(TypeError, match="augment_cfg"):  # the argument before the task seam
        train_iterator(IndexSource(4), global_batch_size=2, seed=0, augment_cfg=identity_cfg())
    # Any picklable (example, rng) -> dict transform; its keys are the batch's keys.
    it = train_iterator(IndexSource(4), global_batch_size=2, seed=0, transform=_StemIndex())
    batch = next(it)
    assert set(batch) == {"index"} and batch["index"].shape == (2,)
    assert sorted(batch["index"].tolist() + next(it)["index"].tolist()) == [0, 1, 2, 3]


class _StemIndex:
    def __call__(self, example, rng):
        return {"index": np.int32(example["stem"][2:])}


def test_semantic_augment_is_augment_and_pickles(np_rng):
    import pickle

    example = BlockSource(np_rng, n=1)[0]
    transform = pickle.loads(pickle.dumps(aug_lib.SemanticAugment(ml_collections.ConfigDict(FULL_CFG))))
    assert transform.cfg == aug_lib.AugmentConfig.from_config(FULL_CFG)
    seed = int(np_rng.integers(2**31))
    a = transform(example, np.random.default_rng(seed))
    b = aug_lib.augment(example, np.random.default_rng(seed), FULL_CFG)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_reader_threads_do_not_change_the_stream(np_rng):
    source = BlockSource(np_rng, n=8)
    runs = [_take(train_iterator(source, global_batch_size=2, seed=5, transform=aug_lib.SemanticAugment(FULL_CFG),
                                 num_threads=threads, prefetch_batches=prefetch), 5)
            for threads, prefetch in [(0, 1), (2, 4)]]
    _assert_same(*runs)
