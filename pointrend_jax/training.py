"""The training loop: mesh, data, model and state, the jitted step, logging, checkpoints.

`train.py` is the command line around `train(config, workdir)`.
"""
from __future__ import annotations

import signal
import time

import jax
import numpy as np
from tqdm import tqdm

from pointrend_jax import config as config_lib
from pointrend_jax import train_lib
from pointrend_jax.checkpointing import Checkpointer
from pointrend_jax.data import build_datasets
from pointrend_jax.data.pipeline import train_iterator
from pointrend_jax.logging_utils import MetricWriter
from pointrend_jax.models.build import build_task_model, task_of


def _train_transform(config):
    """The instance transform (boxes and masks follow the image), or None: the semantic one."""
    if task_of(config) != "instance":
        return None
    from pointrend_jax.data.instance_augment import InstanceAugment

    return InstanceAugment(config.augment)


class _Sigterm:
    """Remembers a SIGTERM so the loop can checkpoint and stop at a step boundary. (On a
    multi-process run JAX's preemption service watches the signal instead, and every
    process stops at the same step through `Checkpointer.reached_preemption`.)"""

    def __init__(self):
        self.received = False
        if jax.process_count() == 1:
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.received = True


def train(config, workdir: str) -> dict:
    """Runs (or resumes) training; returns the last logged measurements."""
    config_lib.validate(config)
    mesh = train_lib.make_mesh(config.mesh)
    if config.train.batch_size % jax.device_count():
        raise ValueError(f"--config.train.batch_size={config.train.batch_size} must be divisible "
                         f"by the {jax.device_count()} devices")
    data = build_datasets(config.data)
    model = build_task_model(config, data.num_classes)
    tx, schedule = train_lib.make_optimizer(config.optimizer, config.train.num_steps,
                                           config.model.backbone.freeze_at)

    init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
    state = train_lib.create_train_state(model, tx, init_rng, tuple(config.augment.crop_size),
                                         mesh, config.mesh)
    checkpointer = Checkpointer(workdir, max_to_keep=config.train.max_to_keep)
    restored = checkpointer.restore_latest_good(state)
    if restored is not None:
        state, _, _ = restored
    elif config.model.backbone.pretrained:
        state = train_lib.with_pretrained_backbone(state, config.model)
    first_step = int(state.step)
    # The input position is the number of global batches consumed, which is the step.
    batches = train_iterator(data.train, global_batch_size=config.train.batch_size,
                             seed=config.seed, process_index=jax.process_index(),
                             process_count=jax.process_count(), augment_cfg=config.augment,
                             start_batch=first_step, transform=_train_transform(config))

    def data_position(step):
        return {"batches_consumed": step, "global_batch_size": config.train.batch_size,
                "seed": config.seed}

    writer = MetricWriter(workdir, config, class_names=data.class_names)
    train_step = train_lib.jit_train_step(
        train_lib.make_train_step(model, tx, schedule, config.loss), state, mesh)
    guard = train_lib.NonFiniteGuard(config.train.max_nonfinite_steps)
    sigterm = _Sigterm()

    pending, last, previous = [], {}, None
    progress = tqdm(total=config.train.num_steps, initial=first_step, unit="step",
                    disable=jax.process_index() != 0, dynamic_ncols=True)
    tick, images_since = time.perf_counter(), 0
    for step in range(first_step + 1, config.train.num_steps + 1):
        state, measurements = train_step(state, train_lib.global_batch(next(batches), mesh), step_rng)
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
                checkpointer.save(step, state, data_position(step), force=final or preempted)
        if preempted:
            print(f"Preempted: saved a checkpoint at step {step}; rerun the same command to "
                  "continue.", flush=True)
            break
    progress.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    return last
