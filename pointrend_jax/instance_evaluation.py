"""Evaluation of instance models on the val split with pycocotools: bbox AP and mask AP of the
coarse masks (pasted at box size) and of PointRend's subdivided masks, Boundary AP, example
pictures and the COCO results file.

Writes under `WORKDIR/eval/`: `metrics.json` = `{"step", "coarse": {"bbox_AP", "segm_AP",
"segm_AP50", "segm_AP75", ...}, "pointrend": {...}}` (fractions as pycocotools gives them;
with `model.mask_head="maskrcnn"` "coarse" holds its 28x28 masks and "pointrend" is null),
`examples/STEM.png` (ground truth | coarse | PointRend, detections scoring at least
`eval.example_score_thresh`, with the points the last subdivision step re-predicted) and,
with `eval.save_predictions`, `predictions.json` (the final masks' detections, COCO results
format, image and category ids of the val json).
"""
from __future__ import annotations

import json
import os

import jax
from jax.experimental import multihost_utils
from tqdm import tqdm

from pointrend_jax import coco_metrics, visualize
from pointrend_jax.data import build_datasets
from pointrend_jax.data.pipeline import eval_examples, num_eval_examples
from pointrend_jax.instance_predictor import make_instance_predict_fn, predict_instances
from pointrend_jax.models.build import build_task_model
from pointrend_jax.predictor import restore_variables


def _gather(parts_dir: str, mine: dict) -> dict:
    """Every process's `{name: list}` concatenated (each process writes its share to the
    workdir; all read them all)."""
    pid, count = jax.process_index(), jax.process_count()
    if count == 1:
        return mine
    os.makedirs(parts_dir, exist_ok=True)
    with open(os.path.join(parts_dir, f"{pid}.json"), "w") as f:
        json.dump(mine, f)
    multihost_utils.sync_global_devices("instance eval results written")
    merged = {name: [] for name in mine}
    for p in range(count):
        with open(os.path.join(parts_dir, f"{p}.json")) as f:
            for name, values in json.load(f).items():
                merged[name] += values
    multihost_utils.sync_global_devices("instance eval results read")
    return merged


def evaluate_instances(config, workdir: str) -> dict:
    """Runs the evaluation of an instance model; returns what it writes to eval/metrics.json."""
    data = build_datasets(config.data)
    model = build_task_model(config, data.num_classes)
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size),
                                        config.eval.step)
    predict = make_instance_predict_fn(model)
    pointrend = config.model.mask_head == "pointrend"
    names = ("coarse", "pointrend") if pointrend else ("coarse",)
    category_ids = data.val.category_ids
    coco_gt = data.val.coco_gt()

    out_dir = os.path.join(workdir, "eval")
    write = jax.process_index() == 0
    pidx, pcount = jax.process_index(), jax.process_count()
    share = dict(process_index=pidx, process_count=pcount, max_examples=config.eval.max_images)
    count = num_eval_examples(data.val, **share)
    results = {n: [] for n in names}
    image_ids = []
    examples = eval_examples(data.val, **share)
    for i, example in enumerate(tqdm(examples, total=count, disable=not write, unit="img")):
        out = predict_instances(predict, variables, example["image"], config.augment,
                                config.eval.size_divisor, with_coarse=pointrend,
                                with_points=pointrend and write and i < config.eval.num_examples)
        masks = {"coarse": out.get("coarse_masks", out["masks"]), "pointrend": out["masks"]}
        image_ids.append(int(example["image_id"]))
        for n in names:
            results[n] += coco_metrics.detections_to_coco(
                example["image_id"], out["boxes"], out["scores"], out["classes"], category_ids,
                masks[n])
        if write and i < config.eval.num_examples:
            shown = out["scores"] >= config.eval.example_score_thresh
            dets = lambda m: {"boxes": out["boxes"][shown], "classes": out["classes"][shown],
                              "scores": out["scores"][shown], "masks": m[shown]}
            truth = {"boxes": example["boxes"], "classes": example["classes"], "scores": None,
                     "masks": example["masks"].astype(bool)}
            # the cells the last subdivision step re-predicted, in the boxes shown
            points = [out["points"][-1][shown].reshape(-1, 2)] if "points" in out else None
            visualize.save_instance_comparison(
                os.path.join(out_dir, "examples", f"{example['stem']}.png"), example["image"],
                truth, dets(masks["coarse"]), dets(masks[names[-1]]), data.class_names,
                points=points)

    results = _gather(os.path.join(out_dir, "parts"), {**results, "image_ids": image_ids})
    image_ids = sorted(results.pop("image_ids"))
    report = {"step": int(step), "coarse": None, "pointrend": None}
    if write:
        for n in names:
            report[n] = coco_metrics.evaluate_coco(coco_gt, results[n], image_ids=image_ids,
                                                   boundary=config.eval.boundary_ap)
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(report, f, indent=2)
        if config.eval.save_predictions:
            with open(os.path.join(out_dir, "predictions.json"), "w") as f:
                json.dump(results[names[-1]], f)
        print(f"step {step}, {len(image_ids)} val images")
        print(coco_metrics.format_instance_table({n: report[n] for n in names}))
    return report
