"""PointRend on your own folder of images and masks.

    python train.py --config configs/folder.py --workdir runs/mydata --config.data.root=ROOT
    python eval.py  --config configs/folder.py --workdir runs/mydata --config.data.root=ROOT

ROOT/{train,val}/images/*.jpg|png and ROOT/{train,val}/masks/*.png (same stem, uint8 class
ids, 255 = ignore); ROOT/classes.txt (one name per line) sets the class count, otherwise
pass --config.data.num_classes=K. Every file is checked before training starts.

The defaults are CPU-sized and were chosen by a measured sweep (benchmarks/RESULTS.md):
ResNet-18 at width 16 + SemanticFPN (FPN and head of 64 channels) + PointRend on p2, 128x128
crops, 2600 steps of 16, AdamW. On 500 images of 128-256 px with 4 classes, train + eval took
14 min 39 s on 2 CPU cores, above a plain torch script given the same time. For bigger data
and a GPU/TPU, one flag each: --config.model.backbone.width=64
--config.model.backbone.depth=50 --config.model.fpn_channels=256
--config.model.head_channels=128 --config.augment.crop_size='(512, 512)'
--config.train.batch_size=32.
"""
from pointrend_jax.semantic.config import folder_sized, semantic_config, runlocal


def get_config(arg: str = ""):
    c = semantic_config()
    c.data.name = "folder"
    folder_sized(c)
    if arg == "runlocal":
        runlocal(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
