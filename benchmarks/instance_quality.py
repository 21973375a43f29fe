"""Mask heads compared at equal steps and seed on the large synthetic instance set, where a
mask's resolution matters: the 28x28 Mask R-CNN head, PointRend and Implicit PointRend.

    python benchmarks/instance_quality.py [--heads maskrcnn,pointrend,implicit_pointrend]
        [--steps 300] [--workdir runs/instance_quality]

Every head trains `configs/synthetic_instances.py:large` (384-512 px pictures, 2-6 objects
of 64-300 px with holes and thin legs; ResNet-18 at width 16, 64-channel FPN, batch 8 on a
512x512 canvas, AdamW with a cosine schedule) for `--steps` steps with the same seed, data
order and schedule, differing only in `model.mask_head`, and is evaluated with pycocotools
on the 64 val pictures at their own size. Printed per head: mask AP, APl and Boundary AP of
its final masks (PointRend's and Implicit PointRend's subdivided ones; their first coarse
masks in a row of their own), bbox AP, the parameter count (all, and the mask head's), the
train step's compile time (persistent compilation cache off) and images/s
(`--timing-steps` steps of one batch after compiling). `--timing-only` prints just the last
three. A head that is not a `model.mask_head` value stops the run before anything trains.

Sized for 2 CPU cores: the train step runs at 2.9 (maskrcnn), 4.4 (pointrend) and 3.7
(implicit_pointrend) pictures/s on an idle 2-core machine, so at the defaults (300 steps x 8
pictures) the three heads train in about 34 minutes and, with two compilations each, the
timing, the evaluations and drawing the set once, finish in about 45. Rerunning resumes
finished or interrupted runs from their checkpoints under `--workdir/HEAD`. `--set
standard` runs the same comparison on the 128 px set (`configs/synthetic_instances.py`; its
objects are 8-60 px, so APl is undefined).
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

DEFAULT_HEADS = ("maskrcnn", "pointrend", "implicit_pointrend")
# (column, metrics key) of the final masks' evaluation, in % (boundary: Boundary AP)
COLUMNS = (("mask AP", "segm_AP"), ("APl", "segm_APl"), ("Boundary AP", "boundary_AP"),
           ("bbox AP", "bbox_AP"))


def head_config(head: str, args):
    """`configs/synthetic_instances.py:large` (or the standard set's config) with `head` as
    the mask head and the run's steps, seed and data."""
    from pointrend_jax.config import load_config

    path = os.path.join(ROOT, "configs", "synthetic_instances.py")
    config = load_config(path + ":large" if args.set == "large" else path)
    config.model.mask_head = head
    config.train.num_steps = args.steps
    config.train.image_summary_every = 0
    config.seed = args.seed
    for key in ("num_train", "num_val", "data_dir"):
        if getattr(args, key) is not None:
            config.data[key] = getattr(args, key)
    return config


def parse_heads(text: str) -> list[str]:
    """The comma-separated heads, each a `model.mask_head` value; SystemExit naming any other."""
    from pointrend_jax.models.mask_head import MASK_HEADS

    heads = [h.strip() for h in text.split(",") if h.strip()]
    unknown = [h for h in heads if h not in MASK_HEADS]
    if unknown or not heads:
        raise SystemExit(f"--heads={text!r}: {', '.join(map(repr, unknown)) or 'no head'} "
                         f"{'is' if len(unknown) == 1 else 'are'} not a mask head of this tree; "
                         f"the known ones are {', '.join(MASK_HEADS)}")
    return heads


def step_timing(config, steps: int):
    """(compile seconds, images/s, parameters, mask head parameters, val pictures) of the
    jitted train step on one real batch, no compilation cache."""
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
    count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))  # noqa: E731
    params, head_params = count(state.params), count(state.params["mask_head"])
    batch = next(train_iterator(data.train, global_batch_size=config.train.batch_size,
                                seed=config.seed, transform=task.train_transform(config)))
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
    speed = steps * config.train.batch_size / (time.perf_counter() - start)
    return compile_s, speed, params, head_params, len(data.val)


def _percent(value: float) -> str:
    """A pycocotools fraction in %, "n/a" for its -1 (no ground truth of that kind)."""
    return "n/a" if value < 0 else f"{100 * value:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", default=",".join(DEFAULT_HEADS),
                        help="comma-separated model.mask_head values, compared in this order")
    parser.add_argument("--set", choices=("large", "standard"), default="large",
                        help="the synthetic instance variant trained and evaluated")
    parser.add_argument("--steps", type=int, default=300, help="train steps of every head")
    parser.add_argument("--seed", type=int, default=0, help="config.seed of every head")
    parser.add_argument("--timing-steps", type=int, default=10,
                        help="steps timed after compiling for images/s")
    parser.add_argument("--num-train", dest="num_train", type=int, default=None,
                        help="train pictures (default: the large set's 512)")
    parser.add_argument("--num-val", dest="num_val", type=int, default=None,
                        help="val pictures (default: the large set's 64)")
    parser.add_argument("--data-dir", dest="data_dir", default=None,
                        help="where the set is written once (default: the tfds data folder)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "instance_quality"))
    parser.add_argument("--timing-only", action="store_true",
                        help="only the parameters, compile time and images/s of each head")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.timing_steps < 1:
        parser.error("--steps and --timing-steps must be >= 1")
    heads = parse_heads(args.heads)
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    from pointrend_jax.evaluate import evaluate
    from pointrend_jax.train import train

    print(f"\nMachine: {describe()}")
    rows = {}
    for head in heads:
        config = head_config(head, args)
        started = time.perf_counter()
        compile_s, speed, params, head_params, num_val = step_timing(config, args.timing_steps)
        rows[head] = {"compile_s": compile_s, "images_per_s": speed, "params": params,
                      "mask_head_params": head_params, "num_val": num_val}
        if not args.timing_only:
            workdir = os.path.join(args.workdir, head)
            train(config, workdir)  # resumes, or returns at once when already trained
            report = evaluate(config, workdir)
            rows[head]["metrics"] = report["pointrend"] or report["coarse"]  # the final masks
            if report["pointrend"]:  # the subdividing heads: their first, coarse masks too
                rows[head]["coarse_metrics"] = report["coarse"]
        rows[head]["wall_s"] = time.perf_counter() - started
        print(f"{head}: done in {rows[head]['wall_s']:.0f} s", flush=True)

    config = head_config(heads[0], args)
    print(f"\n{args.set} synthetic instances, {args.steps} steps x {config.train.batch_size} "
          f"images, seed {args.seed}, {rows[heads[0]]['num_val']} val pictures; AP in % (n/a: no "
          f"such objects); train step timed over {args.timing_steps} steps of one batch after "
          f"compiling")
    shown = () if args.timing_only else COLUMNS
    header = ["mask head", *[name for name, _ in shown], "params (mask head)", "compile s",
              "train img/s", "wall s"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for head, row in rows.items():
        cells = [_percent(row["metrics"][key]) for _, key in shown]
        cells += [f"{row['params'] / 1e6:.2f}M ({row['mask_head_params'] / 1e6:.2f}M)",
                  f"{row['compile_s']:.0f}", f"{row['images_per_s']:.2f}", f"{row['wall_s']:.0f}"]
        print(f"| {head} | " + " | ".join(cells) + " |")
        if "coarse_metrics" in row:
            cells = [_percent(row["coarse_metrics"][key]) for _, key in shown]
            print(f"| {head}, coarse masks | " + " | ".join(cells) + " |" + " |" * 4)
    if not args.timing_only:
        os.makedirs(args.workdir, exist_ok=True)
        with open(os.path.join(args.workdir, "summary.json"), "w") as handle:
            json.dump({"steps": args.steps, "seed": args.seed, "heads": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
