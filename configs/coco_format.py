"""Instance segmentation on your own COCO-format data (what labelling tools export):
Mask R-CNN R50-FPN with the PointRend mask head, detectron2's 1x recipe.

    python train.py --config configs/coco_format.py --workdir runs/mine \
        --config.data.train_images=DIR --config.data.train_json=FILE \
        --config.data.val_images=DIR --config.data.val_json=FILE
    python eval.py --config configs/coco_format.py --workdir runs/mine [same data flags]

Polygons and RLE are read; crowd regions are ignored for training (and count as "ignore" in
COCO AP); images without instances are kept. Bad annotations are skipped with one warning
that counts them. Scale `--config.train.num_steps` (and `optimizer.decay_steps`) to your data:
the 1x schedule is ~12 epochs of COCO's 118k images. Add
`--config.model.backbone.pretrained=FILE` (python -m pointrend_jax.convert) to start from
ImageNet weights, as detectron2 does.
"""
from pointrend_jax.instance.config import instance_config, instance_runlocal


def get_config(arg: str = ""):
    c = instance_config()
    c.data.name = "coco"
    if arg == "runlocal":
        instance_runlocal(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
