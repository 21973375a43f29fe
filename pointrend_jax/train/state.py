"""The device mesh and the train state: shardings, creation, pretrained backbones.

One program for 1 CPU, 8 GPUs or a pod: `jax.jit` with shardings over a 2-D `Mesh` of axes
`("data", "fsdp")`. The batch is split over both axes. With `mesh.fsdp = 1` (the default)
this is plain data parallelism: parameters and optimizer state are replicated. With
`mesh.fsdp = F > 1` (or -1: all devices) every parameter and optimizer-state array of at
least `mesh.fsdp_min_size` elements is split over the `"fsdp"` axis along its largest
dimension divisible by F (big_vision's rule); XLA gathers them where needed.
"""
from __future__ import annotations

from typing import Any, Dict

import flax
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from pointrend_jax.backbones import load_backbone, merge_pretrained
from pointrend_jax.models.layers import init_variables

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


@flax.struct.dataclass
class TrainState:
    """Everything a training step reads and writes; checkpointed as one pytree."""

    step: jax.Array  # int32 scalar: steps taken so far
    params: Any
    batch_stats: Any  # BatchNorm running statistics, FrozenBN and other fixed constants
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
    if not epath.Path(path).is_file():
        raise FileNotFoundError(f"--config.model.backbone.pretrained={path}: no such file "
                                "(write one with python -m pointrend_jax.convert SRC DST)")
    variables, meta = load_backbone(path)
    expected = {key: model_cfg.backbone[key] for key in
                ("depth", "width", "stride_in_1x1", "num_groups", "width_per_group")}
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
