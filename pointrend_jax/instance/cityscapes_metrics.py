"""Cityscapes instance AP as detectron2's ``CityscapesInstanceEvaluator`` computes it: the
official ``cityscapesscripts`` evaluation (``evalInstanceLevelSemanticLabeling``) on
prediction files in its format, against the gtFine instanceIds PNGs.

The files (``write_predictions``), one set per image, in one folder:
``STEM_leftImg8bit_pred.txt`` with a line ``PNG LABEL_ID SCORE`` per detection, and
``STEM_leftImg8bit_I_CLASS.png`` the 0/255 mask of detection I; LABEL_ID is the Cityscapes
label id of the detection's class (``data.cityscapes_instances.LABEL_IDS``). An image without
detections gets an empty ``_pred.txt`` (cityscapesscripts needs one per ground-truth image).
``evaluate_prediction_dir`` runs cityscapesscripts on such a folder and returns its averages
``allAp`` and ``allAp50%`` times 100 as ``{"AP", "AP50"}`` (detectron2's ``segm`` numbers);
``evaluate_cityscapes`` does both from COCO-format results (``coco_metrics.detections_to_coco``).

Shapes: D detections of one image, H x W its size.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os
import pathlib
import tempfile
import types
from typing import Iterable, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from pointrend_jax.data.cityscapes_instances import CLASS_NAMES, LABEL_IDS

_NAME_OF_LABEL = dict(zip(LABEL_IDS, CLASS_NAMES))
PRED_SUFFIX = "_leftImg8bit_pred.txt"


def write_predictions(pred_dir: str | os.PathLike, stem: str, masks: np.ndarray,
                      label_ids: Sequence[int], scores: Sequence[float]) -> None:
    """The prediction files of image ``stem`` (CITY_SEQ_FRAME) under ``pred_dir``: masks bool
    (D, H, W), label_ids and scores (D,)."""
    pred_dir = pathlib.Path(pred_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (mask, label_id, score) in enumerate(zip(masks, label_ids, scores)):
        if int(label_id) not in _NAME_OF_LABEL:
            raise ValueError(f"{stem}: detection {i} has label id {label_id}, not one of the "
                             f"Cityscapes thing label ids {list(LABEL_IDS)}.")
        png = f"{stem}_leftImg8bit_{i}_{_NAME_OF_LABEL[int(label_id)]}.png"
        Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(pred_dir / png)
        lines.append(f"{png} {int(label_id)} {float(score)!r}\n")
    (pred_dir / f"{stem}{PRED_SUFFIX}").write_text("".join(lines))


def _count_nonzero(a, axis=None, **kwargs):
    count = np.count_nonzero(a, axis=axis, **kwargs)
    return int(count) if axis is None else count


def _numpy_for_cityscapesscripts():
    """NumPy as cityscapesscripts 2.3.0 was written for (NumPy 1): ``np.in1d``, which NumPy 2.4
    removed, is ``np.isin`` (the shape it keeps is reshaped away), and a whole-array
    ``np.count_nonzero`` is a Python int again (a NumPy integer breaks its json dump)."""
    shim = types.ModuleType("numpy")
    shim.__dict__.update(vars(np))
    shim.in1d = getattr(np, "in1d", np.isin)
    shim.count_nonzero = _count_nonzero
    return shim


def evaluate_prediction_dir(pred_dir: str | os.PathLike,
                            gt_files: Iterable[str | os.PathLike]) -> dict[str, float]:
    """cityscapesscripts' instance evaluation of the files under ``pred_dir`` against the
    instanceIds PNGs ``gt_files``: ``{"AP", "AP50"}`` in percent. The ground-truth cache and
    its ``matches.json`` go to a temporary folder."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs_eval

    cs_eval.np = _numpy_for_cityscapesscripts()
    gt_files = [os.path.abspath(f) for f in gt_files]
    if not gt_files:
        raise ValueError("Cityscapes instance evaluation needs at least one ground-truth image.")
    args = cs_eval.args
    with tempfile.TemporaryDirectory(prefix="cityscapes_eval_") as scratch:
        args.predictionPath = os.path.abspath(pred_dir)
        args.predictionWalk = None
        args.JSONOutput = False
        args.colorized = False
        args.quiet = True
        args.gtInstancesFile = os.path.join(scratch, "gtInstances.json")
        # cityscapesscripts prints its tables and writes matches.json to the working directory;
        # its errors print a message and exit.
        printed = io.StringIO()
        try:
            with contextlib.chdir(scratch), contextlib.redirect_stdout(printed):
                predictions = [cs_eval.getPrediction(gt, args) for gt in gt_files]
                averages = cs_eval.evaluateImgLists(predictions, gt_files, args)["averages"]
        except SystemExit:
            raise RuntimeError(f"cityscapesscripts' instance evaluation of {pred_dir} failed:\n"
                               f"{printed.getvalue().strip()}") from None
    return {"AP": 100.0 * float(averages["allAp"]), "AP50": 100.0 * float(averages["allAp50%"])}


def evaluate_cityscapes(results: Sequence[Mapping], stems: Mapping[int, str],
                        gt_files: Mapping[int, str | os.PathLike]) -> dict[str, float]:
    """``{"AP", "AP50"}`` (percent) of COCO-format ``results`` (category ids = label ids,
    RLE masks) on the images ``stems`` / ``gt_files`` name by image id."""
    per_image = collections.defaultdict(list)
    for r in results:
        per_image[int(r["image_id"])].append(r)
    unknown = sorted(set(per_image) - set(stems))
    if unknown:
        raise ValueError(f"results on image ids {unknown[:10]} that are not evaluated")
    with tempfile.TemporaryDirectory(prefix="cityscapes_pred_") as pred_dir:
        for image_id, stem in stems.items():
            dets = per_image.get(image_id, [])
            masks = (mask_util.decode([d["segmentation"] for d in dets]).transpose(2, 0, 1)
                     if dets else np.zeros((0, 1, 1), bool))
            write_predictions(pred_dir, stem, masks, [d["category_id"] for d in dets],
                              [d["score"] for d in dets])
        return evaluate_prediction_dir(pred_dir, [gt_files[i] for i in stems])
