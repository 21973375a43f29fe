"""Writes a users'-folder data set to check `configs/folder.py`'s defaults: 500 train and
100 val JPEG images, square with sides drawn uniformly from 128-256 px (seeded by split and
index), with PNG masks of 4 classes (background, blob, polygon, thin structure), drawn with
the synthetic renderer (its curves and rings merged into one class).

    python benchmarks/folder_data.py ROOT
    python train.py --config configs/folder.py --workdir runs/folder --config.data.root=ROOT
    python eval.py  --config configs/folder.py --workdir runs/folder --config.data.root=ROOT
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from pointrend_jax.data.synthetic import make_example

CLASSES = ("background", "blob", "polygon", "thin")
MERGE = np.array([0, 1, 2, 3, 3], np.uint8)  # synthetic classes -> CLASSES
SIZE_SEED = 128256  # seeds each image's side, with the split and the index


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--min-size", type=int, default=128, help="smallest image side (px)")
    parser.add_argument("--max-size", type=int, default=256, help="largest image side (px)")
    args = parser.parse_args()
    for split_id, (split, count) in enumerate((("train", args.train), ("val", args.val))):
        os.makedirs(os.path.join(args.root, split, "images"), exist_ok=True)
        os.makedirs(os.path.join(args.root, split, "masks"), exist_ok=True)
        for i in range(count):
            size = int(np.random.default_rng((SIZE_SEED, split_id, i)).integers(
                args.min_size, args.max_size + 1))
            example = make_example("multiclass", split, i, image_size=size)
            stem = f"{split}_{i:04d}"
            Image.fromarray(example["image"]).save(
                os.path.join(args.root, split, "images", f"{stem}.jpg"), quality=92)
            Image.fromarray(MERGE[example["label"]]).save(
                os.path.join(args.root, split, "masks", f"{stem}.png"))
    with open(os.path.join(args.root, "classes.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    print(f"wrote {args.train} + {args.val} examples of {len(CLASSES)} classes to {args.root}")


if __name__ == "__main__":
    main()
