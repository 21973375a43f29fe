"""What rematerialisation and bfloat16 save: XLA's memory analysis of the compiled train step.

    python benchmarks/memory_options.py [--batch 2] [--crop 512 1024]

The model is detectron2's semantic PointRend recipe at R-50 (`semantic_config()`: SemanticFPN
on ResNet-50 with frozen BN, 2048 training points, 3 x 256 point head). Each row compiles the
step (nothing is run) with `model.backbone.remat` and `model.dtype` set as named and prints
the bytes XLA plans for it: arguments + outputs - outputs that reuse donated arguments +
temporaries (activations kept for the backward pass live in the temporaries), with the ratio
of each total to the float32, no-remat row.
"""
from __future__ import annotations

import argparse

from machine_info import describe
from pointrend_jax.semantic.config import semantic_config
from pointrend_jax.train import memory
from semantic_step import compiled_train_step

K = 19
ROWS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))


def step_memory(dtype: str, remat: bool, crop, batch):
    """-> (XLA's planned bytes by kind, compile seconds) for one setting."""
    c = semantic_config()
    c.augment.crop_size = crop
    c.model.dtype = dtype
    c.model.backbone.remat = remat
    *_, compiled, compile_s = compiled_train_step(c, K, batch)
    return memory.step_bytes(compiled), compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 1024))
    args = parser.parse_args()
    crop = tuple(args.crop)
    results = [(dtype, remat, *step_memory(dtype, remat, crop, args.batch)) for dtype, remat in ROWS]
    gib = 2.0 ** 30
    print(describe(f"SemanticFPN-R50 + PointRend train step, batch {args.batch} of "
                   f"{crop[0]}x{crop[1]}"))
    print("| model.dtype | backbone.remat | arguments GiB | temporaries GiB | total GiB "
          "| vs float32 | compile s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = results[0][2]["total"]
    for dtype, remat, need, compile_s in results:
        print(f"| {dtype} | {remat} | {need['arguments'] / gib:.2f} | "
              f"{need['temporaries'] / gib:.2f} | {need['total'] / gib:.2f} | "
              f"{need['total'] / base:.2f} | {compile_s:.0f} |")


if __name__ == "__main__":
    main()
