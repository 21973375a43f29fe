"""What rematerialisation and bfloat16 save: XLA's memory analysis of the compiled train step.

    python benchmarks/memory_options.py [--batch 2] [--crop 512 1024]

The model is detectron2's semantic PointRend recipe at R-50 (`semantic_config()`: SemanticFPN
on ResNet-50 with frozen BN, 2048 training points, 3 x 256 point head). Each row compiles the
step (nothing is run) with `model.backbone.remat` and `model.dtype` set as named and prints
the bytes XLA plans for it: arguments + outputs - outputs that reuse donated arguments +
temporaries (activations kept for the backward pass live in the temporaries), with the ratio
of each total to the float32, no-remat row.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from machine_info import describe
from pointrend_jax.semantic.config import semantic_config
from pointrend_jax.tasks import validated_task
from pointrend_jax.train import memory
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train import state as state_lib
from pointrend_jax.train.step import jit_train_step, make_train_step

K = 19
ROWS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))


def step_memory(dtype: str, remat: bool, crop, batch):
    """-> (XLA's planned bytes by kind, compile seconds) for one setting."""
    c = semantic_config()
    c.augment.crop_size = crop
    c.model.dtype = dtype
    c.model.backbone.remat = remat
    task = validated_task(c)
    model = task.build_model(c, K)
    tx, schedule = optimizer_lib.make_optimizer(c.optimizer, 1000)
    mesh = state_lib.make_mesh(c.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), crop, mesh, c.mesh)
    rng = np.random.default_rng(0)
    data = state_lib.global_batch(
        {"image": rng.integers(0, 256, (batch, *crop, 3), dtype=np.uint8),
         "label": rng.integers(0, K, (batch, *crop), dtype=np.uint8)}, mesh)
    step = jit_train_step(make_train_step(task.loss_fn(model, c), tx, schedule), state, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, data, jax.random.key(1)).compile()
    return memory.step_bytes(compiled), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 1024))
    args = parser.parse_args()
    crop = tuple(args.crop)
    results = [(dtype, remat, *step_memory(dtype, remat, crop, args.batch)) for dtype, remat in ROWS]
    gib = 2.0 ** 30
    print(describe(f"SemanticFPN-R50 + PointRend train step, batch {args.batch} of "
                   f"{crop[0]}x{crop[1]}"))
    print("| model.dtype | backbone.remat | arguments GiB | temporaries GiB | total GiB "
          "| vs float32 | compile s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = results[0][2]["total"]
    for dtype, remat, need, compile_s in results:
        print(f"| {dtype} | {remat} | {need['arguments'] / gib:.2f} | "
              f"{need['temporaries'] / gib:.2f} | {need['total'] / gib:.2f} | "
              f"{need['total'] / base:.2f} | {compile_s:.0f} |")


if __name__ == "__main__":
    main()
