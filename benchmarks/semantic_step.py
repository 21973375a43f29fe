"""The compiled train step of a semantic config on a random batch, for the benchmarks that
time it (`versus_torch.py`) or read XLA's memory analysis of it (`memory_options.py`)."""
from __future__ import annotations

import time

import jax
import numpy as np

from pointrend_jax.tasks import validated_task
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train import state as state_lib
from pointrend_jax.train.step import jit_train_step, make_train_step


def compiled_train_step(c, num_classes: int, batch: int):
    """-> (model, state, data, compiled step, compile seconds) for config `c` at its
    `augment.crop_size`: a fresh state (seed 0), a random batch of `batch` uint8 images
    (N, H, W, 3) with labels (N, H, W) below `num_classes`, the step compiled for them."""
    crop = tuple(c.augment.crop_size)
    task = validated_task(c)
    model = task.build_model(c, num_classes)
    tx, schedule = optimizer_lib.make_optimizer(c.optimizer, 1000)
    mesh = state_lib.make_mesh(c.mesh)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), crop, mesh, c.mesh)
    rng = np.random.default_rng(0)
    data = state_lib.global_batch(
        {"image": rng.integers(0, 256, (batch, *crop, 3), dtype=np.uint8),
         "label": rng.integers(0, num_classes, (batch, *crop), dtype=np.uint8)}, mesh)
    step = jit_train_step(make_train_step(task.loss_fn(model, c), tx, schedule), state, mesh)
    start = time.perf_counter()
    compiled = step.lower(state, data, jax.random.key(1)).compile()
    return model, state, data, compiled, time.perf_counter() - start
