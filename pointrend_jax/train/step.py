"""The jitted training step: the task's loss, its gradient, the optimizer update, and the
skipping of non-finite steps. The step donates its state and returns a dict of scalar
measurements.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from pointrend_jax.task import LossFn
from pointrend_jax.train.optimizer import applied_step
from pointrend_jax.train.state import TrainState, batch_sharding, replicated, shardings_of


def make_train_step(loss_fn: LossFn, tx, schedule: optax.Schedule) -> Callable:
    """`train_step(state, batch, rng) -> (state, measurements)`, not yet jitted.

    `loss_fn(variables, batch, rngs) -> (total, parts, batch_stats)` is the task's loss
    (`Task.loss_fn`); the measurements are the total ("loss"), its parts, the learning rate
    this step applied, the gradient norm and "nonfinite". The step's randomness is `rng`
    folded with the step number, so a resumed run draws the same points. A step whose loss
    or gradient is not finite changes nothing but the step counter; its
    `measurements["nonfinite"]` is 1.
    """

    def train_step(state: TrainState, batch, rng):
        step_rng = jax.random.fold_in(rng, state.step)
        points_rng, dropout_rng = jax.random.split(step_rng)

        def objective(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            total, parts, batch_stats = loss_fn(variables, batch,
                                                {"points": points_rng, "dropout": dropout_rng})
            return total, (parts, batch_stats)

        (loss, (parts, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        keep_if_finite = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = TrainState(
            step=state.step + 1,
            params=keep_if_finite(optax.apply_updates(state.params, updates), state.params),
            batch_stats=keep_if_finite(batch_stats, state.batch_stats),
            opt_state=keep_if_finite(opt_state, state.opt_state))
        measurements = {"loss": loss, **parts, "learning_rate": schedule(applied_step(state.opt_state)),
                        "grad_norm": grad_norm, "nonfinite": 1.0 - finite.astype(jnp.float32)}
        return new_state, measurements

    return train_step


def jit_train_step(train_step: Callable, state: TrainState, mesh: Mesh) -> Callable:
    """Compiles the step for this mesh: the state keeps its shardings and is donated, the
    batch is split over all devices."""
    state_sharding = shardings_of(state)
    return jax.jit(train_step,
                   in_shardings=(state_sharding, batch_sharding(mesh), replicated(mesh)),
                   out_shardings=(state_sharding, replicated(mesh)),
                   donate_argnums=(0,))


class NonFiniteGuard:
    """Counts skipped (non-finite) steps on the host; raises once `limit` come in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.streak = 0
        self.total = 0

    def update(self, step: int, nonfinite: bool) -> None:
        if not nonfinite:
            self.streak = 0
            return
        self.streak += 1
        self.total += 1
        if self.streak >= self.limit:
            raise FloatingPointError(
                f"step {step}: the loss or gradient was not finite for {self.streak} steps in a "
                f"row (steps {step - self.streak + 1}..{step}, --config.train.max_nonfinite_steps="
                f"{self.limit}); those steps were skipped and the last good checkpoint is kept")
