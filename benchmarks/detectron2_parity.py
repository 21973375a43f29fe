"""Parity of imported detectron2 models with detectron2 itself, at the zoo models' real sizes.

detectron2 and this project live in separate environments, so the measurement has two steps:

    # 1. where detectron2 is importable, with projects/PointRend on PYTHONPATH:
    python benchmarks/detectron2_parity.py reference --detectron2 D2_SOURCE --out DIR
    # 2. in this project's environment:
    .venv/bin/python benchmarks/detectron2_parity.py compare --out DIR

`reference` builds detectron2's models from the PointRend zoo configs under D2_SOURCE
(`pointrend_semantic_R_101_FPN_1x_cityscapes.yaml`, `pointrend_rcnn_R_50_FPN_1x_coco.yaml`)
with random weights of a scale that keeps activations O(1) (detectron2's own init gives every
box the same score and every mask logit 0) and box regressions of a trained model's size (so
boxes are objects near their anchors and proposals, not slivers), saves each as a model zoo
`.pkl` and its predictions on random images (one of a multiple of 32, one detectron2 pads).
`compare` imports each with `python -m pointrend_jax.convert` (timed), predicts with
`pointrend_jax.load(workdir).predict` and prints the figures benchmarks/RESULTS.md records:
semantic class-map agreement and logit difference; instance detections found (same class, box
IoU >= 0.5, greedily by score), their box IoU and mask IoU, and score difference.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import subprocess
import sys
import time

import numpy as np

SEMANTIC_YAML = "projects/PointRend/configs/SemanticSegmentation/" \
                "pointrend_semantic_R_101_FPN_1x_cityscapes.yaml"
INSTANCE_YAML = "projects/PointRend/configs/InstanceSegmentation/" \
                "pointrend_rcnn_R_50_FPN_1x_coco.yaml"
# image sizes (h, w): a multiple of 32 and one that is padded; instance images have the short
# side 800 that the config's test resize keeps, so both models see the same pixels
SEMANTIC_SIZES = ((512, 1024), (500, 1000))
INSTANCE_SIZES = ((800, 1088), (800, 1066))
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


# prediction layers whose random weights are 10x smaller, so that boxes stay near their
# anchors and proposals and scores and masks do not saturate
_OUTPUT_LAYERS = ("objectness_logits", "anchor_deltas", "cls_score", "bbox_pred", "prediction",
                  "predictor")
# box regressions (the RPN's and the box head's), weights and biases a further 20x smaller,
# as tests/test_d2_import.py scales them: a trained model's small corrections, so boxes have
# object size near their anchors and proposals instead of random slivers that clipping empties
_REGRESSION_LAYERS = ("anchor_deltas", "bbox_pred")
_REGRESSION_SCALE = 0.05


def randomize(model, seed: int) -> None:
    """Random weights and norm buffers of every state-dict tensor: weights normal /
    sqrt(fan_in), biases and means N(0, 0.1^2), norm scales and variances U(0.5, 1.5), the
    scale of each bottleneck's last norm 10x smaller (else 33 residual additions grow the
    activations of a ResNet-101 into the thousands and the box head's scores overflow), the
    prediction layers' weights 10x smaller (`_OUTPUT_LAYERS`), and the box regressions'
    weights and biases a further `_REGRESSION_SCALE` (`_REGRESSION_LAYERS`)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name.endswith(("norm.weight", "running_var")):
                value = 0.5 + torch.rand(tensor.shape, generator=generator)
                if name.endswith("conv3.norm.weight"):
                    value = value / 10
            elif tensor.ndim == 1:
                value = 0.1 * torch.randn(tensor.shape, generator=generator)
            else:
                fan_in = tensor.shape[0] if name.endswith("deconv.weight") else \
                    int(np.prod(tensor.shape[1:]))
                value = torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in)
                if any(part in name for part in _OUTPUT_LAYERS):
                    value = value / 10
            if any(part in name for part in _REGRESSION_LAYERS):
                value = value * _REGRESSION_SCALE
            tensor.copy_(value)


def reference(source: str, out: str, tasks) -> None:
    import point_rend
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, yaml, sizes in (("semantic", SEMANTIC_YAML, SEMANTIC_SIZES),
                              ("instance", INSTANCE_YAML, INSTANCE_SIZES)):
        if name not in tasks:
            continue
        cfg = get_cfg()
        point_rend.add_pointrend_config(cfg)
        cfg.merge_from_file(os.path.join(source, yaml))
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        randomize(model, seed=0)
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        with open(os.path.join(out, f"{name}.pkl"), "wb") as f:
            pickle.dump({"model": weights, "__author__": "benchmarks/detectron2_parity.py"}, f)
        results = {}
        for h, w in sizes:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # RGB
            tensor = torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1)))
            start = time.perf_counter()
            with torch.no_grad():
                output = model([{"image": tensor.float(), "height": h, "width": w}])[0]
            seconds = time.perf_counter() - start
            key = f"{h}x{w}"
            results[f"{key}/image"] = image
            results[f"{key}/seconds"] = seconds
            if name == "semantic":
                results[f"{key}/logits"] = output["sem_seg"].permute(1, 2, 0).numpy()
            else:
                inst = output["instances"]
                results[f"{key}/boxes"] = inst.pred_boxes.tensor.numpy()
                results[f"{key}/scores"] = inst.scores.numpy()
                results[f"{key}/classes"] = inst.pred_classes.numpy()
                results[f"{key}/masks"] = inst.pred_masks.numpy()
            print(f"{name} {key}: detectron2 took {seconds:.1f} s", flush=True)
        np.savez_compressed(os.path.join(out, f"{name}_reference.npz"), **results)


def _box_iou(a, b):
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def compare(out: str, tasks) -> None:
    import pointrend_jax

    configs = {"semantic": ("configs/cityscapes_semfpn_r101.py", []),
               "instance": ("configs/coco_pointrend_r50_fpn.py", [])}
    for name, (config, overrides) in configs.items():
        if name not in tasks:
            continue
        workdir = os.path.join(out, f"{name}_run")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pointrend_jax.convert",
                        os.path.join(out, f"{name}.pkl"), "--config", config, "--workdir",
                        workdir, *overrides], check=True, cwd=REPO)
        print(f"{name}: python -m pointrend_jax.convert took {time.perf_counter() - start:.1f} s "
              "(process start to exit)", flush=True)
        predictor = pointrend_jax.load(workdir)
        reference_npz = np.load(os.path.join(out, f"{name}_reference.npz"))
        keys = sorted({k.split("/")[0] for k in reference_npz.files})
        for key in keys:
            ref = {k.split("/")[1]: reference_npz[k] for k in reference_npz.files
                   if k.startswith(key + "/")}
            start = time.perf_counter()
            if name == "semantic":
                ours = predictor.predict(ref["image"], return_logits=True)
                seconds = time.perf_counter() - start
                diff = np.abs(ours["logits"] - ref["logits"])
                agree = np.mean(ours["classes"] == ref["logits"].argmax(-1))
                print(f"semantic {key}: class map agreement {100 * agree:.4f}%, max |logit "
                      f"difference| {diff.max():.2e} (median {np.median(diff):.1e}), logit "
                      f"range {np.abs(ref['logits']).max():.1f}; predict {seconds:.1f} s "
                      "(first call, with compilation)", flush=True)
                continue
            ours = predictor.predict(ref["image"])
            seconds = time.perf_counter() - start
            iou = _box_iou(ours["boxes"], ref["boxes"]) if len(ours["boxes"]) and len(
                ref["boxes"]) else np.zeros((len(ours["boxes"]), len(ref["boxes"])))
            iou = np.where(ours["classes"][:, None] == ref["classes"][None, :], iou, 0.0)
            taken, box_ious, mask_ious, score_diffs = set(), [], [], []
            for j in np.argsort(-ref["scores"]):
                candidates = [i for i in np.argsort(-iou[:, j]) if i not in taken]
                if not candidates or iou[candidates[0], j] < 0.5:
                    continue
                i = candidates[0]
                taken.add(i)
                box_ious.append(iou[i, j])
                a, b = ours["masks"][i], ref["masks"][j]
                union = (a | b).sum()  # two empty masks are equal: IoU 1
                mask_ious.append((a & b).sum() / union if union else 1.0)
                score_diffs.append(abs(ours["scores"][i] - ref["scores"][j]))
            found = (f"; box IoU mean {np.mean(box_ious):.6f} min {np.min(box_ious):.6f}; mask "
                     f"IoU mean {np.mean(mask_ious):.6f} min {np.min(mask_ious):.6f}; max |score "
                     f"difference| {np.max(score_diffs):.1e}") if box_ious else ""
            print(f"instance {key}: {len(box_ious)} of detectron2's {len(ref['scores'])} "
                  f"detections found ({len(ours['scores'])} here){found}; predict "
                  f"{seconds:.1f} s (first call, with compilation)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("reference", "compare"))
    parser.add_argument("--out", required=True, help="folder for the checkpoints and outputs")
    parser.add_argument("--detectron2", help="detectron2's source tree (reference step)")
    parser.add_argument("--tasks", nargs="+", default=("semantic", "instance"),
                        choices=("semantic", "instance"))
    args = parser.parse_args(argv)
    if args.step == "reference":
        if not args.detectron2:
            parser.error("reference needs --detectron2 D2_SOURCE (for the zoo configs)")
        reference(args.detectron2, args.out, args.tasks)
    else:
        compare(args.out, args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
