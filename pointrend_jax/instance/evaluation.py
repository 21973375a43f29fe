"""Instance evaluation on the val split with pycocotools: bbox AP and mask AP of the
coarse masks (pasted at box size) and of PointRend's subdivided masks, Boundary AP, example
pictures and the COCO results file.

Writes under `WORKDIR/eval/`: `metrics.json` = `{"step", "coarse": {"bbox_AP", "segm_AP",
"segm_AP50", "segm_AP75", ...}, "pointrend": {...}}` (fractions as pycocotools gives them;
with `model.mask_head="maskrcnn"` "coarse" holds its 28x28 masks and "pointrend" is null; with
"implicit_pointrend" "coarse" is its first 28x28 regular-grid prediction),
with data.name="cityscapes_instances" also `"cityscapes": {"AP", "AP50"}`, the final masks'
AP and AP50 in percent from cityscapesscripts' instance evaluation as detectron2's
CityscapesInstanceEvaluator reports them (`cityscapes_metrics.py`; process 0 evaluates the
gathered results), `examples/STEM.png` (ground truth | coarse | PointRend, detections scoring
at least `eval.example_score_thresh`, with the points the last subdivision step re-predicted) and,
with `eval.save_predictions`, `predictions.json` (the final masks' detections, COCO results
format, image and category ids of the val json).
"""
from __future__ import annotations

import json

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from pointrend_jax import visualize
from pointrend_jax.data.pipeline import eval_examples, num_eval_examples
from pointrend_jax.instance import cityscapes_metrics, coco_metrics
from pointrend_jax.instance.predictor import make_instance_predict_fn, predict_instances
from pointrend_jax.workdir import restore_variables


def _gather(parts_dir: epath.Path, mine: dict) -> dict:
    """Every process's `{name: list}` concatenated (each process writes its share to the
    workdir; all read them all)."""
    pid, count = jax.process_index(), jax.process_count()
    if count == 1:
        return mine
    parts_dir.mkdir(parents=True, exist_ok=True)
    (parts_dir / f"{pid}.json").write_text(json.dumps(mine))
    multihost_utils.sync_global_devices("instance eval results written")
    merged = {name: [] for name in mine}
    for p in range(count):
        for name, values in json.loads((parts_dir / f"{p}.json").read_text()).items():
            merged[name] += values
    multihost_utils.sync_global_devices("instance eval results read")
    return merged


def evaluate_instances(config, workdir, data, model) -> dict:
    """Evaluates `model` of the run in `workdir` on `data.val` (a `DatasetSpec`); returns
    what it writes to eval/metrics.json."""
    variables, step = restore_variables(workdir, model, tuple(config.augment.crop_size),
                                        config.eval.step)
    predict = make_instance_predict_fn(model)
    pointrend = config.model.mask_head in ("pointrend", "implicit_pointrend")  # subdivides
    names = ("coarse", "pointrend") if pointrend else ("coarse",)
    category_ids = data.val.category_ids
    coco_gt = data.val.coco_gt()

    out_dir = epath.Path(workdir) / "eval"
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
                out_dir / "examples" / f"{example['stem']}.png", example["image"],
                truth, dets(masks["coarse"]), dets(masks[names[-1]]), data.class_names,
                points=points)

    results = _gather(out_dir / "parts", {**results, "image_ids": image_ids})
    image_ids = sorted(results.pop("image_ids"))
    report = {"step": int(step), "coarse": None, "pointrend": None}
    if write:
        for n in names:
            report[n] = coco_metrics.evaluate_coco(coco_gt, results[n], image_ids=image_ids,
                                                   boundary=config.eval.boundary_ap)
        if hasattr(data.val, "instance_id_files"):  # Cityscapes: its official instance AP too
            report["cityscapes"] = cityscapes_metrics.evaluate_cityscapes(
                results[names[-1]], {i: data.val.stems[i] for i in image_ids},
                {i: data.val.instance_id_files[i] for i in image_ids})
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        if config.eval.save_predictions:
            (out_dir / "predictions.json").write_text(json.dumps(results[names[-1]]))
        print(f"step {step}, {len(image_ids)} val images")
        print(coco_metrics.format_instance_table({n: report[n] for n in names}))
        if "cityscapes" in report:
            print("Cityscapes instance AP (cityscapesscripts, %): AP {AP:.2f}, AP50 {AP50:.2f}"
                  .format(**report["cityscapes"]))
    return report


def example_images(model, variables, val_source, config, count: int):
    """`image | ground truth | coarse | PointRend` strips (uint8 (H, 4W, 3)) of the first
    `count` val images: masks blended over the image, detections scoring at least
    `eval.example_score_thresh`."""
    predict = make_instance_predict_fn(model)
    k = model.num_classes
    images = []
    for i in range(min(count, len(val_source))):
        example = val_source[i]
        out = predict_instances(predict, variables, example["image"], config.augment,
                                config.eval.size_divisor, with_coarse=True)
        image = example["image"]
        shown = out["scores"] >= config.eval.example_score_thresh
        panels = [image,
                  visualize.blend_masks(image, example["masks"].astype(bool),
                                        example["classes"], k),
                  visualize.blend_masks(image, out.get("coarse_masks", out["masks"])[shown],
                                        out["classes"][shown], k),
                  visualize.blend_masks(image, out["masks"][shown], out["classes"][shown], k)]
        images.append(np.concatenate(panels, axis=1))
    return images
