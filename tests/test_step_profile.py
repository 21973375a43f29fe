"""benchmarks/step_profile.py: HLO instructions are put in the right categories, and a traced
profile of a small train step accounts for its time in them."""
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import step_profile  # noqa: E402

from pointrend_jax.point_ops import point_sample, sample_training_points  # noqa: E402


class Tiny(nn.Module):
    """conv -> GroupNorm -> point sampling at points chosen by uncertainty -> point_head."""

    @nn.compact
    def __call__(self, x, rng):
        y = nn.Conv(8, (3, 3), name="conv")(x)
        y = nn.GroupNorm(num_groups=2, name="conv_norm")(y)
        coords = sample_training_points(rng, y, 16)
        return nn.Dense(3, name="point_head")(point_sample(y, coords)), coords


def _compiled_step(np_rng):
    model = Tiny()
    x = jnp.asarray(np_rng.normal(size=(2, 16, 16, 3)), jnp.float32)
    params = model.init(jax.random.key(0), x, jax.random.key(1))
    tx = optax.sgd(0.1, momentum=0.9)

    def step(params, opt_state, x, rng):
        loss_fn = lambda p: jnp.mean(model.apply(p, x, rng)[0] ** 2)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    args = (params, tx.init(params), x, jax.random.key(2))
    return jax.jit(step).lower(*args).compile(), args


def test_instructions_of_a_train_step_fall_in_their_categories(np_rng):
    compiled, _ = _compiled_step(np_rng)
    instructions = step_profile.hlo_instructions(compiled.as_text())
    assert len(instructions) > 20
    found = {step_profile.category(*v) for v in instructions.values()}
    for expected in ("convolutions forward", "convolutions backward", "norms", "point sampling",
                     "point selection", "point head", "optimizer and bookkeeping"):
        assert expected in found, (expected, sorted(found))
    assert found <= set(step_profile.CATEGORIES)


def test_category_rules():
    fwd = "jit(step)/jvp(Tiny)/conv/conv_general_dilated"
    assert step_profile.category("convolution", fwd) == "convolutions forward"
    assert step_profile.category("convolution", "jit(step)/transpose(jvp(Tiny))/conv/x") == \
        "convolutions backward"
    assert step_profile.category("convolution", "") == "convolutions backward"
    assert step_profile.category("copy", "") == "layout copies"
    assert step_profile.category("dot", "jit(s)/transpose(jvp(M))/conv/cond/conv_kernel_grad/dot") \
        == "convolutions backward"
    assert step_profile.category("multiply", "jit(step)/mul") == "optimizer and bookkeeping"
    assert step_profile.category("add", "jit(s)/jvp(M)/net/backbone/layer1_0/bn2/add") == "norms"
    assert step_profile.category("add", "jit(s)/jvp(M)/net/head/p2_0_norm/add") == "norms"
    assert step_profile.category("add", "jit(s)/jvp(M)/net/head/p2_0/add") == "other forward"
    assert step_profile.category("gather", "jit(s)/jvp(M)/point_selection/point_sample/gather") \
        == "point selection"


def test_profile_accounts_for_the_step(np_rng):
    compiled, args = _compiled_step(np_rng)
    state = {"args": args}

    def call():
        params, opt_state, x, rng = state["args"]
        params, opt_state, loss = compiled(params, opt_state, x, rng)
        jax.block_until_ready(loss)
        state["args"] = (params, opt_state, x, rng)

    call()
    rows, total_ms = step_profile.profile_by_category(compiled, call, calls=2)
    assert total_ms > 0
    np.testing.assert_allclose(sum(ms for _, ms, _ in rows), total_ms, rtol=1e-9)
    np.testing.assert_allclose(sum(share for _, _, share in rows), 1.0, rtol=1e-9)
    names = [name for name, _, _ in rows]
    assert "convolutions forward" in names and "convolutions backward" in names
    table = step_profile.markdown(rows, total_ms)
    assert table.count("\n") == len(rows) + 2
    ops = step_profile.op_rows(compiled, call, calls=2)
    times = [ms for ms, *_ in ops]
    assert times == sorted(times, reverse=True) and times[0] > 0
    shapes = step_profile.output_shapes(compiled.as_text())
    named = [name for _, name, cat, _, _ in ops if cat != "not in this program"]
    assert named and all(name in shapes for name in named)


def test_loops_are_counted_once(np_rng):
    """A `while` thunk's event spans its body's ops, which are traced too: only the body's
    ops are rows, so a loop's time is not counted twice."""
    a = jnp.asarray(np_rng.normal(size=(256, 256)), jnp.float32)

    def f(a):
        return jax.lax.fori_loop(0, 4, lambda i, x: jnp.tanh(x @ a), a)

    compiled = jax.jit(f).lower(a).compile()
    ops = step_profile.op_rows(compiled, lambda: jax.block_until_ready(compiled(a)), calls=2)
    opcodes = {opcode for _, _, _, opcode, _ in ops}
    assert "while" not in opcodes
    assert opcodes & {"dot", "fusion"}  # the body's matmul (XLA may fuse it with the tanh)
