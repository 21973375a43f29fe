"""Compute options of both tasks: `model.dtype=bfloat16` computes every layer in bfloat16 with
float32 parameters, gradients and losses; `model.backbone.remat` gives the loss, gradients and
batch statistics of the model without it."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pointrend_jax.config import load_config
from pointrend_jax.data.synthetic import make_example
from pointrend_jax.data.synthetic_instances import make_instance_example
from pointrend_jax.models.layers import FrozenBatchNorm, init_variables
from pointrend_jax.models.mask_head import Upsample2x2
from pointrend_jax.tasks import validated_task
from pointrend_jax.train import optimizer as optimizer_lib
from pointrend_jax.train.state import TrainState
from pointrend_jax.train.step import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"semantic": ("synthetic_multiclass.py", 5), "instance": ("synthetic_instances.py", 3)}
# Every layer with weights, and the norms: what `model.dtype` must reach.
LAYERS = (nn.Conv, nn.Dense, nn.BatchNorm, nn.GroupNorm, FrozenBatchNorm, Upsample2x2)


def _random_variables(model, crop, np_rng):
    """Variables of `model` with fresh random values of the scale of a trained model's
    (kernels ~ 1/sqrt(fan-in)); initialising the instance model for real compiles its whole
    inference (NMS, subdivision) once, a minute of CPU here."""
    shapes = jax.eval_shape(lambda r: init_variables(model, r, crop), jax.random.key(0))

    def draw(path, leaf):
        name, shape = jax.tree_util.keystr(path[-1:]), leaf.shape
        if "kernel" in name:
            value = np_rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif "var" in name:
            value = np_rng.uniform(0.5, 1.5, shape)
        elif "scale" in name:
            value = 1.0 + 0.1 * np_rng.normal(size=shape)
        else:  # biases, means
            value = 0.1 * np_rng.normal(size=shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _setup(task_name, np_rng, **overrides):
    """(task, config, model, variables, batch of 2 transformed examples) of the runlocal
    config of `task_name`, with `overrides` ({"section.key": value})."""
    config_file, num_classes = CONFIGS[task_name]
    config = load_config(os.path.join(ROOT, "configs", f"{config_file}:runlocal"))
    for key, value in overrides.items():
        *path, field = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[field] = value
    task = validated_task(config)
    model = task.build_model(config, num_classes)
    variables = _random_variables(model, tuple(config.augment.crop_size), np_rng)
    seed = int(np_rng.integers(2**31))
    if task_name == "semantic":
        examples = [make_example("multiclass", "train", i, seed=seed, image_size=64)
                    for i in range(2)]
    else:
        examples = [make_instance_example("train", i, seed=seed, image_size=64) for i in range(2)]
    transform = task.train_transform(config)
    examples = [transform(e, np_rng) for e in examples]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    return task, config, model, variables, batch


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs inside it (jit, custom_vjp, remat, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    yield from _equations(sub)


def _matmul_dtypes(jaxpr):
    """{operand dtype} -> count over the convolutions and dot products of a jaxpr."""
    counts = {}
    for eqn in _equations(jaxpr):
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            for var in eqn.invars:
                dtype = str(var.aval.dtype)
                counts[dtype] = counts.get(dtype, 0) + 1
    return counts


def _train_step_jaxpr(task, config, model, variables, batch):
    """The jaxpr of the task's train step and the shapes of its outputs."""
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.train.num_steps)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))
    train_step = make_train_step(task.loss_fn(model, config), tx, schedule)
    return jax.make_jaxpr(train_step, return_shape=True)(state, batch, jax.random.key(3))


@pytest.mark.parametrize("task_name", sorted(CONFIGS))
def test_bfloat16_reaches_every_layer_and_keeps_params_grads_and_losses_float32(task_name,
                                                                                 np_rng):
    task, config, model, variables, batch = _setup(task_name, np_rng, **{"model.dtype": "bfloat16"})
    rngs = {"points": jax.random.key(1), "dropout": jax.random.key(2)}
    # The output of every conv, dense and norm layer of the training forward pass is bfloat16.
    is_layer = lambda module, method: isinstance(module, LAYERS) and method == "__call__"
    kwargs = {} if task_name == "semantic" else {"targets": {
        k: batch[k] for k in ("boxes", "classes", "mask_bits", "valid", "image_size")}}
    _, state = jax.eval_shape(lambda v, images, r: model.apply(
        v, images, train=True, rngs=r, mutable=["batch_stats", "intermediates", "choices"],
        capture_intermediates=is_layer, **kwargs), variables, batch["image"], rngs)
    outputs = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    layer_dtypes = {jax.tree_util.keystr(path): str(x.dtype) for path, x in outputs}
    assert len(layer_dtypes) > 30
    assert {k: v for k, v in layer_dtypes.items() if v != "bfloat16"} == {}
    if task_name == "semantic":
        assert any("point_head" in k for k in layer_dtypes)
    else:
        assert any("mask_head" in k and "point_head" in k for k in layer_dtypes)

    # The train step: every convolution and matmul (forward and backward) on bfloat16
    # operands; the parameters, their update and the losses float32.
    closed, (new_state, measurements) = _train_step_jaxpr(task, config, model, variables, batch)
    assert set(_matmul_dtypes(closed.jaxpr)) == {"bfloat16"}, _matmul_dtypes(closed.jaxpr)
    assert {str(x.dtype) for x in jax.tree.leaves(new_state.params)} == {"float32"}
    assert {str(x.dtype) for x in jax.tree.leaves(new_state.opt_state)} <= {"float32", "int32"}
    assert {k: str(v.dtype) for k, v in measurements.items()} == {k: "float32" for k in measurements}


def _is_remat(eqn) -> bool:
    return eqn.primitive.name in ("remat2", "checkpoint")  # jax.checkpoint's primitive


@pytest.mark.parametrize("task_name", sorted(CONFIGS))
def test_backbone_remat_gives_the_same_gradients(task_name, np_rng):
    task, config, model, variables, batch = _setup(task_name, np_rng)
    config.model.backbone.remat = True
    remat_model = task.build_model(config, CONFIGS[task_name][1])
    # The same parameter tree: checkpoints and pretrained weights load either way.
    remat_shapes = jax.eval_shape(lambda r: init_variables(remat_model, r,
                                                           tuple(config.augment.crop_size)),
                                  jax.random.key(0))
    assert (jax.tree.map(lambda x: (x.shape, x.dtype), remat_shapes)
            == jax.tree.map(lambda x: (x.shape, x.dtype), variables))
    rngs = {"points": jax.random.key(1), "dropout": jax.random.key(2)}

    def loss_objective(m):
        loss = task.loss_fn(m, config)
        return lambda params, data: loss({"params": params, "batch_stats": data["batch_stats"]},
                                         data["batch"], data["rngs"])[::2]

    data = {"batch": batch, "batch_stats": variables["batch_stats"], "rngs": rngs}
    if task_name == "instance":
        levels = jax.eval_shape(lambda v: model.net.apply(v, batch["image"]), {
            "params": variables["params"]["net"], "batch_stats": variables["batch_stats"]["net"]})
        data["cotangents"] = {k: jnp.asarray(np_rng.normal(size=x.shape), jnp.float32)
                              for k, x in levels.items()}

    def net_objective(m):
        """The instance model's backbone + FPN alone (compiling the gradient of its whole
        loss twice costs a minute here): the pyramid against fresh random cotangents."""

        def objective(params, data):
            pyramid, updated = m.net.apply(
                {"params": params["net"], "batch_stats": data["batch_stats"]["net"]},
                data["batch"]["image"], train=True, mutable=["batch_stats"])
            return sum(jnp.sum(pyramid[k] * data["cotangents"][k]) for k in pyramid), updated
        return objective

    def loss_and_grads(m):
        """(objective, batch stats, gradients) of model `m`, and the jaxpr of its whole loss's
        gradient."""
        jaxpr = jax.make_jaxpr(jax.grad(loss_objective(m), has_aux=True))(variables["params"],
                                                                          data)
        objective = loss_objective(m) if task_name == "semantic" else net_objective(m)
        # The data as arguments, not constants: the compilation cache then serves reruns.
        (total, batch_stats), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(
            variables["params"], data)
        return total, batch_stats, grads, jaxpr.jaxpr

    loss_off, stats_off, grads_off, jaxpr_off = loss_and_grads(model)
    loss_on, stats_on, grads_on, jaxpr_on = loss_and_grads(remat_model)
    # float32 by default: the inspection the bfloat16 test relies on finds float32 operands.
    assert set(_matmul_dtypes(jaxpr_off)) == {"float32"}
    blocks = 2 * 4  # ResNet-18: 2 blocks in each of 4 stages, each recomputed once
    assert sum(map(_is_remat, _equations(jaxpr_off))) == 0
    assert sum(map(_is_remat, _equations(jaxpr_on))) == blocks
    # The same function: equal up to float32 rounding (XLA fuses the recomputed forward pass
    # with the backward pass, so sums may round in another order); a block recomputed in the
    # wrong mode (BN statistics) or from the wrong input would be off by far more.
    np.testing.assert_allclose(float(loss_on), float(loss_off), rtol=1e-6)
    for name, on_tree, off_tree in (("grads", grads_on, grads_off),
                                    ("batch_stats", stats_on, stats_off)):
        flat_off = jax.tree_util.tree_flatten_with_path(off_tree)[0]
        flat_on = jax.tree.leaves(on_tree)
        assert len(flat_off) == len(flat_on) > 0
        for (path, off), on in zip(flat_off, flat_on):
            off, on = np.asarray(off), np.asarray(on)
            np.testing.assert_allclose(on, off, rtol=1e-5, atol=1e-5 * np.abs(off).max(),
                                       err_msg=f"{name}{jax.tree_util.keystr(path)}")
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads_off))
