"""Instance segmentation on the synthetic instance set at equal steps: the coarse 7x7 masks
and PointRend's 224x224 masks (one PointRend model), and the standard 28x28 Mask R-CNN head
(`model.mask_head="maskrcnn"`), with train speed and the train step's compile time.

    python benchmarks/instance_quality.py [--steps 1000] [--workdir runs/instance_quality]

Both variants train `configs/synthetic_instances.py` (same seed, data and schedule) for
`--steps` steps and are evaluated with pycocotools on the 128 val images. Compile time is
the train step's lowering + compilation with the persistent cache off; images/s is timed over
20 steps of one batch after compiling (`--timing-only` prints just these, for a quiet machine).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine_info import describe  # noqa: E402

KEYS = ("bbox_AP", "segm_AP", "segm_AP50", "segm_AP75", "boundary_AP")


def load_config():
    from pointrend_jax.config import load_config as load

    return load(os.path.join(ROOT, "configs", "synthetic_instances.py"))


def step_timing(config, steps: int = 20):
    """(compile seconds, images/s) of the jitted train step on one real batch, no cache."""
    import jax

    from pointrend_jax.data.pipeline import train_iterator
    from pointrend_jax.tasks import validated_task
    from pointrend_jax.train import optimizer as optimizer_lib
    from pointrend_jax.train import state as state_lib
    from pointrend_jax.train.step import jit_train_step, make_train_step

    task = validated_task(config)
    data = task.build_datasets(config.data)
    model = task.build_model(config, data.num_classes)
    mesh = state_lib.make_mesh(config.mesh)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.train.num_steps)
    state = state_lib.create_train_state(model, tx, jax.random.key(0),
                                         tuple(config.augment.crop_size), mesh, config.mesh)
    batch = next(train_iterator(data.train, global_batch_size=config.train.batch_size, seed=0,
                                transform=task.train_transform(config)))
    batch = state_lib.global_batch(batch, mesh)
    step = jit_train_step(make_train_step(task.loss_fn(model, config), tx, schedule), state, mesh)
    rng = jax.random.key(1)
    start = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - start
    state, _ = compiled(state, batch, rng)  # warm-up
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = compiled(state, batch, rng)
    jax.block_until_ready(state)
    return compile_s, steps * config.train.batch_size / (time.perf_counter() - start)


HEADS = {"pointrend": ("coarse 7x7 (PointRend model)", "PointRend 224x224"),
         "maskrcnn": ("Mask R-CNN 28x28 head",)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "instance_quality"))
    parser.add_argument("--timing-only", action="store_true",
                        help="only the compile time and images/s of each head's train step")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from pointrend_jax.evaluate import evaluate
    from pointrend_jax.train import train

    config = load_config()
    print(f"\nMachine: {describe()}")
    timing = {}
    for head in HEADS:
        config = load_config()
        config.model.mask_head = head
        timing[head] = step_timing(config)
    print(f"train step, batch {config.train.batch_size} of "
          f"{'x'.join(map(str, config.augment.crop_size))}, 20 steps timed after compiling")
    print("| mask head | compile s | train img/s |\n|---|---:|---:|")
    for head, (compile_s, speed) in timing.items():
        print(f"| {head} | {compile_s:.0f} | {speed:.1f} |")
    if args.timing_only:
        return

    rows = []
    for head, names in HEADS.items():
        config = load_config()
        config.model.mask_head = head
        config.train.num_steps = args.steps
        config.train.image_summary_every = 0
        workdir = os.path.join(args.workdir, head)
        train(config, workdir)  # resumes, or returns at once when already trained
        results = evaluate(config, workdir)
        for name, key in zip(names, ("coarse", "pointrend")):
            rows.append((name, results[key]))
    print(f"\nsynthetic instances, {args.steps} steps x {config.train.batch_size} images, "
          f"{config.data.num_val or 128} val images, AP in %")
    print("| masks | " + " | ".join(KEYS) + " |")
    print("|" + "---|" * (len(KEYS) + 1))
    for name, metrics in rows:
        print(f"| {name} | " + " | ".join(f"{100 * metrics[k]:.1f}" for k in KEYS) + " |")
    base = rows[-1][1]["segm_AP"]
    if base > 0:
        for name, metrics in rows[:-1]:
            print(f"segm AP ratio {name} / 28x28 head: {metrics['segm_AP'] / base:.2f}")


if __name__ == "__main__":
    main()
