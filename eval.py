"""Evaluates a trained PointRend model on the val split, twice: the coarse head alone
(its logits bilinearly upsampled to the image) and PointRend's subdivision.

    python eval.py --config configs/synthetic_multiclass.py --workdir DIR [--config.eval.step=N]
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Writes DIR/eval/metrics.json ({"step", "coarse": {...}, "pointrend": {...}} with mIoU,
boundary IoU, pixel accuracy and per-class IoU as fractions), prints the two side by side,
saves PNGs (image | ground truth | coarse | PointRend with the chosen points) under
DIR/eval/examples/, and with --config.eval.save_predictions=True every PointRend
prediction as DIR/eval/predictions/STEM.png (uint8 class ids at the image's size).

Instance configs (configs/synthetic_instances.py, coco_format.py, coco_pointrend_r50_fpn.py)
are evaluated with pycocotools instead: metrics.json holds bbox and mask AP (AP, AP50, AP75,
APs/m/l) and Boundary AP of the coarse 7x7 masks and of PointRend's 224x224 masks, examples
show ground truth | coarse | PointRend, and save_predictions writes DIR/eval/predictions.json
in the COCO results format.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from pointrend_jax import distributed
from pointrend_jax.evaluation import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    distributed.initialize_from_flags()
    evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
