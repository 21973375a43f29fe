"""Evaluation on the val split: the coarse head alone and PointRend, metrics as papers
report them, example pictures and optional per-image predictions.

`eval.py` is the command line around `evaluate(config, workdir)`.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image
from tqdm import tqdm

from pointrend_jax import config as config_lib
from pointrend_jax import metrics, visualize
from pointrend_jax.data import build_datasets
from pointrend_jax.data.pipeline import eval_examples, num_eval_examples
from pointrend_jax.instance_evaluation import evaluate_instances
from pointrend_jax.models.build import task_of
from pointrend_jax.models.pointrend import build_model
from pointrend_jax.predictor import make_predict_fn, predict_padded, restore_variables


REPORTED = ("miou", "boundary_iou", "pixel_accuracy", "per_class_iou", "per_class_boundary_iou")


def _split_stats(pred, label, num_classes):
    confusion = metrics.confusion_matrix(pred, label, num_classes)
    inter, union = metrics.boundary_iou_stats(pred, label, num_classes)
    return confusion, inter, union


def evaluate(config, workdir: str) -> dict:
    """Runs the evaluation; returns what it writes to eval/metrics.json."""
    config_lib.validate(config)
    if task_of(config) == "instance":
        return evaluate_instances(config, workdir)
    data = build_datasets(config.data)
    k = data.num_classes
    model = build_model(config.model, config.pointrend, k)
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size),
                                        config.eval.step)
    predict = make_predict_fn(model)
    names = ("coarse", "pointrend") if config.pointrend.enabled else ("coarse",)
    totals = {n: [np.zeros((k, k), np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)]
              for n in names}

    out_dir = os.path.join(workdir, "eval")
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
                os.path.join(out_dir, "examples", f"{example['stem']}.png"), example["image"],
                example["label"], preds["coarse"][0], preds[names[-1]][0],
                points=[p[0] for p in out["points"]] or None)
        if config.eval.save_predictions:
            path = os.path.join(out_dir, "predictions", f"{example['stem']}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(preds[names[-1]][0].astype(np.uint8)).save(path)

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
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(results, f, indent=2)
        print(f"step {step}, {count * pcount} val images")
        print(metrics.format_table({n: results[n] for n in names}))
    return results
