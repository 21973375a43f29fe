"""Cost of detectron2's adaptive ROIAlign sampling against a fixed sampling ratio.

    python benchmarks/roi_align.py [--repeats 3] [--small]

detectron2's box head pools each region with `POOLER_SAMPLING_RATIO: 0`: ceil(bin side)
samples per bin side, a count per region. With static shapes every region gets
`model.roi_heads.max_sampling_ratio` sample slots, of which the unused ones weigh 0, so the
cost is that of the cap, not of the regions' counts. Rows: the box head's pooling (7x7 from
FPN p2..p5 of a 1344x1344 canvas, 256 channels, 2 images x 512 regions, as in COCO
training), forward and forward+backward, for the fixed ratio 2 and adaptive sampling with
caps 4, 6 and 8; the time ratio against ratio 2; and the share of regions whose adaptive
count the cap covers (where it is exact), for boxes shaped like RPN proposals (sizes 16-800
px, aspect ratios 1:3 to 3:1).
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

from machine_info import describe
from timing import timeit
from pointrend_jax.models import box_ops

STRIDES = (4, 8, 16, 32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="4x smaller canvas and 4x fewer regions")
    args = parser.parse_args()
    side, regions, channels = (336, 128, 64) if args.small else (1344, 512, 256)
    rng = np.random.default_rng(0)
    n = 2
    features = [jax.numpy.asarray(rng.normal(size=(n, side // s, side // s, channels)), jax.numpy.float32)
                for s in STRIDES]
    centre = rng.uniform(0, side, (n, regions, 2))
    size = np.exp(rng.uniform(np.log(16), np.log(800 * side / 1344), (n, regions, 1)))
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), (n, regions, 1))) ** 0.5
    half = np.concatenate([size * aspect, size / aspect], -1) / 2
    boxes = jax.numpy.asarray(np.concatenate([centre - half, centre + half], -1), jax.numpy.float32)
    level = np.asarray(box_ops.assign_levels(boxes, 2, 5))
    stride = np.asarray(STRIDES)[level]
    sides = np.asarray(boxes[..., 2:] - boxes[..., :2]) / stride[..., None]
    needed = np.ceil(sides / 7).max(-1)

    print(describe(f"box head pooling, {n} x {regions} regions, {side}x{side} canvas, "
                   f"{channels} channels, median of {args.repeats}"))
    print(f"adaptive samples per bin side needed: median {np.median(needed):.0f}, "
          f"90th percentile {np.percentile(needed, 90):.0f}, max {needed.max():.0f}")
    print("| sampling | forward ms | ratio | fwd+bwd ms | ratio | regions exact |")
    print("|---|---|---|---|---|---|")
    base = None
    for ratio, cap in ((2, 8), (0, 4), (0, 6), (0, 8)):
        pool = lambda f, b: box_ops.multilevel_roi_align(f, STRIDES, b, output_size=7,
                                                         sampling_ratio=ratio, max_sampling_ratio=cap)
        fwd = jax.jit(pool)
        grad = jax.jit(jax.grad(lambda f, b: pool(f, b).sum()))
        t_f = timeit(lambda: fwd(features, boxes).block_until_ready(), args.repeats)
        t_b = timeit(lambda: grad(features, boxes)[0].block_until_ready(), args.repeats)
        base = base or (t_f, t_b)
        name = "fixed 2" if ratio else f"adaptive, cap {cap}"
        exact = "-" if ratio else f"{100 * np.mean(needed <= cap):.1f}%"
        print(f"| {name} | {t_f:.0f} | {t_f / base[0]:.2f} | {t_b:.0f} | {t_b / base[1]:.2f} | {exact} |")


if __name__ == "__main__":
    main()
