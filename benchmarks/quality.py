"""Segmentation quality on the synthetic multi-class set at equal steps:
coarse head only, PointRend, PointRend + ELU point head, PointRend + upsample-coarse-first
(the two practitioner variants of docs/design.md), PointRend with bfloat16 compute (float32
parameters and losses).

    python benchmarks/quality.py [--steps 1500] [--workdir runs/quality] [--variants NAME ...]

Each variant trains `configs/synthetic_multiclass.py` (same seed, same data, same schedule)
for `--steps` steps and is evaluated on the 128 val images; the table gives mIoU and
boundary IoU of the final prediction (PointRend's, or the coarse head's for "coarse only").
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {
    "coarse only": {"pointrend.enabled": False},
    "PointRend": {},
    "PointRend + ELU": {"pointrend.activation": "elu"},
    "PointRend + upsample-first": {"pointrend.upsample_coarse_first": True},
    "PointRend, bfloat16": {"model.dtype": "bfloat16"},
}


def load_config():
    from pointrend_jax.config import load_config as load

    return load(os.path.join(ROOT, "configs", "synthetic_multiclass.py"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "quality"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        metavar="NAME", help=f"a subset of {list(VARIANTS)}")
    args = parser.parse_args()

    from pointrend_jax.evaluate import evaluate
    from pointrend_jax.train import train  # noqa: E402

    rows = []
    for name in args.variants:
        overrides = VARIANTS[name]
        config = load_config()
        config.train.num_steps = args.steps
        config.train.image_summary_every = 0
        for key, value in overrides.items():
            section, field = key.split(".")
            config[section][field] = value
        workdir = os.path.join(args.workdir, name.replace(" ", "_").replace("+", "plus")
                               .replace(",", ""))
        train(config, workdir)
        results = evaluate(config, workdir)
        final = results["pointrend"] or results["coarse"]
        rows.append((name, final["miou"], final["boundary_iou"], results["coarse"]["miou"],
                     results["coarse"]["boundary_iou"]))
    print(f"synthetic multiclass, {args.steps} steps x 16 images, 128 val images")
    print("| variant | mIoU | boundary IoU | its coarse head: mIoU | boundary IoU |")
    print("|---|---:|---:|---:|---:|")
    for name, miou, biou, cmiou, cbiou in rows:
        print(f"| {name} | {100 * miou:.2f} | {100 * biou:.2f} | {100 * cmiou:.2f} | "
              f"{100 * cbiou:.2f} |")


if __name__ == "__main__":
    main()
