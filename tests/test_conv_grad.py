"""models/conv_grad.py: the matmul kernel gradient equals torch's conv2d weight gradient (the
oracle) and XLA's, for strides, dilations, paddings and kernel sizes the networks use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax import lax

from pointrend_jax.models import conv_grad
from pointrend_jax.models.layers import conv

NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("k,stride,dilation,size", [
    (3, 1, 1, (9, 12)), (3, 2, 1, (9, 12)), (1, 1, 1, (7, 5)), (1, 2, 1, (8, 8)),
    (3, 1, 2, (10, 11)), (7, 2, 1, (15, 16)), (2, 2, 1, (8, 10))])
# narrowing and widening: the two operand orders of the kernel-gradient matmuls
@pytest.mark.parametrize("cin,cout", [(5, 4), (3, 6)])
def test_kernel_and_input_gradients_equal_torch(np_rng, k, stride, dilation, size, cin, cout):
    n = 2
    x = np_rng.normal(size=(n, *size, cin))
    w = np_rng.normal(size=(k, k, cin, cout))
    g_seed = np_rng.normal(size=(1,)).item()
    pad = dilation * (k - 1) // 2

    def loss(x, w):
        y = conv_grad.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                           rhs_dilation=(dilation, dilation),
                                           dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y + g_seed)), y

    (_, y), (dx, dw) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))

    tx = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1), dtype=torch.float64, requires_grad=True)
    ty = F.conv2d(tx, tw, stride=stride, padding=pad, dilation=dilation)
    torch.sin(ty + g_seed).sum().backward()
    np.testing.assert_allclose(np.asarray(y), ty.detach().numpy().transpose(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dw), tw.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("g_first", [True, False])
@pytest.mark.parametrize("cin,cout", [(5, 4), (3, 6)])
def test_both_operand_orders_give_torchs_kernel_gradient(np_rng, g_first, cin, cout):
    x = np_rng.normal(size=(2, 9, 10, cin))
    g = np_rng.normal(size=(2, 5, 5, cout))  # 3x3, stride 2, padding 1
    dw = conv_grad.kernel_grad(jnp.asarray(x, jnp.float32), jnp.asarray(g, jnp.float32), (3, 3),
                               (2, 2), ((1, 1), (1, 1)), (1, 1), g_first=g_first)
    expected = torch.nn.grad.conv2d_weight(
        torch.tensor(x.transpose(0, 3, 1, 2)), (cout, cin, 3, 3),
        torch.tensor(g.transpose(0, 3, 1, 2)), stride=2, padding=1)
    np.testing.assert_allclose(np.asarray(dw), expected.numpy().transpose(2, 3, 1, 0),
                               rtol=1e-4, atol=1e-4)


def test_layers_conv_gradients_equal_xla(np_rng, monkeypatch):
    """Through `layers.conv` (nn.Conv with the matmul gradient), jitted, against the same
    module on `lax.conv_general_dilated`; a grouped conv (XLA's gradient) in the same net."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return conv(6, 3, name="b", groups=2)(nn.relu(conv(8, 3, name="a", stride=2)(x)))

    x = jnp.asarray(np_rng.normal(size=(2, 16, 12, 4)), jnp.float32)
    params = Net().init(jax.random.key(0), x)
    loss = lambda p: jnp.sum(Net().apply(p, x) ** 2)  # noqa: E731
    ours = jax.jit(jax.grad(loss))(params)
    monkeypatch.setattr(conv_grad, "conv_general_dilated", lax.conv_general_dilated)
    xla = jax.jit(jax.grad(loss))(params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(xla)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)
    assert all(float(jnp.max(jnp.abs(a))) > 0 for a in jax.tree.leaves(ours))


def test_bfloat16_kernel_gradient_keeps_the_kernel_dtype(np_rng):
    x = jnp.asarray(np_rng.normal(size=(1, 8, 8, 3)), jnp.bfloat16)
    w = jnp.asarray(np_rng.normal(size=(3, 3, 3, 2)), jnp.bfloat16)
    f = lambda w: jnp.sum(conv_grad.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC).astype(jnp.float32))
    dw = jax.jit(jax.grad(f))(w)
    ref = jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC).astype(jnp.float32)))(w)
    assert dw.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(dw, np.float32), np.asarray(ref, np.float32),
                               rtol=2e-2, atol=2e-2)
