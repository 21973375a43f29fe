"""Evaluates a trained run on the val split, twice: the coarse prediction alone and
PointRend's subdivision.

    python eval.py --config configs/synthetic_multiclass.py --workdir DIR [--config.eval.step=N]
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

DIR is a local folder or a bucket path. Semantic configs write DIR/eval/metrics.json
({"step", "coarse": {...}, "pointrend": {...}} with mIoU, boundary IoU, pixel accuracy and
per-class IoU as fractions), print the two side by side, save PNGs (image | ground truth |
coarse | PointRend with the chosen points) under DIR/eval/examples/, and with
--config.eval.save_predictions=True every PointRend prediction as
DIR/eval/predictions/STEM.png (uint8 class ids at the image's size).

Instance configs (configs/synthetic_instances.py, coco_format.py, coco_pointrend_r50_fpn.py)
are evaluated with pycocotools instead: metrics.json holds bbox and mask AP (AP, AP50, AP75,
APs/m/l) and Boundary AP of the coarse 7x7 masks and of PointRend's 224x224 masks, examples
show ground truth | coarse | PointRend, and save_predictions writes DIR/eval/predictions.json
in the COCO results format.
"""
from pointrend_jax import cli
from pointrend_jax.evaluate import evaluate

if __name__ == "__main__":
    cli.run(evaluate)
