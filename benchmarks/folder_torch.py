"""The plain torch script a user would write, on the same folder, as the bar for
`configs/folder.py`'s defaults.

    python benchmarks/folder_torch.py ROOT [--steps 1500] [--threads 2]

Model: ResNet-18 (torchvision's layout, full width, BN, from scratch) + FPN of 128 channels
(p2..p5) + detectron2's SemanticFPN head (128 channels, GroupNorm) + PointRend (point head
3 x 256 on p2 and the coarse logits, the coarse prediction fed to the first layer only as in
detectron2's semantic recipe; 512 training points with k 3 / beta 0.75; subdivision to full
resolution with 1024 points a step), AdamW 1e-3 (weight decay 1e-4 on weights, 100 warm-up
steps, cosine), batch 16. The modules are the torch re-statements the parity tests hold
against detectron2 (`tests/d2_reference.py`, `tests/torch_resnet.py`).

Only the network and the framework differ from `train.py` + `eval.py` with
`configs/folder.py`: the batches come from the same folder source and the same train
transform (crops of 128, random scale, flip, colour jitter; seed 0), and the val split is
scored with the same metric code (`SegmentationMetrics`: mIoU, boundary IoU). Prints the
training time, then the coarse and PointRend rows.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from machine_info import describe
from pointrend_jax.config import load_config
from pointrend_jax.data.pipeline import eval_examples, train_iterator
from pointrend_jax.semantic import metrics
from pointrend_jax.tasks import validated_task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import d2_reference as R  # noqa: E402
from torch_resnet import TorchResNet  # noqa: E402
from versus_torch import uncertain_points_with_randomness  # noqa: E402

POINTS = 512  # oversampling 3 and importance 0.75: versus_torch's point selection
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)  # RGB, ImageNet
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


class ResNetFeatures(torch.nn.Module):
    """TorchResNet as an FPN bottom-up: {"res2".."res5"} (NCHW)."""

    def __init__(self):
        super().__init__()
        self.net = TorchResNet(18, 64)

    def forward(self, x):
        return dict(zip(("res2", "res3", "res4", "res5"), self.net(x)))


class Script(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fpn = R.FPN(ResNetFeatures(), [64, 128, 256, 512], 128)
        self.head = R.PointRendSemSegHead(128, num_classes, 128, fc_dim=256, num_fc=3,
                                          coarse_pred_each_layer=False, subdivision_steps=2,
                                          subdivision_num_points=1024)

    def forward(self, images):
        """images uint8 (N, H, W, 3) RGB -> (features, coarse logits (N, K, H/4, W/4))."""
        x = (images.permute(0, 3, 1, 2).float() - MEAN) / STD
        features = self.fpn(x)
        return features, self.head.coarse_sem_seg_head.layers(features)


def train_step(model, opt, images, labels):
    features, coarse = model(images)
    loss = F.cross_entropy(F.interpolate(coarse, scale_factor=4, mode="bilinear",
                                         align_corners=False), labels, ignore_index=255)
    with torch.no_grad():
        coords = uncertain_points_with_randomness(coarse.detach(), POINTS)
    point_logits = model.head.point_head(R.point_sample(features["p2"], coords),
                                         R.point_sample(coarse, coords))
    point_labels = F.grid_sample(labels[:, None].float(), 2.0 * coords[:, :, None] - 1.0,
                                 mode="nearest", align_corners=False)[:, 0, :, 0].long()
    loss = loss + F.cross_entropy(point_logits, point_labels, ignore_index=255)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def predict(model, image):
    """image uint8 (H, W, 3) -> (coarse argmax, PointRend argmax), both (H, W)."""
    h, w = image.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    padded = np.zeros((1, ph, pw, 3), np.uint8) + MEAN.view(3).numpy().astype(np.uint8)
    padded[0, :h, :w] = image
    features, coarse = model(torch.from_numpy(padded))
    up = F.interpolate(coarse, size=(ph, pw), mode="bilinear", align_corners=False)
    refined, _ = model.head(features)
    return up[0, :, :h, :w].argmax(0).numpy(), refined[0, :, :h, :w].argmax(0).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                      "configs", "folder.py"))
    config.data.root = args.root
    task = validated_task(config)
    data = task.build_datasets(config.data)
    k = data.num_classes
    model = Script(k)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    batches = train_iterator(data.train, global_batch_size=args.batch, seed=0,
                             transform=task.train_transform(config))
    model.train()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = next(batches)
        loss = train_step(model, opt, torch.from_numpy(batch["image"]),
                          torch.from_numpy(batch["label"].astype(np.int64)))
        sched.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss:.4f} {time.perf_counter() - start:.0f} s", flush=True)
    train_s = time.perf_counter() - start
    model.eval()
    results = {name: metrics.SegmentationMetrics(k, data.class_names)
               for name in ("coarse", "pointrend")}
    start = time.perf_counter()
    for example in eval_examples(data.val):
        label = example["label"][None]
        for name, pred in zip(("coarse", "pointrend"), predict(model, example["image"])):
            confusion = metrics.confusion_matrix(pred[None], label, k)
            inter, union = metrics.boundary_iou_stats(pred[None], label, k)
            results[name].update(confusion, inter, union)
    eval_s = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(describe(f"torch {torch.__version__} with {args.threads} threads; {args.steps} steps "
                   f"of {args.batch}; {params / 1e6:.2f}M parameters"))
    print(f"train {train_s:.0f} s, eval {eval_s:.0f} s")
    print("| masks | mIoU | boundary IoU |")
    print("|---|---:|---:|")
    for name, m in results.items():
        r = m.compute()
        print(f"| {name} | {100 * r['miou']:.1f} | {100 * r['boundary_iou']:.1f} |")


if __name__ == "__main__":
    main()
