"""The optimizer a config describes and its learning-rate schedule (detectron2's warm-up
times poly, steps, cosine or constant), with weight decay on kernels and (with
`weight_decay_bias`) on conv/dense biases, never on norm parameters, as detectron2's
`get_default_optimizer_params`; and detectron2's frozen backbone stages.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(opt_cfg, num_steps: int) -> optax.Schedule:
    """detectron2-style: a linear warm-up factor (from `warmup_factor` to 1 over
    `warmup_steps`) multiplying the main schedule (poly, steps, cosine or constant)."""
    base = float(opt_cfg.learning_rate)
    name = opt_cfg.schedule
    boundaries = jnp.asarray(sorted(opt_cfg.decay_steps) or [num_steps + 1], jnp.int32)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        progress = jnp.clip(step / num_steps, 0.0, 1.0)
        if name == "poly":
            main = (1.0 - progress) ** opt_cfg.poly_power
        elif name == "steps":
            main = opt_cfg.decay_factor ** jnp.sum(step >= boundaries)
        elif name == "cosine":
            main = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        elif name == "constant":
            main = jnp.ones_like(step)
        else:
            raise ValueError(f"--config.optimizer.schedule={name!r} is not one of "
                             "['poly', 'steps', 'cosine', 'constant']")
        if opt_cfg.warmup_steps > 0:
            alpha = jnp.clip(step / opt_cfg.warmup_steps, 0.0, 1.0)
            main = main * (opt_cfg.warmup_factor * (1.0 - alpha) + alpha)
        return base * main

    return schedule


def _decay_mask(params):
    """Weight decay on kernels only, not on biases and norm scales (rank <= 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _names(path) -> Tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def _bias_mask(params):
    """The biases of convolutions and dense layers: a "bias" next to a "kernel" (a norm's bias
    sits next to its "scale")."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    with_kernel = {_names(path)[:-1] for path, _ in leaves if _names(path)[-1] == "kernel"}
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _names(path)[-1] == "bias" and _names(path)[:-1] in with_kernel, params)


# backbone.freeze_at -> the backbone submodules that stay fixed (detectron2's FREEZE_AT).
_FROZEN = {0: (), 1: ("conv1", "bn1"), 2: ("conv1", "bn1", "layer1_")}


def _frozen_labels(params, freeze_at: int):
    """"frozen" for the stem (and res2 with freeze_at=2) of `params["net"]["backbone"]`."""
    prefixes = _FROZEN[freeze_at]

    def label(path, _):
        names = [str(getattr(k, "key", k)) for k in path]
        frozen = (len(names) > 2 and names[:2] == ["net", "backbone"]
                  and any(names[2] == p or (p.endswith("_") and names[2].startswith(p))
                          for p in prefixes))
        return "frozen" if frozen else "trained"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(opt_cfg, num_steps: int, freeze_at: int = 0
                   ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer a config describes, and its learning-rate schedule. `freeze_at` 1 keeps
    the backbone's stem fixed, 2 the stem and res2 (detectron2's default for its recipes)."""
    if freeze_at not in _FROZEN:
        raise ValueError(f"--config.model.backbone.freeze_at={freeze_at} is not one of "
                         f"{sorted(_FROZEN)}")
    schedule = learning_rate_schedule(opt_cfg, num_steps)
    parts = []
    if opt_cfg.clip_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(opt_cfg.clip_grad_norm))
    # detectron2's WEIGHT_DECAY_BIAS; added only when set, so other runs keep their state
    bias_decay = ([optax.add_decayed_weights(opt_cfg.weight_decay_bias, mask=_bias_mask)]
                  if opt_cfg.weight_decay_bias else [])
    if opt_cfg.name == "sgd":
        # L2 on the gradient before momentum, as torch.optim.SGD(weight_decay=...).
        parts.append(optax.add_decayed_weights(opt_cfg.weight_decay, mask=_decay_mask))
        parts.extend(bias_decay)
        parts.append(optax.sgd(schedule, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov))
    elif opt_cfg.name == "adamw" and bias_decay:  # optax.adamw's chain, plus the biases
        parts.extend([optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2),
                      optax.add_decayed_weights(opt_cfg.weight_decay, mask=_decay_mask),
                      *bias_decay, optax.scale_by_learning_rate(schedule)])
    elif opt_cfg.name == "adamw":
        parts.append(optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2,
                                 weight_decay=opt_cfg.weight_decay, mask=_decay_mask))
    else:
        raise ValueError(f"--config.optimizer.name={opt_cfg.name!r} is not one of ['sgd', 'adamw']")
    tx = optax.chain(*parts)
    if freeze_at:
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                                   lambda params: _frozen_labels(params, freeze_at))
    return tx, schedule


def applied_step(opt_state) -> jax.Array:
    """The step count the optimizer's schedule is at: it advances only on applied updates
    (a skipped non-finite step keeps the old optimizer state), so the learning rate applied
    by the next update is `schedule(applied_step(opt_state))`."""
    counts = [s.count for s in jax.tree.leaves(
        opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
        if isinstance(s, optax.ScaleByScheduleState)]
    if not counts:
        raise ValueError("the optimizer state has no learning-rate schedule")
    return counts[0]
