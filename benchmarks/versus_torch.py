"""This project against a torch eager re-statement of the same model, in one process.

    python benchmarks/versus_torch.py [--batch 2] [--steps 3] [--threads 2] [--small]

The model is detectron2's semantic PointRend recipe at R-50: ResNet-50 (frozen BN) + FPN 256
+ SemSegFPNHead (128 channels, GroupNorm) + PointRend (2048 training points, k 3, beta 0.75,
3 x 256 point head, 2 subdivision steps of 8192 points), SGD with momentum. The torch side is
detectron2's modules re-stated with detectron2's parameter names (`tests/d2_reference.py`,
the re-statements the parity tests hold against detectron2) plus its training losses: the
coarse cross-entropy on the 4x-upsampled logits and the point cross-entropy at the points
chosen by `get_uncertain_point_coords_with_randomness`.

Rows, each framework timed alternately (one step of one, then one of the other) with the
same thread count: train images/s at a 512x1024 crop, inference seconds for a 1024x2048
image, and the same without PointRend (`pointrend.enabled=False`: the plain SemanticFPN),
so that PointRend's own cost and the framework's are separate numbers; the project's
compile times and XLA's memory analysis of the compiled step (bytes of arguments + outputs
+ temporaries). torch on the CPU has no allocator peak counter, so its memory is not shown.
A second table gives, per train step, the process's minor page faults and system CPU time
around each framework's step (`getrusage`), and the train throughput of each framework
timed alone (its steps back to back), since a step run right after the other framework's
can be slower than one after its own. `--small` divides every size by 4 for a smoke run.
`--profile` adds where the time of one train step with PointRend goes, in both frameworks (`step_profile.py` for XLA's ops,
`torch.profiler` self times for torch's), by category: convolutions forward and backward,
norms, point sampling, point selection, the point head, the optimizer, the rest.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import jax
import numpy as np
import torch
import torch.nn.functional as F

import step_profile
from machine_info import describe
from pointrend_jax.semantic.config import semantic_config
from pointrend_jax.semantic.predictor import make_predict_fn
from semantic_step import compiled_train_step

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import d2_reference as R  # noqa: E402

K = 19
POINTS, OVERSAMPLE, IMPORTANCE = 2048, 3, 0.75


# ------------------------------------------------------------------------------- torch
def torch_model(pointrend: bool, subdivision_points: int):
    head = R.PointRendSemSegHead(256, K, 128, fc_dim=256, num_fc=3, coarse_pred_each_layer=False,
                                 subdivision_steps=2, subdivision_num_points=subdivision_points)
    model = R.SemanticSegmentor(R.resnet_fpn(50, 64, 256, norm="FrozenBN", stride_in_1x1=True),
                                head, (103.53, 116.28, 123.675), (1.0, 1.0, 1.0))
    model.pointrend = pointrend
    return model


def uncertain_points_with_randomness(coarse, n):
    """get_uncertain_point_coords_with_randomness for semantic logits (N, K, h, w)."""
    b = coarse.shape[0]
    coords = torch.rand(b, n * OVERSAMPLE, 2)
    uncertainty = R.semantic_uncertainty(R.point_sample(coarse, coords)[..., None])[..., 0]
    important = int(IMPORTANCE * n)
    idx = torch.topk(uncertainty[:, 0], important, dim=1)[1]
    chosen = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    return torch.cat([chosen, torch.rand(b, n - important, 2)], dim=1)


def torch_train_step(model, opt, images, labels):
    """images float (N, 3, H, W) BGR, labels int64 (N, H, W)."""
    x = (images - model.pixel_mean.view(1, -1, 1, 1)) / model.pixel_std.view(1, -1, 1, 1)
    features = model.backbone(x)
    head = model.sem_seg_head
    coarse = head.coarse_sem_seg_head.layers(features)
    loss = F.cross_entropy(F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False),
                           labels, ignore_index=255)
    if model.pointrend:
        with torch.no_grad():
            coords = uncertain_points_with_randomness(coarse.detach(), POINTS)
        point_logits = head.point_head(R.point_sample(features["p2"], coords),
                                       R.point_sample(coarse, coords))
        point_labels = F.grid_sample(labels[:, None].float(), 2.0 * coords[:, :, None] - 1.0,
                                     mode="nearest", align_corners=False)[:, 0, :, 0].long()
        loss = loss + F.cross_entropy(point_logits, point_labels, ignore_index=255)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def torch_infer(model, image):
    with torch.no_grad():
        if model.pointrend:
            return model(image)[0]
        x, _ = R.preprocess(image, model.pixel_mean, model.pixel_std)
        coarse = model.sem_seg_head.coarse_sem_seg_head.layers(model.backbone(x))
        return F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False)


TORCH_CATEGORIES = (  # (category, test on an op's name), first match wins
    ("convolutions backward", lambda n: "convolution_backward" in n),
    ("convolutions forward", lambda n: "convolution" in n or n.startswith("aten::conv")),
    ("norms", lambda n: "norm" in n),
    ("point sampling", lambda n: "grid_sampler" in n),
    ("point selection", lambda n: n in ("aten::topk", "aten::sort", "aten::rand", "aten::gather")),
)


def torch_profile(fn, calls: int):
    """`fn` run `calls` times under torch.profiler -> [(category, ms per call, share)], each
    op's self time in the categories of `step_profile` (ops under `Optimizer.*` are the
    optimizer's; the point head's linear layers are not told apart from other matmuls)."""
    from torch.profiler import ProfilerActivity, profile as torch_profiler
    with torch_profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    sums = {}
    for event in prof.events():
        name, parent, under_optimizer = event.name, event.cpu_parent, False
        while parent is not None:
            under_optimizer |= parent.name.startswith("Optimizer.")
            parent = parent.cpu_parent
        if under_optimizer or name.startswith("Optimizer."):
            cat = "optimizer and bookkeeping"
        else:
            cat = next((c for c, test in TORCH_CATEGORIES if test(name)), None)
            if cat is None:
                cat = "other backward" if ("backward" in name.lower() or "Backward" in name) \
                    else "other forward"
        sums[cat] = sums.get(cat, 0.0) + event.self_cpu_time_total / 1e3
    total = sum(sums.values())
    return {c: (ms / calls, ms / total) for c, ms in sums.items()}


def print_profiles(ours_rows, ours_total_ms, theirs):
    """The project's and torch's per-category times of one train step, side by side."""
    print("| where the train step's time goes | here ms | share | torch ms | share |")
    print("|---|---|---|---|---|")
    names = [r[0] for r in ours_rows] + [c for c in theirs if c not in {r[0] for r in ours_rows}]
    ours = {name: (ms, share) for name, ms, share in ours_rows}
    for name in names:
        o_ms, o_share = ours.get(name, (0.0, 0.0))
        t_ms, t_share = theirs.get(name, (0.0, 0.0))
        print(f"| {name} | {o_ms:.0f} | {o_share:.1%} | {t_ms:.0f} | {t_share:.1%} |")
    print(f"| total of op times | {ours_total_ms:.0f} | | "
          f"{sum(ms for ms, _ in theirs.values()):.0f} | |")


# ------------------------------------------------------------------------------- project
def project(pointrend: bool, crop, batch, subdivision_points):
    c = semantic_config()
    c.augment.crop_size = crop
    c.pointrend.enabled = pointrend
    c.pointrend.subdivision_num_points = subdivision_points
    model, state, data, compiled, compile_s = compiled_train_step(c, K, batch)
    mem = compiled.memory_analysis()
    mem_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                 if mem is not None else float("nan"))
    holder = {"state": state}

    def train():
        holder["state"], m = compiled(holder["state"], data, jax.random.key(1))
        jax.block_until_ready(m)

    predict = make_predict_fn(model)
    # the train step donates its state: the variables are those of the latest state
    variables = lambda: {"params": holder["state"].params,  # noqa: E731
                         "batch_stats": holder["state"].batch_stats}
    return c, train, compile_s, mem_bytes, predict, variables, compiled


def median_alternating(fns, steps, usage=None):
    """Each of `fns` once as warm-up, then `steps` rounds calling each in turn -> medians (s).
    With a list `usage`, also appends each fn's medians of (minor page faults, system CPU
    seconds) per call, from the process's `getrusage` around it."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    faults = [[] for _ in fns]
    system = [[] for _ in fns]
    for _ in range(steps):
        for i, fn in enumerate(fns):
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
            faults[i].append(after.ru_minflt - before.ru_minflt)
            system[i].append(after.ru_stime - before.ru_stime)
    if usage is not None:
        usage.extend((statistics.median(f), statistics.median(s)) for f, s in zip(faults, system))
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also trace 2 train steps of each framework (with PointRend) and "
                             "print where their time goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scale = 4 if args.small else 1
    crop, full = (512 // scale, 1024 // scale), (1024 // scale, 2048 // scale)
    points = 8192 // (scale * scale)
    rows = []
    for pointrend in (True, False):
        _, train, compile_s, mem_bytes, predict, get_variables, compiled = project(
            pointrend, crop, args.batch, points)
        tmodel = torch_model(pointrend, points)
        opt = torch.optim.SGD(tmodel.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.batch, 3, *crop), generator=g).float()
        labels = torch.randint(0, K, (args.batch, *crop), generator=g)
        usage = []
        torch_step = lambda: torch_train_step(tmodel, opt, images, labels)  # noqa: E731
        ours_s, torch_s = median_alternating([train, torch_step], args.steps, usage)
        # the same steps with each framework alone (after a warm-up step of its own)
        ours_alone_s, = median_alternating([train], args.steps)
        torch_alone_s, = median_alternating([torch_step], args.steps)
        variables = get_variables()
        image = np.random.default_rng(1).integers(0, 256, (1, *full, 3), dtype=np.uint8)
        sizes = np.asarray([full], np.int32)
        start = time.perf_counter()
        jax.block_until_ready(predict(variables, image, sizes))
        predict_compile_s = time.perf_counter() - start
        timage = torch.from_numpy(np.ascontiguousarray(image[0, ..., ::-1].transpose(2, 0, 1))).float()
        ours_i, torch_i = median_alternating(
            [lambda: jax.block_until_ready(predict(variables, image, sizes)),
             lambda: torch_infer(tmodel, timage)], max(1, args.steps - 1))
        if pointrend and args.profile:
            profile = (*step_profile.profile_by_category(compiled, train, calls=2),
                       torch_profile(torch_step, 2))
        rows.append((pointrend, args.batch / ours_s, args.batch / torch_s, ours_i, torch_i,
                     compile_s, predict_compile_s, mem_bytes, usage,
                     args.batch / ours_alone_s, args.batch / torch_alone_s))

    print(describe(f"torch {torch.__version__} with {args.threads} threads; crop {crop[0]}x{crop[1]}, "
                   f"batch {args.batch}, inference {full[0]}x{full[1]}; medians of {args.steps}"))
    print("| model | train img/s here | torch | ratio | inference s here | torch | ratio "
          "| compile s (train / predict) | XLA step memory GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pointrend, o_ips, t_ips, o_i, t_i, c_s, p_s, mem, *_ in rows:
        name = "SemanticFPN-R50 + PointRend" if pointrend else "SemanticFPN-R50"
        print(f"| {name} | {o_ips:.3f} | {t_ips:.3f} | {o_ips / t_ips:.2f} | {o_i:.2f} | {t_i:.2f} "
              f"| {o_i / t_i:.2f} | {c_s:.0f} / {p_s:.0f} | {mem / 2**30:.2f} |")
    pr, plain = rows
    share = lambda with_pr, without: (1 / with_pr - 1 / without) / (1 / with_pr)  # noqa: E731
    print(f"PointRend's share of the train step: here {share(pr[1], plain[1]):.0%}, "
          f"torch {share(pr[2], plain[2]):.0%}")
    print()
    print("| model, per train step | minor page faults here | torch | system CPU s here | torch "
          "| train img/s, each alone: here | torch | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for pointrend, *_, ((o_f, o_sys), (t_f, t_sys)), o_alone, t_alone in rows:
        name = "SemanticFPN-R50 + PointRend" if pointrend else "SemanticFPN-R50"
        print(f"| {name} | {o_f:,.0f} | {t_f:,.0f} | {o_sys:.1f} | {t_sys:.1f} | {o_alone:.3f} "
              f"| {t_alone:.3f} | {o_alone / t_alone:.2f} |")
    if args.profile:
        print_profiles(*profile)


if __name__ == "__main__":
    main()
