"""Cityscapes instances: the reader against a fake download in the official layout (what the
writer drew, pixel by pixel), its errors, the Cityscapes AP path against cityscapesscripts
called directly on prediction files this test writes itself, and train.py + eval.py under
`configs/cityscapes_pointrend_r50_fpn.py:runlocal`."""
import contextlib
import io
import json
import os
import types

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from fake_downloads import CITYSCAPES_THING_LABEL_IDS, write_cityscapes_instances
from pointrend_jax.data import DataError, build_datasets
from pointrend_jax.data.cityscapes_instances import CityscapesInstanceSource
from pointrend_jax.instance import coco_metrics
from pointrend_jax.instance.cityscapes_metrics import evaluate_cityscapes
from test_train_eval import run_cli

CONFIG = "configs/cityscapes_pointrend_r50_fpn.py:runlocal"
# detectron2's class order: the labels with instances that are evaluated, by label id
D2_ORDER = sorted(CITYSCAPES_THING_LABEL_IDS, key=CITYSCAPES_THING_LABEL_IDS.get)


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    written = write_cityscapes_instances(root, rng)
    return str(root), {split: sorted(examples, key=lambda ex: ex[0]) for split, examples in written.items()}


def _spec(root, **extra):
    return build_datasets({"name": "cityscapes_instances", "manual_dir": root,
                           "filter_empty_annotations": True, **extra})


def _things(regions):
    """The written instances the reader must return, by increasing instance id."""
    return sorted((r for r in regions if r["kind"] == "thing"), key=lambda r: r["value"])


def test_the_reader_returns_the_written_instances_pixel_by_pixel(download):
    root, written = download
    spec = _spec(root)
    assert spec.class_names == D2_ORDER and spec.num_classes == 8
    assert spec.val.category_ids == [CITYSCAPES_THING_LABEL_IDS[n] for n in D2_ORDER]
    # train image 1 has no thing: left out by filter_empty_annotations
    assert [ex[0] for ex in written["train"] if _things(ex[3])] == spec.train.stems
    for source, split in ((spec.train, "train"), (spec.val, "val")):
        for image_id, (stem, image, _, regions) in enumerate(
                ex for ex in written[split] if _things(ex[3])):
            example = source[image_id]
            things = _things(regions)
            assert example["stem"] == stem and example["image_id"] == image_id
            np.testing.assert_array_equal(example["image"], image)
            np.testing.assert_array_equal(example["masks"], np.stack([r["mask"] for r in things]))
            assert example["masks"].dtype == np.uint8
            np.testing.assert_array_equal(
                example["classes"], [D2_ORDER.index(_name(r["label_id"])) for r in things])
            for box, r in zip(example["boxes"], things):
                ys, xs = np.nonzero(r["mask"])
                np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    unfiltered = CityscapesInstanceSource(root, "train")
    empty = [ex[0] for ex in written["train"]].index("bochum_000001_000020")  # train image 1
    assert len(unfiltered) == len(written["train"]) and len(unfiltered[empty]["classes"]) == 0


def _name(label_id):
    return {v: k for k, v in CITYSCAPES_THING_LABEL_IDS.items()}[label_id]


def test_coco_gt_keeps_group_regions_as_crowd(download):
    root, written = download
    gt = _spec(root).val.coco_gt()
    for image_id, (_, _, _, regions) in enumerate(written["val"]):
        anns = sorted(gt.imgToAnns[image_id], key=lambda a: a["id"])
        # the group regions of a class share its plain label id: one crowd region per class
        want = {}
        for r in (r for r in regions if r["kind"] in ("thing", "group")):
            merged = want.setdefault(r["value"], dict(r, mask=np.zeros_like(r["mask"])))
            merged["mask"] = merged["mask"] | r["mask"]
        want = [want[v] for v in sorted(want)]
        assert [a["iscrowd"] for a in anns] == [int(r["kind"] == "group") for r in want]
        for a, r in zip(anns, want):
            assert a["category_id"] == r["label_id"]
            np.testing.assert_array_equal(mask_utils.decode(a["segmentation"]), r["mask"])


def test_a_broken_download_names_the_file(download, tmp_path):
    root, written = download
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)  # gtFine not extracted
    with pytest.raises(DataError, match=f"missing folder {tmp_path / 'gtFine'}"):
        CityscapesInstanceSource(tmp_path, "val")
    stem = written["val"][0][0]
    city = stem.split("_")[0]
    gt_file = os.path.join(root, "gtFine", "val", city, f"{stem}_gtFine_instanceIds.png")
    moved = gt_file.replace("instanceIds", "instanceid")
    os.rename(gt_file, moved)
    try:
        with pytest.raises(DataError, match=f"has no instanceIds PNG: expected {gt_file}"):
            CityscapesInstanceSource(root, "val")
        Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(gt_file)  # an 8-bit RGB PNG
        with pytest.raises(DataError, match=f"{gt_file}: PIL mode 'RGB'"):
            CityscapesInstanceSource(root, "val")
    finally:
        os.replace(moved, gt_file)


def _oracle(pred_dir, gt_files):
    """cityscapesscripts' instance evaluation, called as its own main() does."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_eval

    # NumPy 1 as the script expects it: in1d (gone in NumPy 2.4), count_nonzero a Python int
    cs_eval.np = types.SimpleNamespace(**{**vars(np), "in1d": np.isin,
                                          "count_nonzero": lambda a: int(np.count_nonzero(a))})
    args = cs_eval.args
    args.predictionPath, args.predictionWalk = os.path.abspath(pred_dir), None
    args.JSONOutput, args.quiet, args.colorized = False, True, False
    args.gtInstancesFile = os.path.join(pred_dir, "..", "gt_cache.json")
    with contextlib.chdir(pred_dir), contextlib.redirect_stdout(io.StringIO()):
        predictions = [cs_eval.getPrediction(gt, args) for gt in gt_files]
        averages = cs_eval.evaluateImgLists(predictions, gt_files, args)["averages"]
    return 100 * averages["allAp"], 100 * averages["allAp50%"]


def _write_official(pred_dir, stem, dets):
    """One image's prediction files in cityscapesscripts' format, names of this test's own."""
    lines = []
    for i, (mask, label_id, score) in enumerate(dets):
        Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(pred_dir, f"{stem}_m{i}.png"))
        lines.append(f"{stem}_m{i}.png {label_id} {score}\n")
    with open(os.path.join(pred_dir, f"{stem}_dets.txt"), "w") as f:
        f.writelines(lines)


def _ours(source, dets_per_image):
    """Our path: the detections as COCO results, then evaluate_cityscapes."""
    results = []
    for image_id, dets in enumerate(dets_per_image):
        masks = np.stack([m for m, _, _ in dets]) if dets else np.zeros((0, 64, 128), bool)
        classes = [source.category_ids.index(c) for _, c, _ in dets]
        boxes = np.zeros((len(dets), 4))
        results += coco_metrics.detections_to_coco(image_id, boxes, [s for _, _, s in dets], classes,
                                                   source.category_ids, masks)
    stems = dict(enumerate(source.stems))
    return evaluate_cityscapes(results, stems, dict(enumerate(source.instance_id_files)))


def test_cityscapes_ap_is_cityscapesscripts_on_the_official_files(download, tmp_path, np_rng):
    root, written = download
    val = _spec(root).val
    # Perfect: the ground-truth masks, score 1.
    perfect = [[(r["mask"], r["label_id"], 1.0) for r in _things(regions)]
               for _, _, _, regions in written["val"]]
    assert _ours(val, perfect) == {"AP": 100.0, "AP50": 100.0}
    # Only the first class present: AP = 100 / the classes with instances of >= 100 pixels.
    present = sorted({r["label_id"] for _, _, _, regions in written["val"] for r in _things(regions)})
    only = [[d for d in dets if d[1] == present[0]] for dets in perfect]
    got = _ours(val, only)
    np.testing.assert_allclose([got["AP"], got["AP50"]], [100 / len(present)] * 2)
    # Shifted masks, wrong classes, false positives, random scores: the oracle on its files.
    noisy = []
    for dets in perfect:
        image_dets = []
        for mask, label_id, _ in dets:
            shifted = np.roll(mask, int(np_rng.integers(0, 8)), axis=1)
            wrong = np_rng.random() < 0.2
            image_dets.append((shifted, 24 if wrong and label_id != 24 else label_id, float(np_rng.random())))
        fp = np.zeros((64, 128), bool)
        y, x = np_rng.integers(0, 48), np_rng.integers(0, 100)
        fp[y:y + 14, x:x + 20] = True
        image_dets.append((fp, int(np_rng.choice(present)), float(np_rng.random())))
        noisy.append(image_dets)
    pred_dir = tmp_path / "official"
    pred_dir.mkdir()
    for (stem, _, _, _), dets in zip(written["val"], noisy):
        _write_official(pred_dir, stem, dets)
    want_ap, want_ap50 = _oracle(str(pred_dir), val.instance_id_files)
    got = _ours(val, noisy)
    assert 0 < want_ap < 100
    np.testing.assert_allclose([got["AP"], got["AP50"]], [want_ap, want_ap50], rtol=1e-12)


def test_train_and_eval_write_the_cityscapes_ap(download, tmp_path):
    root, written = download
    workdir = str(tmp_path / "run")
    flags = [f"--config.data.manual_dir={root}"]
    run_cli("train.py", CONFIG, workdir, *flags)
    run_cli("eval.py", CONFIG, workdir, *flags, "--config.eval.save_predictions=True")
    with open(os.path.join(workdir, "eval", "metrics.json")) as f:
        report = json.load(f)
    assert set(report) == {"step", "coarse", "pointrend", "cityscapes"}
    assert "segm_AP" in report["pointrend"]
    with open(os.path.join(workdir, "eval", "predictions.json")) as f:
        predictions = json.load(f)
    val = _spec(root).val
    pred_dir = tmp_path / "official"
    pred_dir.mkdir()
    for image_id, stem in enumerate(val.stems):
        _write_official(pred_dir, stem, [(mask_utils.decode(p["segmentation"]), p["category_id"], p["score"])
                                         for p in predictions if p["image_id"] == image_id])
    want = _oracle(str(pred_dir), val.instance_id_files)
    np.testing.assert_allclose([report["cityscapes"]["AP"], report["cityscapes"]["AP50"]], want)
