"""Import detectron2's trained PointRend models: a detectron2 checkpoint in, a run directory
out that `eval.py`, `pointrend_jax.load(workdir)` and `python -m pointrend_jax.export` use.

    python -m pointrend_jax.convert MODEL --config CONFIG --workdir OUT [--class-names FILE]

MODEL is a detectron2 checkpoint of
- a semantic PointRend (SemanticSegmentor: ResNet + FPN + SemSegFPNHead + PointRendSemSegHead)
  for a semantic config (`model.head="semantic_fpn"`), or
- an instance model (GeneralizedRCNN: ResNet + FPN + RPN + box head + PointRendMaskHead,
  the MaskRCNNConvUpsampleHead of the Mask R-CNN baselines, or Implicit PointRend's
  ImplicitPointRendMaskHead) for an instance config,
as the model zoo's `.pkl` (a pickle of `{"model": {name: ndarray}, "__author__": ...}`) or the
`.pth` detectron2's training writes (`{"model": state_dict, "iteration": N, ...}`, read with
torch). CONFIG must describe detectron2's model exactly (widths, depths, norms, heads); every
tensor of the config's model is filled from one tensor of the checkpoint, and every tensor of
the checkpoint is used, or MODEL is refused with the names, the shapes and the config key that
most likely differs.

How detectron2's layouts become ours (channels-last, `(in, out)` dense kernels):
- convolutions (O, I, kh, kw) -> (kh, kw, I, O); the stem's input channels reversed (BGR ->
  RGB: the run takes RGB images, `model.pixel_mean/std` in RGB order), as `backbones` does for
  the MSRA pickles; 1x1 Conv1d of the point heads (O, I, 1) -> (I, O); linear layers transposed;
- the first FC of the box head and of the coarse mask head read features detectron2 flattens
  as (C, H, W), ours as (H, W, C): their input rows are permuted;
- the coarse mask head predicts class-major (K, side, side) logits, ours (side, side, K): its
  prediction's output rows are permuted; Implicit PointRend's parameter head (the same
  ConvFCHead) predicts the MLP parameters in detectron2's own order, kept as they are, and
  its point head's `positional_encoding_gaussian_matrix` buffer (2, 128) is copied;
- the transposed 2x2 conv of the 28x28 head (I, O, 2, 2) -> (I, 2, 2, O);
- the RPN's objectness (A per location) and anchor-major deltas (A x 4), the box predictor's
  class-specific deltas (K x 4) and its background-last cls_score (K + 1) are already laid
  out as here: their rows are only transposed;
- FrozenBN weight/bias/running_mean/running_var -> scale/bias/mean/var, GroupNorm
  weight/bias -> scale/bias.
The PointRend heads' names of models saved before detectron2 renamed them
(`roi_heads.mask_coarse_head.*`, `roi_heads.mask_point_head.*`, `coarse_mask_fc*`) are read as
detectron2 reads them. `pixel_mean`/`pixel_std` and anchor buffers that old checkpoints carry
are compared with the config instead of loaded.

The workdir gets `config.json` (the config and the class names: COCO's 80 and Cityscapes' 8
instance and 19 semantic classes are known, others come from `--class-names FILE`) and an Orbax checkpoint at the checkpoint's
iteration (0 for the zoo's pickles) in train.py's layout, with a freshly initialised optimizer
state for the config: `train.py` resumes from it.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from pointrend_jax import backbones
from pointrend_jax.checkpointing import Checkpointer
from pointrend_jax.data.cityscapes import CLASS_NAMES as CITYSCAPES_CLASS_NAMES
from pointrend_jax.data.cityscapes_instances import CLASS_NAMES as CITYSCAPES_INSTANCE_NAMES
from pointrend_jax.data.coco import COCO_CLASS_NAMES
from pointrend_jax.models import box_ops
from pointrend_jax.models.layers import init_variables
from pointrend_jax.models.resnet import STAGES
from pointrend_jax.tasks import validated_task
from pointrend_jax.train.loop import data_position
from pointrend_jax.train.optimizer import make_optimizer
from pointrend_jax.train.state import TrainState
from pointrend_jax.workdir import write_run

Transform = Callable[[np.ndarray], np.ndarray]
LeafPath = Tuple[str, ...]
# (checkpoint key, transform into our layout, our leaf shape -> the checkpoint's shape)
Source = Tuple[str, Transform, Callable[[Tuple[int, ...]], Tuple[int, ...]]]

# Class lists detectron2's models are trained with, by number of classes and task.
KNOWN_CLASS_NAMES = {("instance", 80): ("COCO", COCO_CLASS_NAMES),
                     ("instance", 8): ("Cityscapes instances", CITYSCAPES_INSTANCE_NAMES),
                     ("semantic", 19): ("Cityscapes", CITYSCAPES_CLASS_NAMES)}
INPUT_FORMATS = ("BGR", "RGB")
# Renames detectron2 applies when it loads a PointRend checkpoint of before its version 2.
_LEGACY_PREFIXES = (("roi_heads.mask_point_head.", "roi_heads.mask_head.point_head."),
                    ("roi_heads.mask_coarse_head.", "roi_heads.mask_head.coarse_head."))
_CELL_ANCHORS = re.compile(r"^proposal_generator\.anchor_generator\.cell_anchors\.(\d+)$")
_IGNORED = re.compile(r"\.num_batches_tracked$")


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the config's model (names the key to change)."""


# ------------------------------------------------------------------------------ reading
def read_checkpoint(path: str) -> Tuple[Dict[str, np.ndarray], int]:
    """`(weights {name: float32/int ndarray}, iteration)` of a detectron2 checkpoint: a `.pkl`
    (`{"model": {name: ndarray}, ...}`, the model zoo's) or a `.pth`/`.pt` (`{"model":
    state_dict, "iteration": N, ...}`, detectron2's training; needs torch). The iteration
    is 0 when the file has none."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".pkl":
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    elif suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:  # torch is a conversion-time dependency only
            raise RuntimeError(f"reading {path!r} (a torch checkpoint) needs PyTorch: pip "
                               "install torch (the CPU build is enough)") from e
        data = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{path}: a detectron2 checkpoint is a .pkl (model zoo) or a .pth "
                         f"(detectron2's training); got the suffix {suffix!r}")
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        keys = sorted(data)[:5] if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{path}: not a detectron2 model checkpoint (no 'model' dict of "
                         f"tensors; found {keys}). An ImageNet backbone (R-50.pkl) converts "
                         "with `python -m pointrend_jax.convert SRC DST`")
    weights = {str(k): _to_numpy(v) for k, v in data["model"].items()}
    return weights, int(data.get("iteration", 0) or 0)


def _to_numpy(value) -> np.ndarray:
    """A torch tensor (float32 for any float dtype) or an array-like -> numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _natural(path: Sequence[str]) -> tuple:
    """Sort key putting `res4.9` before `res4.10` and `layer3_9` before `layer3_10`."""
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p)) for p in path)


# Parts of the models in the order an input goes through them: a mismatch is reported at the
# first layer it reaches, where a config change (a width, a depth) shows first.
_FLOW = ("net", "backbone", "fpn", "sem_seg_head", "parameter_head", "point_head", "rpn_head",
         "box_head", "mask_head", "coarse_head")


def _input_first(path: LeafPath) -> tuple:
    """Sort key of our leaf paths ("params"/"batch_stats", module..., leaf) in `_FLOW` order."""
    return (tuple(_FLOW.index(m) if m in _FLOW else len(_FLOW) for m in path[1:3]),
            _natural(path[1:]))


def rename_legacy(weights: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """detectron2's renames of PointRend checkpoints older than its version 2 (PointRendROIHeads
    and ConvFCHead `_load_from_state_dict`): `mask_point_head` -> `mask_head.point_head`,
    `mask_coarse_head` -> `mask_head.coarse_head`, `coarse_head.coarse_mask_fc` -> `fc`."""
    out = {}
    for key, value in weights.items():
        for old, new in _LEGACY_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
        key = key.replace("mask_head.coarse_head.coarse_mask_fc", "mask_head.coarse_head.fc")
        out[key] = value
    return out


# ------------------------------------------------------------------------------ layouts
def _conv(a):
    return a.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)


def _conv_shape(s):
    return (s[3], s[2], s[0], s[1])


def _dense(a):
    return a.T  # (O, I) -> (I, O)


def _dense_shape(s):
    return (s[1], s[0])


def _conv1d(a):
    return a[:, :, 0].T  # Conv1d (O, I, 1) -> (I, O)


def _same(a):
    return a


def _same_shape(s):
    return tuple(s)


def _chw_rows(side: int) -> Transform:
    """A linear layer over features detectron2 flattened as (C, side, side) -> our kernel over
    (side, side, C): `(O, C * side * side) -> (side * side * C, O)`."""
    def transform(a):
        out = a.shape[0]
        return a.reshape(out, -1, side, side).transpose(2, 3, 1, 0).reshape(-1, out)
    return transform


def _class_major_rows(side: int) -> Transform:
    """Outputs detectron2 lays out as (M, side, side) -> ours (side, side, M): a weight
    `(M * side * side, I)` -> kernel `(I, side * side * M)`, a bias `(M * side * side,)` the
    same way."""
    def transform(a):
        grid = a.reshape(-1, side, side, *a.shape[1:])  # (M, side, side[, I])
        moved = np.moveaxis(grid, 0, 2).reshape(side * side * grid.shape[0], *a.shape[1:])
        return moved.T if a.ndim == 2 else moved
    return transform


def _deconv(a):
    return a.transpose(0, 2, 3, 1)  # ConvTranspose2d (I, O, 2, 2) -> (I, 2, 2, O)


def _deconv_shape(s):
    return (s[0], s[3], s[1], s[2])


def _leaf_source(key: str, leaf: str, kernel: Tuple[Transform, Callable] = (_conv, _conv_shape)
                 ) -> Source:
    """`key.weight`/`key.bias` of a conv or linear layer (kernel layout `kernel`)."""
    if leaf == "kernel":
        return (key + ".weight", *kernel)
    return key + ".bias", _same, _same_shape


def _norm_source(key: str, leaf: str) -> Source:
    name = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
    return f"{key}.{name}", _same, _same_shape


def _fpn_source(modules: Sequence[str], leaf: str) -> Source:
    name = modules[0]
    if name.endswith("_norm"):  # fpn_lateral2_norm -> backbone.fpn_lateral2.norm
        return _norm_source(f"backbone.{name[:-len('_norm')]}.norm", leaf)
    return _leaf_source(f"backbone.{name}", leaf)


def _point_head_source(prefix: str, modules: Sequence[str], leaf: str) -> Source:
    kernel = (_conv1d, lambda s: (s[1], s[0], 1))
    return _leaf_source(f"{prefix}.{modules[0]}", leaf, kernel)


class _Mapping:
    """Our leaf path -> `Source` for the model one config describes."""

    def __init__(self, config: ml_collections.ConfigDict, input_format: str):
        self.config = config
        self.bgr = input_format == "BGR"

    def __call__(self, path: LeafPath) -> Source:
        _, *modules, leaf = path
        head, rest = modules[0], modules[1:]
        if head == "net":
            return self._net(rest, leaf)
        if head == "point_head":  # semantic PointRend
            return _point_head_source("sem_seg_head.point_head", rest, leaf)
        if head == "rpn_head":
            return _leaf_source(f"proposal_generator.rpn_head.{rest[0]}", leaf)
        if head == "box_head":
            return self._box_head(rest, leaf)
        if head == "mask_head":
            return self._mask_head(rest, leaf)
        raise CheckpointMismatch(f"no detectron2 counterpart is known for {'/'.join(path)}")

    def _net(self, modules, leaf) -> Source:
        part, rest = modules[0], modules[1:]
        if part == "backbone":
            key, transform = backbones.detectron2_model_resnet_source((*rest, leaf), bgr=self.bgr)
            shape = _conv_shape if leaf == "kernel" else _same_shape
            return f"backbone.bottom_up.{key}", transform, shape
        if part == "fpn":
            return _fpn_source(rest, leaf)
        if part == "sem_seg_head":
            return self._sem_seg_head(rest, leaf)
        raise CheckpointMismatch(f"no detectron2 counterpart is known for net/{part}")

    def _sem_seg_head(self, modules, leaf) -> Source:
        """SemSegFPNHead: `p{l}_{k}` is the k-th conv of level l, module `p{l}.{i}` of its
        nn.Sequential, where an Upsample follows every conv of a level coarser than stride 4."""
        prefix = "sem_seg_head.coarse_sem_seg_head"
        name = modules[0]
        if name == "predictor":
            return _leaf_source(f"{prefix}.predictor", leaf)
        match = re.fullmatch(r"(p(\d))_(\d+)(_norm)?", name)
        level, k = int(match.group(2)), int(match.group(3))
        index = k if 2 ** level == 4 else 2 * k  # common stride 4 (SEM_SEG_HEAD.COMMON_STRIDE)
        key = f"{prefix}.{match.group(1)}.{index}"
        return _norm_source(key + ".norm", leaf) if match.group(4) else _leaf_source(key, leaf)

    def _box_head(self, modules, leaf) -> Source:
        name = modules[0]
        if name in ("cls_score", "bbox_pred"):
            return _leaf_source(f"roi_heads.box_predictor.{name}", leaf, (_dense, _dense_shape))
        kernel = (_dense, _dense_shape)
        if name == "fc1":  # over the pooled (C, 7, 7) features, flattened by detectron2
            kernel = (_chw_rows(int(self.config.model.roi_heads.box_pooler_side)), _dense_shape)
        return _leaf_source(f"roi_heads.box_head.{name}", leaf, kernel)

    def _mask_head(self, modules, leaf) -> Source:
        name, rest = modules[0], modules[1:]
        prefix = "roi_heads.mask_head"
        roi = self.config.model.roi_heads
        if name == "point_head" and not rest:  # Implicit PointRend's fixed Gaussian matrix
            return f"{prefix}.point_head.{leaf}", _same, _same_shape
        if name == "point_head":
            return _point_head_source(f"{prefix}.point_head", rest, leaf)
        if name in ("coarse_head", "parameter_head"):
            layer = rest[0]
            key = f"{prefix}.{name}.{layer.replace('coarse_mask_fc', 'fc')}"
            if layer == "coarse_mask_fc1":  # over the (C, pooler / 2, pooler / 2) conv output
                return _leaf_source(key, leaf, (
                    _chw_rows(int(roi.coarse_mask_pooler_side) // 2), _dense_shape))
            if layer == "prediction" and name == "parameter_head":  # a flat vector
                return _leaf_source(key, leaf, (_dense, _dense_shape))
            if layer == "prediction":  # class-major (M, side, side) outputs
                rows = _class_major_rows(int(roi.coarse_mask_side))
                if leaf == "kernel":
                    return key + ".weight", rows, _dense_shape
                return key + ".bias", rows, _same_shape
            if layer.startswith("coarse_mask_fc"):
                return _leaf_source(key, leaf, (_dense, _dense_shape))
            return _leaf_source(key, leaf)  # reduce_channel_dim_conv, reduce_spatial_dim_conv
        if name == "deconv":
            return _leaf_source(f"{prefix}.deconv", leaf, (_deconv, _deconv_shape))
        return _leaf_source(f"{prefix}.{name}", leaf)  # mask_fcn{i}, predictor


# ------------------------------------------------------------------------------ hints
# (pattern on a checkpoint key, the config key that most likely differs)
_HINTS = (
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", "model.backbone.width"),
    (r"^backbone\.bottom_up\..*\.norm\.running_(mean|var)$",
     "model.backbone.norm (detectron2's RESNETS.NORM: FrozenBN/BN -> frozen_bn/bn, GN -> gn)"),
    (r"^backbone\.bottom_up\.res\d\.\d+\.conv[12]\.", "model.backbone.num_groups / "
     "width_per_group (RESNETS.NUM_GROUPS / WIDTH_PER_GROUP) or model.backbone.width"),
    (r"^backbone\.bottom_up\.", "model.backbone.depth / width (RESNETS.DEPTH, "
     "RES2_OUT_CHANNELS)"),
    (r"^backbone\.fpn_", "model.fpn_channels (FPN.OUT_CHANNELS)"),
    (r"^sem_seg_head\.coarse_sem_seg_head\.predictor\.", "the number of classes (--class-names)"),
    (r"^sem_seg_head\.coarse_sem_seg_head\.", "model.head_channels / model.head_norm "
     "(SEM_SEG_HEAD.CONVS_DIM / NORM)"),
    (r"point_head\.predictor\.", "the number of classes (--class-names), or "
     "model.roi_heads.cls_agnostic_mask (CLS_AGNOSTIC_MASK)"),
    (r"point_head\.fc1\.", "pointrend.fine_features / pointrend.fc_dim (POINT_HEAD.IN_FEATURES "
     "/ FC_DIM)"),
    (r"point_head\.fc\d+\.", "pointrend.coarse_pred_each_layer / pointrend.num_fc / "
     "pointrend.fc_dim (POINT_HEAD.COARSE_PRED_EACH_LAYER / NUM_FC / FC_DIM)"),
    (r"^proposal_generator\.rpn_head\.conv\.", "model.fpn_channels"),
    (r"^proposal_generator\.", "model.rpn.aspect_ratios / anchor_sizes (anchors per "
     "location: ANCHOR_GENERATOR.ASPECT_RATIOS)"),
    (r"^roi_heads\.box_head\.fc1\.", "model.roi_heads.box_pooler_side / box_fc_dim "
     "(ROI_BOX_HEAD.POOLER_RESOLUTION / FC_DIM)"),
    (r"^roi_heads\.box_head\.", "model.roi_heads.box_num_fc / box_fc_dim (ROI_BOX_HEAD.NUM_FC "
     "/ FC_DIM)"),
    (r"^roi_heads\.box_predictor\.cls_score\.", "the number of classes (--class-names)"),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "the number of classes (--class-names); a "
     "class-agnostic box regression (CLS_AGNOSTIC_BBOX_REG) is not supported"),
    (r"^roi_heads\.mask_head\.coarse_head\.prediction\.", "model.roi_heads.cls_agnostic_mask "
     "(CLS_AGNOSTIC_MASK) / coarse_mask_side (OUTPUT_SIDE_RESOLUTION)"),
    (r"^roi_heads\.mask_head\.coarse_head\.fc1\.", "model.roi_heads.coarse_mask_pooler_side / "
     "mask_conv_dim / coarse_mask_fc_dim (ROI_MASK_HEAD.POOLER_RESOLUTION / CONV_DIM / FC_DIM)"),
    (r"^roi_heads\.mask_head\.coarse_head\.", "model.roi_heads.coarse_mask_num_fc / "
     "coarse_mask_fc_dim / mask_conv_dim / coarse_mask_features (ROI_MASK_HEAD.NUM_FC / FC_DIM "
     "/ CONV_DIM / IN_FEATURES)"),
    (r"^roi_heads\.mask_head\.predictor\.", "model.roi_heads.cls_agnostic_mask "
     "(CLS_AGNOSTIC_MASK)"),
    (r"^roi_heads\.mask_head\.parameter_head\.prediction\.", "the size of the MLP whose "
     "parameters it predicts: the number of classes (--class-names), "
     "model.roi_heads.cls_agnostic_mask, pointrend.num_fc / fc_dim / fine_features, "
     "model.implicit_pointrend.image_feature_enabled / pos_enc_enabled (CLS_AGNOSTIC_MASK, "
     "POINT_HEAD.NUM_FC / FC_DIM / IN_FEATURES, IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED / "
     "POS_ENC_ENABLED)"),
    (r"^roi_heads\.mask_head\.parameter_head\.fc1\.", "model.roi_heads.coarse_mask_pooler_side "
     "/ mask_conv_dim / coarse_mask_fc_dim (ROI_MASK_HEAD.POOLER_RESOLUTION / CONV_DIM / "
     "FC_DIM)"),
    (r"^roi_heads\.mask_head\.parameter_head\.", "model.roi_heads.coarse_mask_num_fc / "
     "coarse_mask_fc_dim / mask_conv_dim / coarse_mask_features (ROI_MASK_HEAD.NUM_FC / FC_DIM "
     "/ CONV_DIM / IN_FEATURES)"),
    (r"^roi_heads\.mask_head\.point_head\.positional_encoding_gaussian_matrix$",
     "model.implicit_pointrend.pos_enc_enabled (IMPLICIT_POINTREND.POS_ENC_ENABLED)"),
    (r"^roi_heads\.mask_head\.", "model.mask_head / model.roi_heads.mask_conv_dim"),
)


def config_hint(key: str) -> str:
    """The config key that most likely differs when checkpoint tensor `key` does not fit."""
    for pattern, hint in _HINTS:
        if re.search(pattern, key):
            return hint
    return "the model's architecture (is this a PointRend or Mask R-CNN checkpoint?)"


_GAUSSIAN = "positional_encoding_gaussian_matrix"  # ImplicitPointHead's fixed buffer
# (model.mask_head, a tensor only that head has, detectron2's head)
_MASK_HEAD_KINDS = (
    ("maskrcnn", "roi_heads.mask_head.mask_fcn1.weight",
     "MaskRCNNConvUpsampleHead (roi_heads.mask_head.mask_fcn1 ...)"),
    ("pointrend", "roi_heads.mask_head.point_head.fc1.weight",
     "PointRendMaskHead (roi_heads.mask_head.point_head ...)"),
    ("implicit_pointrend", "roi_heads.mask_head.parameter_head.prediction.weight",
     "ImplicitPointRendMaskHead (roi_heads.mask_head.parameter_head ...)"),
)


def _structure_errors(task: str, config, weights: Mapping[str, np.ndarray]) -> List[str]:
    """The differences between checkpoint and config that explain many tensors at once, each
    naming the config key to set: mask head kind, depth, semantic coarse head."""
    errors = []
    if task == "instance":
        kinds = [(kind, head) for kind, key, head in _MASK_HEAD_KINDS if key in weights]
        if kinds and kinds[0][0] != config.model.mask_head:
            kind, head = kinds[0]
            errors.append(f"the checkpoint's mask head is detectron2's {head}: set "
                          f"--config.model.mask_head={kind} (the config has "
                          f"{config.model.mask_head!r})")
        elif kinds and kinds[0][0] == "implicit_pointrend":
            encoded = f"roi_heads.mask_head.point_head.{_GAUSSIAN}" in weights
            if encoded != config.model.implicit_pointrend.pos_enc_enabled:
                errors.append(f"the checkpoint's ImplicitPointHead has {'a' if encoded else 'no'} "
                              f"{_GAUSSIAN}: set --config.model.implicit_pointrend."
                              f"pos_enc_enabled={encoded} (IMPLICIT_POINTREND.POS_ENC_ENABLED)")
    elif config.model.head != "semantic_fpn":
        errors.append(f"detectron2's semantic PointRend has a SemSegFPNHead coarse head: set "
                      f"--config.model.head=semantic_fpn (the config has {config.model.head!r})")
    counts = [0, 0, 0, 0]
    for key in weights:
        match = re.match(r"^backbone\.bottom_up\.res(\d)\.(\d+)\.", key)
        if match and 2 <= int(match.group(1)) <= 5:
            stage = int(match.group(1)) - 2
            counts[stage] = max(counts[stage], int(match.group(2)) + 1)
    depth = config.model.backbone.depth
    if any(counts) and tuple(counts) != STAGES[depth][1]:
        found = [d for d, (_, c) in STAGES.items() if c == tuple(counts)]
        errors.append(f"the checkpoint's ResNet has {tuple(counts)} blocks in res2..res5, "
                      f"ResNet-{depth} has {STAGES[depth][1]}: set --config.model.backbone."
                      f"depth={found[-1] if found else '?'}")
    return errors


# ------------------------------------------------------------------------------ import
def num_classes_of(task: str, weights: Mapping[str, np.ndarray], where: str) -> int:
    """K of a checkpoint: the coarse semantic predictor's outputs, or cls_score's K + 1."""
    key = ("sem_seg_head.coarse_sem_seg_head.predictor.weight" if task == "semantic"
           else "roi_heads.box_predictor.cls_score.weight")
    if key not in weights:
        other = ("roi_heads.box_predictor.cls_score.weight" if task == "semantic"
                 else "sem_seg_head.coarse_sem_seg_head.predictor.weight")
        kind = {"semantic": "an instance model (GeneralizedRCNN)",
                "instance": "a semantic model (SemanticSegmentor)"}[task]
        raise CheckpointMismatch(
            f"{where}: no {key!r} in the checkpoint, which a {task} model needs"
            + (f"; it is {kind}: use a config of that task (--config.task)" if other in weights
               else "; is it a PointRend / Mask R-CNN checkpoint?"))
    rows = weights[key].shape[0]
    return rows if task == "semantic" else rows - 1


def class_names_for(task: str, num_classes: int, class_names_file: Optional[str],
                    where: str) -> List[str]:
    """The class names of a `num_classes` checkpoint: the file's lines (one name a line,
    blank lines skipped), else COCO's 80, Cityscapes' 8 instance classes or its 19 semantic
    ones when the count is theirs."""
    if class_names_file:
        with open(class_names_file) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != num_classes:
            raise CheckpointMismatch(
                f"{where} has {num_classes} classes, --class-names {class_names_file} lists "
                f"{len(names)}")
        return names
    known = KNOWN_CLASS_NAMES.get((task, num_classes))
    if known is None:
        listed = ", ".join(f"{n} ({name}, {task_name})" for (task_name, n), (name, _)
                           in KNOWN_CLASS_NAMES.items())
        raise CheckpointMismatch(
            f"{where} has {num_classes} classes, which is none of the class lists known here "
            f"({listed}): pass --class-names FILE with their names, one per line, in the "
            "order of the model's outputs")
    return list(known[1])


def _check_buffers(config, weights: Mapping[str, np.ndarray], bgr: bool, where: str) -> set:
    """Compares the buffers old checkpoints carry (pixel_mean/std, cell anchors) with the
    config; returns their keys."""
    used = set()
    for name in ("pixel_mean", "pixel_std"):
        if name in weights:
            value = np.asarray(weights[name], np.float64).reshape(-1)
            value = value[::-1] if bgr else value
            if not np.allclose(value, config.model[name], atol=1e-3):
                raise CheckpointMismatch(
                    f"{where}: the checkpoint's {name} is {tuple(np.round(value, 3))} (RGB), "
                    f"--config.model.{name} is {tuple(config.model[name])}")
            used.add(name)
    rpn = config.model.get("rpn")  # instance configs
    for key in weights:
        match = _CELL_ANCHORS.match(key)
        if match and rpn is not None:
            level = int(match.group(1))
            want = box_ops.anchors_for_level(1, 1, 2 ** (level + 2),
                                             (rpn.anchor_sizes[level],), rpn.aspect_ratios)
            if weights[key].shape != want.shape or not np.allclose(weights[key], want, atol=1e-3):
                raise CheckpointMismatch(
                    f"{where}: {key} {weights[key].tolist()} are not the anchors of "
                    f"--config.model.rpn.anchor_sizes={tuple(rpn.anchor_sizes)} and "
                    f"aspect_ratios={tuple(rpn.aspect_ratios)} at p{level + 2}")
            used.add(key)
    return used


def import_variables(config: ml_collections.ConfigDict, weights: Mapping[str, np.ndarray],
                     num_classes: int, *, input_format: str = "BGR", where: str = "checkpoint"
                     ) -> Tuple[Any, Dict[str, Any]]:
    """The model `config` describes for `num_classes` classes, and its variables
    `{"params", "batch_stats"}` (numpy float32) filled from detectron2's `weights`.

    Raises CheckpointMismatch naming the first missing, mis-shaped or unexpected tensor (and
    how many more), its shapes and the config key that most likely differs."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    task = validated_task(config)
    weights = rename_legacy(weights)
    structure = _structure_errors(task.name, config, weights)
    if structure:
        raise CheckpointMismatch(f"{where} does not fit the config: " + "; ".join(structure))
    model = task.build_model(config, num_classes)
    shape = tuple(int(s) for s in config.augment.crop_size)
    abstract = jax.eval_shape(lambda r: init_variables(model, r, shape), jax.random.key(0))
    source_of = _Mapping(config, input_format)
    used = _check_buffers(config, weights, input_format == "BGR", where)
    filled, problems = {}, []
    leaves = traverse_util.flatten_dict(abstract)
    for path in sorted(leaves, key=_input_first):
        leaf = leaves[path]
        key, transform, source_shape = source_of(path)
        expected = tuple(source_shape(tuple(leaf.shape)))
        if key not in weights:
            problems.append((key, f"no tensor {key!r} in the checkpoint (the config's model "
                                  f"needs {expected} for {'/'.join(path)})"))
            continue
        array = np.asarray(weights[key])
        if tuple(array.shape) != expected:
            problems.append((key, f"{key!r} has shape {tuple(array.shape)} in the checkpoint, "
                                  f"the config's model needs {expected} ({'/'.join(path)})"))
            continue
        filled[path] = np.ascontiguousarray(transform(array), np.float32)
        used.add(key)
    unexpected = sorted((k for k in weights if k not in used and not _IGNORED.search(k)),
                        key=lambda k: _natural((k,)))
    problems += [(k, f"the checkpoint has {k!r} {tuple(np.shape(weights[k]))}, which the "
                     "config's model does not have") for k in unexpected]
    if problems:
        key, first = problems[0]
        more = f" (and {len(problems) - 1} more, e.g. {problems[1][0]!r})" if len(problems) > 1 \
            else ""
        raise CheckpointMismatch(f"{where} does not fit the config: {first}{more}; the config "
                                 f"key that most likely differs: {config_hint(key)}")
    variables = traverse_util.unflatten_dict(filled)
    return model, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def write_workdir(workdir, config, class_names: Sequence[str], variables, step: int) -> None:
    """`workdir/config.json` and checkpoint `step` in train.py's layout: `variables` with a
    fresh optimizer state of `config`, and the input position of step `step`."""
    checkpointer = Checkpointer(workdir, max_to_keep=config.train.max_to_keep)
    if checkpointer.latest_step() is not None:
        checkpointer.close()
        raise ValueError(f"{checkpointer.directory} already holds checkpoints "
                         f"{list(checkpointer.all_steps())}: import into a new --workdir")
    write_run(workdir, config, class_names)
    tx, _ = make_optimizer(config.optimizer, config.train.num_steps,
                           config.model.backbone.freeze_at)
    params = jax.tree.map(jnp.asarray, variables["params"])
    state = TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                       batch_stats=jax.tree.map(jnp.asarray, variables["batch_stats"]),
                       opt_state=tx.init(params))
    checkpointer.save(step, state, data_position(step, config), force=True)
    checkpointer.wait()
    checkpointer.close()


def import_detectron2_model(model_path: str, config: ml_collections.ConfigDict, workdir,
                            *, class_names_file: Optional[str] = None,
                            input_format: str = "BGR") -> Dict[str, Any]:
    """Converts the detectron2 checkpoint `model_path` for `config` into `workdir` (see the
    module docstring). Returns `{"task", "num_classes", "class_names", "step",
    "num_params"}`."""
    weights, iteration = read_checkpoint(model_path)
    task = validated_task(config)
    where = os.path.basename(model_path)
    num_classes = num_classes_of(task.name, weights, where)
    if config.data.num_classes is not None and config.data.num_classes != num_classes:
        raise CheckpointMismatch(f"{where} has {num_classes} classes, --config.data.num_classes "
                                 f"is {config.data.num_classes}")
    names = class_names_for(task.name, num_classes, class_names_file, where)
    _, variables = import_variables(config, weights, num_classes, input_format=input_format,
                                    where=where)
    write_workdir(workdir, config, names, variables, iteration)
    count = sum(int(np.size(v)) for v in traverse_util.flatten_dict(variables).values())
    return {"task": task.name, "num_classes": num_classes, "class_names": names,
            "step": iteration, "num_params": count}


__all__ = ["CheckpointMismatch", "KNOWN_CLASS_NAMES", "class_names_for", "config_hint",
           "import_detectron2_model", "import_variables", "num_classes_of", "read_checkpoint",
           "rename_legacy", "write_workdir"]
