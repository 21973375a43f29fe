"""Training machinery: the device mesh, the train state, the optimizer and the train step.

One program for 1 CPU, 8 GPUs or a pod: `jax.jit` with shardings over a 2-D `Mesh` of axes
`("data", "fsdp")`. The batch is split over both axes. With `mesh.fsdp = 1` (the default)
this is plain data parallelism: parameters and optimizer state are replicated. With
`mesh.fsdp = F > 1` (or -1: all devices) every parameter and optimizer-state array of at
least `mesh.fsdp_min_size` elements is split over the `"fsdp"` axis along its largest
dimension divisible by F (big_vision's rule); XLA gathers them where needed. The step
donates its state and returns a dict of scalar measurements.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pointrend_jax.backbones import load_backbone, merge_pretrained
from pointrend_jax.losses import segmentation_loss
from pointrend_jax.models.mask_rcnn import MaskRCNN
from pointrend_jax.models.pointrend import init_variables

INSTANCE_TARGETS = ("boxes", "classes", "mask_bits", "valid", "image_size")
DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes; checkpointed as one pytree."""

    step: jax.Array  # int32 scalar: steps taken so far
    params: Any
    batch_stats: Any  # BatchNorm running statistics and FrozenBN constants
    opt_state: Any


def make_mesh(mesh_cfg) -> Mesh:
    """A `("data", "fsdp")` mesh over every device of every process."""
    count = jax.device_count()
    fsdp = count if mesh_cfg.fsdp == -1 else mesh_cfg.fsdp
    if fsdp < 1 or count % fsdp:
        raise ValueError(f"--config.mesh.fsdp={mesh_cfg.fsdp} must divide the {count} devices "
                         "(or be -1 for all of them)")
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh((count // fsdp, fsdp), BATCH_AXES, axis_types=(auto, auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over all devices."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_sharding(shape, mesh: Mesh, min_size: int) -> NamedSharding:
    """Where an array of `shape` lives: split over "fsdp" along its largest dimension that
    the axis divides, or replicated when it is small or nothing divides."""
    size = mesh.shape[FSDP_AXIS]
    if size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return replicated(mesh)
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % size == 0:
            spec = [None] * len(shape)
            spec[axis] = FSDP_AXIS
            return NamedSharding(mesh, P(*spec))
    return replicated(mesh)


def state_shardings(state, mesh: Mesh, mesh_cfg):
    """Shardings of a TrainState (or its abstract shape): params and optimizer state by the
    fsdp rule, the step and batch statistics replicated."""
    rule = lambda x: fsdp_sharding(x.shape, mesh, mesh_cfg.fsdp_min_size)
    return TrainState(step=replicated(mesh), params=jax.tree.map(rule, state.params),
                      batch_stats=jax.tree.map(lambda _: replicated(mesh), state.batch_stats),
                      opt_state=jax.tree.map(rule, state.opt_state))


def global_batch(local_batch: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, jax.Array]:
    """This process's slice of the batch -> global arrays sharded over the data axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


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
    if opt_cfg.name == "sgd":
        # L2 on the gradient before momentum, as torch.optim.SGD(weight_decay=...).
        parts.append(optax.add_decayed_weights(opt_cfg.weight_decay, mask=_decay_mask))
        parts.append(optax.sgd(schedule, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov))
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


def create_train_state(model, tx, rng: jax.Array, image_shape, mesh: Mesh, mesh_cfg) -> TrainState:
    """A fresh train state, created directly with its sharding (`state_shardings`)."""

    def init(rng):
        variables = init_variables(model, rng, image_shape)
        return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                          batch_stats=variables["batch_stats"],
                          opt_state=tx.init(variables["params"]))

    shardings = state_shardings(jax.eval_shape(init, rng), mesh, mesh_cfg)
    return jax.jit(init, out_shardings=shardings)(rng)


def shardings_of(tree):
    """The sharding of every array in `tree`."""
    return jax.tree.map(lambda x: x.sharding, tree)


def with_pretrained_backbone(state: TrainState, model_cfg) -> TrainState:
    """`state` with its backbone replaced by the converted weights at
    `model_cfg.backbone.pretrained`, after checking that the config matches them."""
    path = model_cfg.backbone.pretrained
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config.model.backbone.pretrained={path}: no such file "
                                "(write one with python -m pointrend_jax.convert SRC DST)")
    variables, meta = load_backbone(path)
    expected = {"depth": model_cfg.backbone.depth, "width": model_cfg.backbone.width,
                "stride_in_1x1": model_cfg.backbone.stride_in_1x1}
    for key, value in expected.items():
        if meta[key] != value:
            raise ValueError(f"--config.model.backbone.pretrained={path} holds a backbone with "
                             f"{key}={meta[key]!r}; set --config.model.backbone.{key}={meta[key]!r}")
    for key in ("pixel_mean", "pixel_std"):
        if not np.allclose(meta[key], model_cfg[key]):
            raise ValueError(f"--config.model.backbone.pretrained={path} expects "
                             f"{key}={tuple(meta[key])}; --config.model.{key} is "
                             f"{tuple(model_cfg[key])}")
    params, batch_stats = merge_pretrained(state.params, state.batch_stats, variables, source=path)
    return state.replace(params=jax.device_put(params, shardings_of(state.params)),
                         batch_stats=jax.device_put(batch_stats, shardings_of(state.batch_stats)))


def make_train_step(model, tx, schedule: optax.Schedule, loss_cfg) -> Callable:
    """`train_step(state, batch, rng) -> (state, measurements)`, not yet jitted.

    `batch` holds `image` uint8 (B, h, w, 3) and `label` uint8 (B, h, w) (semantic), or
    `image` and the instance targets of `MaskRCNN` (`boxes`, `classes`, `mask_bits`, `valid`,
    `image_size`): the total is then the sum of its losses, `loss_mask` weighted by
    `loss_cfg.pixel_weight` and `loss_mask_point` by `loss_cfg.point_weight`. The step's
    randomness is `rng` folded with the step number, so a resumed run draws the same points.
    A step whose loss or gradient is not finite changes nothing but the step counter; its
    `measurements["nonfinite"]` is 1.
    """

    def train_step(state: TrainState, batch, rng):
        step_rng = jax.random.fold_in(rng, state.step)
        points_rng, dropout_rng = jax.random.split(step_rng)

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            rngs = {"points": points_rng, "dropout": dropout_rng}
            if isinstance(model, MaskRCNN):
                targets = {k: batch[k] for k in INSTANCE_TARGETS}
                parts, updated = model.apply(variables, batch["image"], targets, train=True,
                                             rngs=rngs, mutable=["batch_stats"])
                weights = {"loss_mask": loss_cfg.pixel_weight,
                           "loss_mask_point": loss_cfg.point_weight}
                total = sum(weights.get(k, 1.0) * v for k, v in parts.items())
            else:
                outputs, updated = model.apply(variables, batch["image"], train=True, rngs=rngs,
                                               mutable=["batch_stats"])
                total, parts = segmentation_loss(outputs, batch["label"],
                                                 pixel_weight=loss_cfg.pixel_weight,
                                                 point_weight=loss_cfg.point_weight)
            return total, (parts, updated.get("batch_stats", state.batch_stats))

        (loss, (parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        keep_if_finite = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = TrainState(
            step=state.step + 1,
            params=keep_if_finite(optax.apply_updates(state.params, updates), state.params),
            batch_stats=keep_if_finite(batch_stats, state.batch_stats),
            opt_state=keep_if_finite(opt_state, state.opt_state))
        measurements = {"loss": loss, **parts, "learning_rate": schedule(state.step),
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
