"""Instance segmentation on the embedded synthetic shapes: Mask R-CNN + PointRend mask head.

128x128 pictures of blobs, polygons and rings, each shape one instance (3 classes, drawn
by the project and written once in COCO format). A CPU-sized model (ResNet-18 at a quarter
width, 64-channel FPN, anchors 8..128 px); PointRend's masks go 7x7 -> 224x224 in 5 steps.
`--config.model.mask_head=maskrcnn` trains the standard 28x28 Mask R-CNN head instead (A/B).

`:large` is the set where a mask's resolution matters (`data.variant="large"`): 384-512 px
pictures, 2-6 objects of 64-300 px with holes and thin legs, the same model on a 512x512
canvas with anchors 32..512 px (what `benchmarks/instance_quality.py` trains).
`--config.data.point_supervision=10` trains the mask heads from 10 labelled points per object
(PointSup, sampled from the train masks) instead of the masks.

    python train.py --config configs/synthetic_instances.py --workdir runs/synthetic_instances
    python eval.py --config configs/synthetic_instances.py --workdir runs/synthetic_instances
    python train.py --config configs/synthetic_instances.py:runlocal --workdir /tmp/smoke
    python train.py --config configs/synthetic_instances.py:large --workdir runs/large
"""
from pointrend_jax.instance.config import (instance_config, instance_cpu_sized, instance_large,
                                           instance_runlocal)


def get_config(arg: str = ""):
    c = instance_config()
    instance_cpu_sized(c)
    if arg == "runlocal":
        instance_runlocal(c)
    elif arg == "large":
        instance_large(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; choose 'runlocal' or 'large'")
    return c
