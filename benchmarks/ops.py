"""Speed of the core ops, side by side with torch in one process.

    python benchmarks/ops.py [--repeats 10] [--small]

Rows (time ratio: lower is better):
  * point_sample forward, and forward+backward (grads w.r.t. the features alone, as in
    training where points carry no gradient, and w.r.t. features and coords), on
    features (2, 128, 256, 256) with 8192 points per image, against torch grid_sample
    (NCHW, as detectron2 calls it) with 2 threads;
  * subdivision inference at Cityscapes scale (coarse 1x128x256x19, fine 1x256x512x256,
    2 steps x 8192 points, 3x256 point head) against evaluating the same head densely at
    every cell of the 512x1024 output grid; detectron2's loop in torch for reference;
  * compile times of the jitted functions.
`--small` shrinks every size 4x for a quick smoke run.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from machine_info import describe
from timing import timeit
from pointrend_jax import PointHead, point_sample, subdivision_inference

torch.set_num_threads(2)


def compile_ms(jitted, *args):
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return (time.perf_counter() - start) * 1e3, compiled


def temp_mib(compiled):
    mem = compiled.memory_analysis()
    return None if mem is None else mem.temp_size_in_bytes / 2**20


def bench_point_sample(rng, shape, num_points, repeats):
    n, h, w, c = shape
    feats = jnp.asarray(rng.normal(size=shape), jnp.float32)
    coords = jnp.asarray(rng.uniform(size=(n, num_points, 2)), jnp.float32)
    cot = jnp.asarray(rng.normal(size=(n, num_points, c)), jnp.float32)

    fwd = jax.jit(point_sample)
    grad_f = jax.jit(jax.grad(lambda f, x: jnp.sum(point_sample(f, x) * cot)))
    grad_fx = jax.jit(jax.grad(lambda f, x: jnp.sum(point_sample(f, x) * cot), argnums=(0, 1)))
    fwd_compile, fwd_c = compile_ms(fwd, feats, coords)
    f_compile, f_c = compile_ms(grad_f, feats, coords)
    fx_compile, fx_c = compile_ms(grad_fx, feats, coords)
    jax_fwd = timeit(lambda: fwd_c(feats, coords).block_until_ready(), repeats)
    jax_f = timeit(lambda: jax.block_until_ready(f_c(feats, coords)), repeats)
    jax_fx = timeit(lambda: jax.block_until_ready(fx_c(feats, coords)), repeats)

    t_feats = torch.tensor(np.asarray(feats)).permute(0, 3, 1, 2).contiguous()
    t_grid = torch.tensor(np.asarray(coords))[:, None] * 2 - 1
    t_cot = torch.tensor(np.asarray(cot)).permute(0, 2, 1)[:, :, None]

    def torch_fwd():
        with torch.no_grad():
            F.grid_sample(t_feats, t_grid, align_corners=False)

    def torch_bwd(grid_grad):
        f = t_feats.detach().requires_grad_(True)
        g = t_grid.detach().requires_grad_(grid_grad)
        (F.grid_sample(f, g, align_corners=False) * t_cot).sum().backward()

    return [
        ("point_sample forward", jax_fwd, timeit(torch_fwd, repeats), "torch grid_sample",
         fwd_compile, temp_mib(fwd_c)),
        ("point_sample fwd+bwd, grad features", jax_f, timeit(lambda: torch_bwd(False), repeats),
         "torch grid_sample", f_compile, temp_mib(f_c)),
        ("point_sample fwd+bwd, grad features+coords", jax_fx,
         timeit(lambda: torch_bwd(True), repeats), "torch grid_sample", fx_compile, temp_mib(fx_c)),
    ]


def torch_head(params):
    """The same point head as 1x1 Conv1d layers (detectron2's form)."""
    layers = []
    for name in sorted(params):
        kernel = torch.tensor(np.asarray(params[name]["kernel"])).t()[:, :, None].contiguous()
        layers.append((kernel, torch.tensor(np.asarray(params[name]["bias"]))))
    order = [l for n, l in zip(sorted(params), layers) if n != "predictor"]
    predictor = layers[sorted(params).index("predictor")]

    def head(fine, coarse):
        x = torch.cat([fine, coarse], 1)
        for kernel, bias in order:
            x = torch.cat([F.relu(F.conv1d(x, kernel, bias)), coarse], 1)
        return F.conv1d(x, *predictor)

    return head


def torch_subdivision(coarse, fine, head, steps, num_points):
    logits = coarse
    for _ in range(steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        top2 = torch.topk(logits, 2, dim=1)[0]
        n, k, h, w = logits.shape
        idx = torch.topk((top2[:, 1] - top2[:, 0]).view(n, h * w), min(num_points, h * w), dim=1)[1]
        coords = torch.stack([(idx % w + 0.5) / w, (idx // w + 0.5) / h], -1)[:, None] * 2 - 1
        point_logits = head(F.grid_sample(fine, coords, align_corners=False)[:, :, 0],
                            F.grid_sample(coarse, coords, align_corners=False)[:, :, 0])
        logits = logits.reshape(n, k, h * w).scatter_(2, idx[:, None].expand(-1, k, -1), point_logits)
        logits = logits.view(n, k, h, w)
    return logits


def bench_subdivision(rng, coarse_hw, fine_hw, channels, k, steps, num_points, repeats):
    coarse = jnp.asarray(rng.normal(size=(1, *coarse_hw, k)), jnp.float32)
    fine = jnp.asarray(rng.normal(size=(1, *fine_hw, channels)), jnp.float32)
    head = PointHead(k, num_fc=3, fc_dim=256)
    params = head.init(jax.random.key(0), fine[:, :1, 0], coarse[:, :1, 0])["params"]

    def subdiv(c, f, p):
        return subdivision_inference(c, f, lambda a, b: head.apply({"params": p}, a, b),
                                     num_steps=steps, num_points=num_points)

    out_h, out_w = coarse_hw[0] * 2**steps, coarse_hw[1] * 2**steps
    rows, cols = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    centres = jnp.asarray(np.stack([(cols + 0.5) / out_w, (rows + 0.5) / out_h], -1)
                          .reshape(1, out_h * out_w, 2), jnp.float32)

    def dense(c, f, p, xy):
        logits = head.apply({"params": p}, point_sample(f, xy), point_sample(c, xy))
        return logits.reshape(1, out_h, out_w, k)

    sub_compile, sub_c = compile_ms(jax.jit(subdiv), coarse, fine, params)
    dense_compile, dense_c = compile_ms(jax.jit(dense), coarse, fine, params, centres)
    jax_sub = timeit(lambda: sub_c(coarse, fine, params).block_until_ready(), repeats)
    jax_dense = timeit(lambda: dense_c(coarse, fine, params, centres).block_until_ready(),
                       max(2, repeats // 4))

    t_coarse = torch.tensor(np.asarray(coarse)).permute(0, 3, 1, 2).contiguous()
    t_fine = torch.tensor(np.asarray(fine)).permute(0, 3, 1, 2).contiguous()
    t_head = torch_head(params)

    def run_torch():
        with torch.no_grad():
            torch_subdivision(t_coarse, t_fine, t_head, steps, num_points)

    name = f"subdivision {steps}x{num_points} pts -> {out_h}x{out_w}"
    return [
        (name, jax_sub, jax_dense, "dense head (JAX)", sub_compile, temp_mib(sub_c)),
        (name, jax_sub, timeit(run_torch, max(2, repeats // 2)), "detectron2 loop (torch)",
         None, None),
        ("dense head on every cell", jax_dense, None, "", dense_compile, temp_mib(dense_c)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="4x smaller sizes, for a smoke run")
    args = parser.parse_args()
    d = 4 if args.small else 1
    rng = np.random.default_rng(0)
    rows = bench_point_sample(rng, (2, 128 // d, 256 // d, 256 // d), 8192 // d, args.repeats)
    rows += bench_subdivision(rng, (128 // d, 256 // d), (256 // d, 512 // d), 256 // d, 19, 2,
                              8192 // d, args.repeats)
    print(f"Machine: {describe(f'torch {torch.__version__} ({torch.get_num_threads()} threads)')}")
    print("| op | JAX ms | reference | reference ms | ratio | JAX compile ms | XLA temp MiB |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, ours, ref, ref_name, comp, temp in rows:
        ratio = f"{ours / ref:.3f}x" if ref else ""
        ref_ms = f"{ref:.1f}" if ref else ""
        comp = f"{comp:.0f}" if comp is not None else ""
        temp = f"{temp:.1f}" if temp is not None else ""
        print(f"| {name} | {ours:.1f} | {ref_name} | {ref_ms} | {ratio} | {comp} | {temp} |")


if __name__ == "__main__":
    main()
