"""Train-step throughput and compile time of SemanticFPN-R50 + PointRend at a 512x1024 crop.

    python benchmarks/train_speed.py [--batch 2] [--steps 5] [--dtype float32|bfloat16]

Times the jitted, sharded train step of `pointrend_jax.train` (all local devices, data parallel) on
random uint8 images, after compiling it; prints images/s and the compile time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from pointrend_jax.semantic.config import semantic_config
from pointrend_jax.tasks import validated_task
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train import state as state_lib
from pointrend_jax.train.step import jit_train_step, make_train_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    c = semantic_config()  # SemanticFPN, ResNet-50 (frozen BN), 2048 points, 3x256 point head
    c.model.dtype = args.dtype
    crop = (512, 1024)
    c.augment.crop_size = crop
    task = validated_task(c)
    model = task.build_model(c, 19)
    tx, schedule = optimizer_lib.make_optimizer(c.optimizer, 1000)
    mesh = state_lib.make_mesh(c.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), crop, mesh, c.mesh)
    rng = np.random.default_rng(0)
    batch = state_lib.global_batch(
        {"image": rng.integers(0, 256, (args.batch, *crop, 3), dtype=np.uint8),
         "label": rng.integers(0, 19, (args.batch, *crop), dtype=np.uint8)}, mesh)
    step = jit_train_step(make_train_step(task.loss_fn(model, c), tx, schedule), state, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(1)).compile()
    compile_s = time.perf_counter() - start
    state, m = compiled(state, batch, jax.random.key(1))  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, m = compiled(state, batch, jax.random.key(1))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - start)
    dev = jax.devices()[0]
    print(f"Machine: {dev.platform.upper()} x{jax.device_count()} ({dev.device_kind}); "
          f"jax {jax.__version__}; dtype {args.dtype}")
    print("| model | crop | batch | step s (median) | images/s | compile s |")
    print("|---|---|---:|---:|---:|---:|")
    med = statistics.median(times)
    print(f"| SemanticFPN-R50 + PointRend | 512x1024 | {args.batch} | {med:.2f} | "
          f"{args.batch / med:.2f} | {compile_s:.1f} |")


if __name__ == "__main__":
    main()
