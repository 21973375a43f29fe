"""A 2-D convolution whose kernel gradient is computed as matrix products.

XLA differentiates a convolution's kernel as another convolution whose window is the whole
feature map (e.g. a 128x256 window for a 3x3 conv on a 128x256 map). XLA:CPU runs that shape
about 10x slower than the forward convolution (benchmarks/RESULTS.md, the train-step
profile), and at detectron2's 512x1024 crops these kernel gradients were 73% of the step.
The kernel gradient is also, for each kernel tap `(i, j)`, one matrix product:

    dW[i, j] = sum over n, y, x of  X_pad[n, y*s + i*d, x*s + j*d, :]^T  dY[n, y, x, :]

(`s` stride, `d` dilation, `X_pad` the padded input): `KH * KW` products of `(C_in, N*H*W)`
by `(N*H*W, C_out)`, which run at matmul speed, one tap after the other in a `fori_loop`.
`conv_general_dilated` is `lax.conv_general_dilated` with that kernel gradient on the CPU (and XLA's own input
gradient; on GPU and TPU, whose libraries have fast kernel-gradient convolutions, XLA's
gradient: `lax.platform_dependent` picks it when the program is lowered); `layers.conv`,
the RPN head and the 28x28 mask head pass it to `nn.Conv`. Grouped convolutions and input dilation keep XLA's
gradient everywhere. Shapes: `x (N, H, W, C_in)`, kernel `(KH, KW, C_in, C_out)`, channels-last.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def _conv(x, w, strides, padding, dilation, precision):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=_NHWC, precision=precision)


@jax.named_scope("conv_kernel_grad")
def kernel_grad(x: jax.Array, g: jax.Array, kernel_hw: Tuple[int, int], strides, padding,
                dilation, precision=None, g_first: Optional[bool] = None) -> jax.Array:
    """d loss / d kernel `(KH, KW, C_in, C_out)` of an NHWC convolution, from its input
    `x (N, H, W, C_in)` and output gradient `g (N, Ho, Wo, C_out)`, as KH*KW matmuls in
    `x`'s dtype. `g_first` is the matmuls' operand order: `None` puts the narrower of `g`
    and the input patch first (see below); `True` / `False` force one order (the result is
    the same; `benchmarks/conv_shapes.py` times both)."""
    kh, kw = kernel_hw
    (pt, pb), (pl, pr) = padding
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    # operands in the compute dtype, as XLA's own kernel gradient has them (XLA:CPU has no
    # bf16 x bf16 -> f32 dot)
    g = g.astype(x.dtype)
    n, ho, wo, _ = g.shape
    sh, sw = strides
    dh, dw = dilation
    dims = (((0, 1, 2), (0, 1, 2)), ((), ()))
    if g_first is None:
        g_first = g.shape[3] <= xp.shape[3]  # C_out <= C_in
    span = ((ho - 1) * sh + 1, (wo - 1) * sw + 1)

    def tap(t, out):
        # XLA:CPU lays one operand of each dot out as (C, N*Ho*Wo), a transposing copy;
        # the order of the operands picks which: g when C_out <= C_in, else the patch, the
        # narrower of the two (for the widening 1x1 convs of ResNet-50 several times
        # faster: benchmarks/RESULTS.md). XLA makes g's copy inside the loop, once a tap.
        i, j = t // kw, t % kw
        window = lax.dynamic_slice(xp, (0, i * dh, j * dw, 0), (n, *span, xp.shape[3]))
        patch = window[:, ::sh, ::sw, :]  # (N, Ho, Wo, C_in)
        if g_first:
            d = lax.dot_general(g, patch, dims, precision=precision).T
        else:
            d = lax.dot_general(patch, g, dims, precision=precision)
        return lax.dynamic_update_index_in_dim(out, d, t, 0)

    # one tap at a time in a loop: a single patch buffer is alive and reused, where nine
    # unrolled slices were live together (the R-50 step's plan: 2.8 GiB instead of 5.1)
    out = jnp.zeros((kh * kw, xp.shape[3], g.shape[3]), x.dtype)
    if kh * kw == 1:
        out = tap(0, out)
    else:
        out = lax.fori_loop(0, kh * kw, tap, out)
    return out.reshape(kh, kw, xp.shape[3], g.shape[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _matmul_grad_conv(x, w, strides, padding, dilation, precision):
    return _conv(x, w, strides, padding, dilation, precision)


def _fwd(x, w, strides, padding, dilation, precision):
    return _conv(x, w, strides, padding, dilation, precision), (x, w)


def _bwd(strides, padding, dilation, precision, residuals, g):
    x, w = residuals
    _, conv_vjp = jax.vjp(lambda x_, w_: _conv(x_, w_, strides, padding, dilation, precision),
                          x, w)
    dx, _ = conv_vjp(g)  # XLA drops the kernel gradient it does not use

    def matmuls(x, g):
        return kernel_grad(x, g, w.shape[:2], strides, padding, dilation, precision).astype(w.dtype)

    def xla(x, g):
        return conv_vjp(g)[1]

    return dx, lax.platform_dependent(x, g, cpu=matmuls, default=xla)


_matmul_grad_conv.defvjp(_fwd, _bwd)


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jax.Array:
    """`lax.conv_general_dilated`'s signature and result; for 2-D NHWC/HWIO convolutions
    with explicit padding, no input dilation and no groups, the kernel gradient is computed
    by `kernel_grad`. Anything else is passed to `lax.conv_general_dilated` unchanged."""
    plain = (lhs.ndim == 4 and _is_nhwc(dimension_numbers) and not isinstance(padding, str)
             and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
             and feature_group_count == 1 and batch_group_count == 1
             and preferred_element_type is None)
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, batch_group_count=batch_group_count,
            precision=precision, preferred_element_type=preferred_element_type)
    dilation = tuple(rhs_dilation) if rhs_dilation is not None else (1, 1)
    pads = tuple((int(a), int(b)) for a, b in padding)
    return _matmul_grad_conv(lhs, rhs, tuple(int(s) for s in window_strides), pads,
                             tuple(int(d) for d in dilation), precision)
