"""XLA:CPU's convolutions against torch's, one at a time, at the shapes of the R-50 train step.

    python benchmarks/conv_shapes.py [--batch 2] [--threads 2]

For each convolution shape of SemanticFPN-R50 at a 512x1024 crop (ResNet-50 with the stride
in the 1x1 as detectron2 has it, FPN 256, the head's first 3x3 on p2 and p3), the forward
convolution and the kernel gradient, each jit-compiled alone (channels-last) and timed
against torch's `conv2d` and `torch.nn.grad.conv2d_weight` (channels-first) in the same
process with the same threads: best of 3 after a warm-up. The kernel gradient here is the
project's (`models/conv_grad.kernel_grad`, KH*KW matmuls). The totals weigh each shape by how
often the step has it, so that they can be held against the step profile of
`versus_torch.py --profile`.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(describe(f"convolutions of SemanticFPN-R50 at 512x1024, batch {args.batch}"))
    print("| convolution | count | forward ms here | torch | ratio | kernel gradient ms here "
          "| torch | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = np.zeros(4)
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
        kgrad = jax.jit(lambda a, b: conv_grad.kernel_grad(a, b, (k, k), (stride, stride),
                                                           padding, (1, 1)))
        tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        tw = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 3, 1, 2)))
        with torch.no_grad():
            row = np.array([
                best_of(lambda: jax.block_until_ready(fwd(jx, jw))),
                best_of(lambda: torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad)),
                best_of(lambda: jax.block_until_ready(kgrad(jx, jg))),
                best_of(lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, stride=stride,
                                                            padding=pad)),
            ])
        totals += count * row
        ms = 1000 * row
        print(f"| {name} | {count} | {ms[0]:.1f} | {ms[1]:.1f} | {row[0] / row[1]:.2f} | "
              f"{ms[2]:.1f} | {ms[3]:.1f} | {row[2] / row[3]:.2f} |", flush=True)
    ms = 1000 * totals
    print(f"| **weighted total** | | {ms[0]:.0f} | {ms[1]:.0f} | {totals[0] / totals[1]:.2f} | "
          f"{ms[2]:.0f} | {ms[3]:.0f} | {totals[2] / totals[3]:.2f} |")


if __name__ == "__main__":
    main()
