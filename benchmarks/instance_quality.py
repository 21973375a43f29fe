"""Instance segmentation on the synthetic instance set at equal steps: the coarse 7x7 masks
and PointRend's 224x224 masks (one PointRend model), and the standard 28x28 Mask R-CNN head
(`model.mask_head="maskrcnn"`), with train speed and the train step's compile time.

    python benchmarks/instance_quality.py [--steps 1000] [--workdir runs/instance_quality]

Both variants train `configs/synthetic_instances.py` (same seed, data and schedule) for
`--steps` steps and are evaluated with pycocotools on the 128 val images. Compile time is
the first step's wall time minus a later step's (the persistent compilation cache is off).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine_info import describe  # noqa: E402

KEYS = ("bbox_AP", "segm_AP", "segm_AP50", "segm_AP75", "boundary_AP")


def load_config():
    spec = importlib.util.spec_from_file_location(
        "synthetic_instances", os.path.join(ROOT, "configs", "synthetic_instances.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def compile_seconds(config) -> float:
    """Wall time to trace and compile the train step (no cache)."""
    import jax

    from pointrend_jax import train_lib
    from pointrend_jax.data import build_datasets
    from pointrend_jax.data.instance_augment import InstanceAugment
    from pointrend_jax.data.pipeline import train_iterator
    from pointrend_jax.models.build import build_task_model

    data = build_datasets(config.data)
    model = build_task_model(config, data.num_classes)
    mesh = train_lib.make_mesh(config.mesh)
    tx, schedule = train_lib.make_optimizer(config.optimizer, config.train.num_steps)
    state = train_lib.create_train_state(model, tx, jax.random.key(0),
                                         tuple(config.augment.crop_size), mesh, config.mesh)
    batch = next(train_iterator(data.train, global_batch_size=config.train.batch_size, seed=0,
                                augment_cfg=None, transform=InstanceAugment(config.augment)))
    step = train_lib.jit_train_step(train_lib.make_train_step(model, tx, schedule, config.loss),
                                    state, mesh)
    start = time.perf_counter()
    step.lower(state, train_lib.global_batch(batch, mesh), jax.random.key(1)).compile()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "instance_quality"))
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from pointrend_jax.evaluation import evaluate
    from pointrend_jax.training import train

    rows = []
    for head in ("pointrend", "maskrcnn"):
        config = load_config()
        config.model.mask_head = head
        config.train.num_steps = args.steps
        config.train.image_summary_every = 0
        compile_s = compile_seconds(config)
        workdir = os.path.join(args.workdir, head)
        train(config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            logged = [json.loads(line) for line in f]
        speed = sorted(m["images_per_sec"] for m in logged[1:])[len(logged[1:]) // 2]
        results = evaluate(config, workdir)
        if head == "pointrend":
            rows.append(("coarse 7x7 (PointRend model)", results["coarse"], speed, compile_s))
            rows.append(("PointRend 224x224", results["pointrend"], speed, compile_s))
        else:
            rows.append(("Mask R-CNN 28x28 head", results["coarse"], speed, compile_s))
    config = load_config()
    print(f"\nMachine: {describe()}")
    print(f"synthetic instances, {args.steps} steps x {config.train.batch_size} images, "
          f"{config.data.num_val or 128} val images, AP in %")
    header = "| masks | " + " | ".join(KEYS) + " | train img/s | compile s |"
    print(header)
    print("|" + "---|" * (len(KEYS) + 3))
    for name, metrics, speed, compile_s in rows:
        cells = " | ".join(f"{100 * metrics[k]:.1f}" for k in KEYS)
        print(f"| {name} | {cells} | {speed:.1f} | {compile_s:.0f} |")
    base = rows[-1][1]["segm_AP"]
    if base > 0:
        for name, metrics, _, _ in rows[:-1]:
            print(f"segm AP ratio {name} / 28x28 head: {metrics['segm_AP'] / base:.2f}")


if __name__ == "__main__":
    main()
