"""Instance segmentation on the embedded synthetic shapes: Mask R-CNN + PointRend mask head.

128x128 pictures of blobs, polygons and rings, each shape one instance (3 classes, drawn
by the project and written once in COCO format). A CPU-sized model (ResNet-18 at a quarter
width, 64-channel FPN, anchors 8..128 px); PointRend's masks go 7x7 -> 224x224 in 5 steps.
`--config.model.mask_head=maskrcnn` trains the standard 28x28 Mask R-CNN head instead (A/B).

    python train.py --config configs/synthetic_instances.py --workdir runs/synthetic_instances
    python eval.py --config configs/synthetic_instances.py --workdir runs/synthetic_instances
    python train.py --config configs/synthetic_instances.py:runlocal --workdir /tmp/smoke
"""
from pointrend_jax.instance.config import instance_config, instance_cpu_sized, instance_runlocal


def get_config(arg: str = ""):
    c = instance_config()
    instance_cpu_sized(c)
    if arg == "runlocal":
        instance_runlocal(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
