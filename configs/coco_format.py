"""Instance segmentation on your own COCO-format data (what labelling tools export):
Mask R-CNN + the PointRend mask head, sized for a few hundred images of a few hundred pixels
on a CPU or one small GPU.

    python train.py --config configs/coco_format.py --workdir runs/mine \
        --config.data.train_images=DIR --config.data.train_json=FILE \
        --config.data.val_images=DIR --config.data.val_json=FILE
    python eval.py --config configs/coco_format.py --workdir runs/mine [same data flags]

Polygons and RLE are read; crowd regions are ignored for training (and count as "ignore" in
COCO AP); images without instances are kept. Bad annotations are skipped with one warning
that counts them.

The defaults use images near their own size (random scale 0.8-1.2, crops of 256x256, no
shortest-edge resize; up to 32 instances an image), a ResNet-18 at width 16 with trainable
BN, a 64-channel FPN, anchors 16..256 px, batch 8, AdamW 1e-3 with a cosine schedule over 1200
steps (24 epochs of 400 images); PointRend's masks go 7 -> 224 in 5 subdivision steps. On 400
pictures of 192 px on 2 CPU cores: about 25 min of training, 45.3 mask AP against its coarse
masks' 33.6 (benchmarks/RESULTS.md). Before training starts, XLA's memory analysis of the compiled
step is held against the device's memory. For large images and a GPU/TPU, start from
detectron2's 1x COCO recipe instead (`configs/coco_pointrend_r50_fpn.py`, with the same four
data flags) and scale its `train.num_steps` and `optimizer.decay_steps` to your data (1x is
~12 epochs of COCO's 118k images); `--config.model.backbone.pretrained=FILE`
(python -m pointrend_jax.convert) starts from ImageNet weights, as detectron2 does.
"""
from pointrend_jax.instance.config import instance_config, instance_cpu_sized, instance_runlocal


def get_config(arg: str = ""):
    c = instance_config()
    instance_cpu_sized(c)
    c.data.name = "coco"
    c.augment.crop_size = (256, 256)
    c.augment.max_instances = 32  # per image: more are dropped, smallest first
    c.model.rpn.anchor_sizes = (16, 32, 64, 128, 256)
    c.train.num_steps = 1200
    if arg == "runlocal":
        instance_runlocal(c)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; the only one is 'runlocal'")
    return c
