"""PointRend on your own folder of images and masks.

    python train.py --config configs/folder.py --workdir runs/mydata --config.data.root=ROOT
    python eval.py  --config configs/folder.py --workdir runs/mydata --config.data.root=ROOT

ROOT/{train,val}/images/*.jpg|png and ROOT/{train,val}/masks/*.png (same stem, uint8 class
ids, 255 = ignore); ROOT/classes.txt (one name per line) sets the class count, otherwise
pass --config.data.num_classes=K. Every file is checked before training starts.

The defaults are CPU-sized (ResNet-18 at width 16, DeepLabV3 head at stride 16, 128x128
crops, 3000 steps of 16 images): about 500 images of 128x128 with 4 classes train to a
useful model in under 15 minutes on 2 CPU cores. For bigger data and a GPU/TPU, one flag
each: --config.model.backbone.width=64 --config.model.backbone.depth=50
--config.augment.crop_size='(512, 512)' --config.train.batch_size=32.
"""
from pointrend_jax.semantic.config import semantic_config, cpu_sized, runlocal


def get_config(arg: str = ""):
    c = semantic_config()
    c.data.name = "folder"
    cpu_sized(c)
    if arg == "runlocal":
        runlocal(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
