"""The training loop: config -> task, mesh, data, model and state; the jitted step; logging
and checkpoints. Nothing here depends on the task: the task answers (see
`pointrend_jax.task`).

`train.py` is the command line around `train(config, workdir)`.
"""
from __future__ import annotations

import itertools
import signal
import time

import jax
import numpy as np
from etils import epath
from tqdm import tqdm

from pointrend_jax.checkpointing import Checkpointer
from pointrend_jax.data.pipeline import train_iterator
from pointrend_jax.tasks import validated_task
from pointrend_jax.train import memory
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train import state as state_lib
from pointrend_jax.train.step import NonFiniteGuard, jit_train_step, make_train_step
from pointrend_jax.train.writer import MetricWriter


class _Sigterm:
    """Remembers a SIGTERM so the loop can checkpoint and stop at a step boundary. (On a
    multi-process run JAX's preemption service watches the signal instead, and every
    process stops at the same step through `Checkpointer.reached_preemption`.)"""

    def __init__(self):
        self.received = False
        if jax.process_count() == 1:
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_):
        self.received = True


def data_position(step: int, config) -> dict:
    """The input position saved with checkpoint `step`: the global batches consumed, and
    what the stream depends on."""
    return {"batches_consumed": int(step), "global_batch_size": int(config.train.batch_size),
            "seed": int(config.seed)}


def check_data_position(saved, step: int, config, directory) -> None:
    """Raises ValueError unless this run continues the data stream of checkpoint `step`
    exactly (same position, global batch size and seed)."""
    if saved is None:
        return
    mine = data_position(step, config)
    keys = {"global_batch_size": "train.batch_size", "seed": "seed"}
    for key, flag in keys.items():
        if saved.get(key) != mine[key]:
            raise ValueError(
                f"checkpoint {directory}/{step} was trained with --config.{flag}="
                f"{saved.get(key)}, this run has --config.{flag}={mine[key]}: its data stream "
                "would not continue where the checkpoint left it. Rerun with "
                f"--config.{flag}={saved.get(key)}, or start a new --workdir.")
    if saved.get("batches_consumed") != step:
        raise ValueError(f"checkpoint {directory}/{step} records {saved.get('batches_consumed')} "
                         f"batches consumed at step {step}; it is not a checkpoint of this loop")


def train(config, workdir) -> dict:
    """Runs (or resumes) training; returns the last logged measurements. `workdir` is a local
    folder or a bucket path (`gs://bucket/run`)."""
    task = validated_task(config)
    workdir = epath.Path(workdir)
    mesh = state_lib.make_mesh(config.mesh)
    if config.train.batch_size % jax.device_count():
        raise ValueError(f"--config.train.batch_size={config.train.batch_size} must be divisible "
                         f"by the {jax.device_count()} devices")
    data = task.build_datasets(config.data)
    model = task.build_model(config, data.num_classes)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.train.num_steps,
                                                config.model.backbone.freeze_at)

    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    state = state_lib.create_train_state(model, tx, init_rng, tuple(config.augment.crop_size),
                                         mesh, config.mesh)
    checkpointer = Checkpointer(workdir, max_to_keep=config.train.max_to_keep)
    restored = checkpointer.restore_latest_good(state)
    if restored is not None:
        state, saved_position, restored_step = restored
        check_data_position(saved_position, restored_step, config, checkpointer.directory)
    elif config.model.backbone.pretrained:
        state = state_lib.with_pretrained_backbone(state, config.model)
    first_step = int(state.step)
    # The input position is the number of global batches consumed, which is the step.
    batches = (state_lib.global_batch(batch, mesh) for batch in train_iterator(
        data.train, global_batch_size=config.train.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        transform=task.train_transform(config), start_batch=first_step))

    writer = MetricWriter(workdir, config, data.class_names, task)
    train_step = jit_train_step(make_train_step(task.loss_fn(model, config), tx, schedule),
                                state, mesh)
    if first_step < config.train.num_steps:
        # Compiled once, for the first batch, and refused before any step if it cannot fit.
        first = next(batches)
        train_step = memory.compile_checked(train_step, (state, first, step_rng), config)
        batches = itertools.chain([first], batches)
    guard = NonFiniteGuard(config.train.max_nonfinite_steps)
    sigterm = _Sigterm()

    pending, last, previous = [], {}, None
    progress = tqdm(total=config.train.num_steps, initial=first_step, unit="step",
                    disable=jax.process_index() != 0, dynamic_ncols=True)
    tick, images_since = time.perf_counter(), 0
    for step in range(first_step + 1, config.train.num_steps + 1):
        state, measurements = train_step(state, next(batches), step_rng)
        if previous is not None:  # the previous step is done by now: reading it does not stall
            guard.update(step - 1, bool(previous["nonfinite"]))
        previous = measurements
        pending.append(measurements)
        images_since += config.train.batch_size
        progress.update(1)
        if step % config.train.log_every == 0 or step == config.train.num_steps:
            # Device -> host only here: average the measurements since the last log.
            host = jax.device_get(pending)
            last = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
            now = time.perf_counter()
            last["images_per_sec"] = images_since / (now - tick)
            tick, images_since, pending = now, 0, []
            writer.write_scalars(step, last)
            progress.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{last['images_per_sec']:.1f}")
        if config.train.image_summary_every and step % config.train.image_summary_every == 0:
            writer.write_examples(step, model, state, data.val)
        preempted = sigterm.received or checkpointer.reached_preemption(step)
        final = step == config.train.num_steps
        if step % config.train.checkpoint_every == 0 or final or preempted:
            guard.update(step, bool(measurements["nonfinite"]))
            previous = None
            if guard.streak == 0:  # never replace good checkpoints by skipped steps
                checkpointer.save(step, state, data_position(step, config),
                                  force=final or preempted)
        if preempted:
            print(f"Preempted: saved a checkpoint at step {step}; rerun the same command to "
                  "continue.", flush=True)
            break
    progress.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    return last
