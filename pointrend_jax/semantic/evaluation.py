"""Semantic evaluation on the val split: the coarse head alone and PointRend, metrics as
papers report them, example pictures and optional per-image predictions.

Writes under `WORKDIR/eval/` (local or a bucket): `metrics.json` = `{"step", "coarse": {...},
"pointrend": {...}}` (mIoU, boundary IoU, pixel accuracy, per-class IoU, as fractions),
`examples/STEM.png` and, with `eval.save_predictions`, `predictions/STEM.png`.
"""
from __future__ import annotations

import io
import json

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from PIL import Image
from tqdm import tqdm

from pointrend_jax import visualize
from pointrend_jax.data.pipeline import eval_examples, num_eval_examples
from pointrend_jax.semantic import metrics
from pointrend_jax.semantic.predictor import make_predict_fn, predict_padded
from pointrend_jax.workdir import restore_variables


REPORTED = ("miou", "boundary_iou", "pixel_accuracy", "per_class_iou", "per_class_boundary_iou")


def _split_stats(pred, label, num_classes):
    confusion = metrics.confusion_matrix(pred, label, num_classes)
    inter, union = metrics.boundary_iou_stats(pred, label, num_classes)
    return confusion, inter, union


def evaluate_semantic(config, workdir, data, model) -> dict:
    """Evaluates `model` of the run in `workdir` on `data.val` (a `DatasetSpec`); returns
    what it writes to eval/metrics.json."""
    k = data.num_classes
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size),
                                        config.eval.step)
    predict = make_predict_fn(model)
    names = ("coarse", "pointrend") if config.pointrend.enabled else ("coarse",)
    totals = {n: [np.zeros((k, k), np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)]
              for n in names}

    out_dir = epath.Path(workdir) / "eval"
    write = jax.process_index() == 0
    pidx, pcount = jax.process_index(), jax.process_count()
    share = dict(process_index=pidx, process_count=pcount, max_examples=config.eval.max_images)
    count = num_eval_examples(data.val, **share)
    examples = eval_examples(data.val, **share)
    for i, example in enumerate(tqdm(examples, total=count, disable=not write, unit="img")):
        out = predict_padded(predict, variables, example["image"][None], config.eval.size_divisor)
        label = example["label"][None]
        preds = {"coarse": np.asarray(out["coarse"].argmax(-1)),
                 "pointrend": np.asarray(out["logits"].argmax(-1))}
        for n in names:
            for total, value in zip(totals[n], _split_stats(preds[n], label, k)):
                total += np.asarray(value, np.int64)
        if write and i < config.eval.num_examples:
            visualize.save_comparison(
                out_dir / "examples" / f"{example['stem']}.png", example["image"],
                example["label"], preds["coarse"][0], preds[names[-1]][0],
                points=[p[0] for p in out["points"]] or None)
        if config.eval.save_predictions:
            path = out_dir / "predictions" / f"{example['stem']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            png = io.BytesIO()
            Image.fromarray(preds[names[-1]][0].astype(np.uint8)).save(png, format="png")
            path.write_bytes(png.getvalue())

    results = {"step": int(step)}
    for n in ("coarse", "pointrend"):
        if n not in totals:
            results[n] = None
            continue
        confusion, inter, union = totals[n]
        if pcount > 1:  # sum every process's share of the split
            confusion, inter, union = (np.asarray(x).sum(0) for x in multihost_utils.process_allgather(
                (confusion, inter, union)))
        acc = metrics.SegmentationMetrics(k, data.class_names)
        acc.update(confusion, inter, union)
        computed = acc.compute()
        results[n] = {key: computed[key] for key in REPORTED}
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
        print(f"step {step}, {num_eval_examples(data.val, max_examples=config.eval.max_images)} "
              "val images")
        print(metrics.format_table({n: results[n] for n in names}))
    return results


def example_images(model, variables, val_source, config, count: int):
    """`image | ground truth | coarse | PointRend` strips (uint8 (H, 4W, 3)) of the first
    `count` val images."""
    predict = make_predict_fn(model)
    images = []
    for i in range(min(count, len(val_source))):
        example = val_source[i]
        out = predict_padded(predict, variables, example["image"][None], config.eval.size_divisor)
        coarse = np.asarray(out["coarse"][0].argmax(-1))
        refined = np.asarray(out["logits"][0].argmax(-1))
        panels = [example["image"]] + [visualize.colorize(m) for m in
                                       (example["label"], coarse, refined)]
        images.append(np.concatenate(panels, axis=1))
    return images
