"""XLA:CPU's convolutions against torch's, one at a time, at the shapes of the R-50 train step.

    python benchmarks/conv_shapes.py [--batch 2] [--threads 2]

For each convolution shape of SemanticFPN-R50 at a 512x1024 crop (ResNet-50 with the stride
in the 1x1 as detectron2 has it, FPN 256, the head's first 3x3 on p2 and p3), the forward
convolution and the kernel gradient, each jit-compiled alone (channels-last) and timed
against torch's `conv2d` and `torch.nn.grad.conv2d_weight` (channels-first) in the same
process with the same threads: best of 3 after a warm-up. The kernel gradient here is the
project's (`models/conv_grad.kernel_grad`, KH*KW matmuls), timed in the operand order it
picks (the narrower operand first) and in the two fixed orders. The totals weigh each shape
by how often the step has it, so that they can be held against the step profile of
`versus_torch.py --profile`.

A second table times one of each kernel gradient's matmuls alone, `(N*Ho*Wo, C_in)` by
`(N*Ho*Wo, C_out)` contracted over the long axis, as XLA's `dot_general` and as torch's
`a.T @ b` (its BLAS) on the same arrays: the speed of the matrix-product kernel itself, and
how much of the kernel gradient's time is its KH*KW matmuls at that speed.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

from machine_info import describe
from pointrend_jax.models import conv_grad

# (name, H, W, C_in, C_out, kernel, stride, how many in the step), H x W the input's size
SHAPES = (
    ("stem 7x7 s2", 512, 1024, 3, 64, 7, 2, 1),
    ("res2 1x1 64->64", 128, 256, 64, 64, 1, 1, 1),
    ("res2 1x1 256->64", 128, 256, 256, 64, 1, 1, 2),
    ("res2 3x3 64", 128, 256, 64, 64, 3, 1, 3),
    ("res2 1x1 64->256", 128, 256, 64, 256, 1, 1, 4),
    ("res3 1x1 s2 256->128", 128, 256, 256, 128, 1, 2, 1),
    ("res3 1x1 s2 256->512", 128, 256, 256, 512, 1, 2, 1),
    ("res3 3x3 128", 64, 128, 128, 128, 3, 1, 4),
    ("res3 1x1 128->512", 64, 128, 128, 512, 1, 1, 4),
    ("res3 1x1 512->128", 64, 128, 512, 128, 1, 1, 3),
    ("res4 1x1 s2 512->256", 64, 128, 512, 256, 1, 2, 1),
    ("res4 1x1 s2 512->1024", 64, 128, 512, 1024, 1, 2, 1),
    ("res4 3x3 256", 32, 64, 256, 256, 3, 1, 6),
    ("res4 1x1 256->1024", 32, 64, 256, 1024, 1, 1, 6),
    ("res4 1x1 1024->256", 32, 64, 1024, 256, 1, 1, 5),
    ("res5 3x3 512", 16, 32, 512, 512, 3, 1, 3),
    ("res5 1x1 512->2048", 16, 32, 512, 2048, 1, 1, 3),
    ("fpn 3x3 on p2", 128, 256, 256, 256, 3, 1, 1),
    ("head 3x3 256->128 on p2", 128, 256, 256, 128, 3, 1, 1),
    ("head 3x3 256->128 on p3", 64, 128, 256, 128, 3, 1, 2),
)


def best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def kernel_grad_fn(k, stride, padding, g_first):
    return jax.jit(lambda a, b: conv_grad.kernel_grad(a, b, (k, k), (stride, stride), padding,
                                                      (1, 1), g_first=g_first))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(describe(f"convolutions of SemanticFPN-R50 at 512x1024, batch {args.batch}"))
    print("| convolution | count | forward ms here | torch | ratio | kernel gradient ms here "
          "| g first | patch first | torch | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = np.zeros(6)
    matmuls = []
    for name, h, w, cin, cout, k, stride, count in SHAPES:
        pad = (k - 1) // 2
        x = rng.standard_normal((args.batch, h, w, cin), np.float32)
        kernel = (rng.standard_normal((k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
        padding = ((pad, pad), (pad, pad))

        def forward(a, b):
            return lax.conv_general_dilated(a, b, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

        jx, jw = jnp.asarray(x), jnp.asarray(kernel)
        g = np.asarray(jax.jit(forward)(jx, jw))
        jg = jnp.asarray(g)
        fwd = jax.jit(forward)
        kgrads = [kernel_grad_fn(k, stride, padding, order) for order in (None, True, False)]
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        tw = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))
        with torch.no_grad():
            row = np.array([
                best_of(lambda: jax.block_until_ready(fwd(jx, jw))),
                best_of(lambda: torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad)),
                *[best_of(lambda f=f: jax.block_until_ready(f(jx, jg))) for f in kgrads],
                best_of(lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, stride=stride,
                                                            padding=pad)),
            ])
        totals += count * row
        ms = 1000 * row
        print(f"| {name} | {count} | {ms[0]:.1f} | {ms[1]:.1f} | {row[0] / row[1]:.2f} | "
              f"{ms[2]:.1f} | {ms[3]:.1f} | {ms[4]:.1f} | {ms[5]:.1f} | {row[2] / row[5]:.2f} |",
              flush=True)
        # one tap's matmul: the patch (N*Ho*Wo, C_in) and g (N*Ho*Wo, C_out)
        m = g.shape[0] * g.shape[1] * g.shape[2]
        a = rng.standard_normal((m, cin), np.float32)
        b = g.reshape(m, cout)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        dot = jax.jit(lambda p, q: lax.dot_general(p, q, (((0,), (0,)), ((), ()))))
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        matmuls.append((name, count, k * k, (m, cin, cout),
                        best_of(lambda: jax.block_until_ready(dot(ja, jb))),
                        best_of(lambda: ta.T @ tb), row[2]))
    ms = 1000 * totals
    print(f"| **weighted total** | | {ms[0]:.0f} | {ms[1]:.0f} | {totals[0] / totals[1]:.2f} | "
          f"{ms[2]:.0f} | {ms[3]:.0f} | {ms[4]:.0f} | {ms[5]:.0f} | {totals[2] / totals[5]:.2f} |")
    print()
    print("| one tap's matmul (M = N*Ho*Wo) | M x C_in x C_out | XLA GFLOP/s | torch GFLOP/s "
          "| XLA / torch speed | taps x XLA matmul ms | kernel gradient ms | matmuls' share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    tap_total = grad_total = 0.0
    for name, count, taps, (m, cin, cout), t_xla, t_torch, t_grad in matmuls:
        flops = 2.0 * m * cin * cout
        print(f"| {name} | {m} x {cin} x {cout} "
              f"| {flops / t_xla / 1e9:.0f} | {flops / t_torch / 1e9:.0f} | {t_torch / t_xla:.2f} "
              f"| {1000 * taps * t_xla:.1f} | {1000 * t_grad:.1f} | {taps * t_xla / t_grad:.0%} |")
        tap_total += count * taps * t_xla
        grad_total += count * t_grad
    print(f"| **weighted total** | | | | | {1000 * tap_total:.0f} | {1000 * grad_total:.0f} "
          f"| {tap_total / grad_total:.0%} |")


if __name__ == "__main__":
    main()
