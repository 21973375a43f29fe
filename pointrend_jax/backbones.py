"""Pretrained ResNet backbones: import torchvision / detectron2 weights, save and merge them.

Weights come from two places, each with its own layout and input normalisation:

- **torchvision** (``resnet50-*.pth``): a state dict with keys ``conv1.weight``,
  ``layer3.5.bn2.running_var`` ...; stride in the 3x3 conv; BatchNorm statistics. Input RGB,
  ``(x - TORCHVISION_PIXEL_MEAN) / TORCHVISION_PIXEL_STD`` on 0..255 pixels.
- **detectron2 MSRA** (``R-50.pkl``, ``R-101.pkl``, the weights of d2's PointRend configs): a
  pickled dict of caffe2 blobs (``conv1_w``, ``res_conv1_bn_s``, ``res4_22_branch2c_bn_b`` ...),
  stride in the first 1x1 conv, frozen BN reduced to a scale and a bias. caffe2 fed **BGR**
  images; :func:`resnet_from_detectron2` reverses the input channels of ``conv1`` so the
  converted backbone takes **RGB** like everything else here. It then needs
  ``DETECTRON2_PIXEL_MEAN`` (d2's BGR mean ``[103.530, 116.280, 123.675]`` written in RGB order)
  and ``DETECTRON2_PIXEL_STD = (1, 1, 1)``: the raw 0..255 scale, not torchvision's.
- **detectron2 FAIR** (``X-101-32x8d.pkl``, the ResNeXt of d2's X-101 configs): the same caffe2
  blob names and frozen-BN scale/bias, BGR input too, but trained by FAIR with the stride in the
  3x3 conv (d2's ``STRIDE_IN_1X1: False``) and ImageNet's std not absorbed into conv1:
  ``DETECTRON2_FAIR_PIXEL_STD`` (d2's BGR ``[57.375, 57.120, 58.395]`` in RGB order).

ResNeXt weights (grouped 3x3 convs) are recognised by their shapes in every format: the
first bottleneck's 1x1 reduce gives the inner width, its 3x3 the channels per group, and the
module gets the matching ``num_groups``/``width_per_group``.

Both converters return ``(module, variables)``: a linen :class:`ResNet` with
``norm="frozen_bn"`` and ``{"params": convs, "batch_stats": BN scale/bias/mean/var}``.
:func:`save_backbone` writes them with a JSON meta entry (depth, width, stride_in_1x1,
normalisation) to an ``.npz`` that :func:`load_backbone` reads without torch, and
:func:`merge_pretrained` puts them into a full model's trees at ``("net", "backbone")``.

Names are checked one to one in both directions: a missing, unexpected or mis-shaped weight
is a ``ValueError`` naming the key as the source file spells it.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pointrend_jax.models.layers import IMAGENET_MEAN, IMAGENET_STD, NORM_EPS
from pointrend_jax.models.resnet import STAGES, ResNet

Tree = Mapping[str, Any]
PathLike = str | os.PathLike

TORCHVISION_PIXEL_MEAN = IMAGENET_MEAN  # RGB on 0..255
TORCHVISION_PIXEL_STD = IMAGENET_STD
DETECTRON2_PIXEL_MEAN = (123.675, 116.28, 103.53)  # d2's BGR [103.530, 116.280, 123.675], as RGB
DETECTRON2_PIXEL_STD = (1.0, 1.0, 1.0)
DETECTRON2_FAIR_PIXEL_STD = (58.395, 57.12, 57.375)  # d2's BGR [57.375, 57.120, 58.395], as RGB
# weights format -> (pixel_mean, pixel_std, stride_in_1x1) of the converted RGB backbone
WEIGHT_FORMATS = {
    "torchvision": (TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD, False),
    "detectron2": (DETECTRON2_PIXEL_MEAN, DETECTRON2_PIXEL_STD, True),
    "detectron2_fair": (DETECTRON2_PIXEL_MEAN, DETECTRON2_FAIR_PIXEL_STD, False),
}
META_KEY = "__meta__"
META_FIELDS = ("depth", "width", "stride_in_1x1", "source", "pixel_mean", "pixel_std",
               "input_format")
# meta fields added later, with the value files written before them mean (plain ResNet)
META_DEFAULTS = {"num_groups": 1, "width_per_group": 64}
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------
# Shared machinery: our leaf paths <-> source keys, checked both ways.
# ----------------------------------------------------------------------------------------

# A leaf of our variables: ("params" | "batch_stats", module path..., leaf name).
LeafPath = tuple[str, ...]
# How one of our leaves is filled: (source key, transform of its array), or (None, constant)
# for a leaf the format does not store (the mean / var of caffe2's frozen BN).
Source = tuple[str, Callable[[np.ndarray], np.ndarray]] | tuple[None, float]


def _flatten(tree: Tree, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested mapping -> ``{path tuple: leaf}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like -> numpy array (torch is never imported here)."""
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # numpy has no bfloat16
        value = value.numpy()
    return np.asarray(value)


def _kernel_from_oihw(array: np.ndarray) -> np.ndarray:
    return array.transpose(2, 3, 1, 0)  # torch/caffe2 (O, I, kh, kw) -> flax (kh, kw, I, O)


def _vector(array: np.ndarray) -> np.ndarray:
    return array


def _block_layout(keys, pattern: re.Pattern, first_stage: int, kind_key: str):
    """``(block kind, blocks per stage)`` read off the keys.

    ``pattern`` matches a block key with groups (stage, block index), stages numbered from
    ``first_stage`` (torchvision layer1..4: 1, caffe2 res2..5: 2); a stage's count is its
    largest index + 1, so one missing weight does not change the layout. The blocks are
    bottlenecks when ``kind_key`` (a third conv of the first block) is present.
    """
    counts = [0, 0, 0, 0]
    for key in keys:
        m = pattern.match(key)
        if m and 0 <= int(m.group(1)) - first_stage < 4:
            stage = int(m.group(1)) - first_stage
            counts[stage] = max(counts[stage], int(m.group(2)) + 1)
    return ("bottleneck" if kind_key in keys else "basic"), tuple(counts)


def _depth_from_layout(kind: str, counts: tuple[int, ...]) -> int | None:
    for depth, layout in STAGES.items():
        if layout == (kind, counts):
            return depth
    return None


def _resolve_depth(depth: int | None, kind: str, counts: tuple[int, ...], what: str,
                   example_key: Callable[[int, int], str]) -> int:
    """Check ``depth`` against the layout the weights have (or infer it when ``None``)."""
    found = _depth_from_layout(kind, counts)
    if depth is not None and depth not in STAGES:
        raise ValueError(f"{what}: depth={depth!r} is not one of {tuple(STAGES)}")
    if not any(counts):
        raise ValueError(f"{what}: no ResNet block keys such as {example_key(1, 0)!r} in the "
                         f"weights; is this the right format?")
    if found is None:
        raise ValueError(
            f"{what}: the weights have {kind} blocks {counts} per stage, which is no ResNet of "
            f"depth {tuple(STAGES)} (expected e.g. {STAGES[50]} for ResNet-50)"
            + (f"; asked for depth={depth} = {STAGES[depth]}" if depth else ""))
    if depth is not None and depth != found:
        want_kind, want_counts = STAGES[depth]
        hint = ""
        for stage, (have, want) in enumerate(zip(counts, want_counts)):
            if have < want:
                hint = f" (e.g. no {example_key(stage + 1, have)!r})"
                break
        raise ValueError(
            f"{what}: depth={depth} but the weights look like ResNet-{found} "
            f"({kind} blocks {counts} per stage; ResNet-{depth} has {want_kind} blocks "
            f"{want_counts}){hint}")
    return found


def _grouping(weights: Mapping[str, np.ndarray], kind: str, reduce_key: str, grouped_key: str,
              width: int, what: str) -> tuple[int, int]:
    """``(num_groups, width_per_group)`` of the weights, read off the first bottleneck: its 1x1
    reduce ``reduce_key`` has the inner width (output channels), its 3x3 ``grouped_key`` the
    inner width / groups input channels. ``(1, 64)`` for basic blocks; a missing key is left
    to :func:`_assemble` to report."""
    if kind != "bottleneck" or reduce_key not in weights or grouped_key not in weights:
        return 1, 64
    inner, per_group = weights[reduce_key].shape[0], weights[grouped_key].shape[1]
    if inner % per_group:
        raise ValueError(f"{what}: {grouped_key!r} has {per_group} input channels per group, "
                         f"which does not divide the {inner} channels of {reduce_key!r}")
    groups = inner // per_group
    width_per_group = inner * 64 // (width * groups)
    if int(width * (width_per_group / 64.0)) * groups != inner:
        raise ValueError(f"{what}: {inner} inner channels in {groups} groups ({reduce_key!r}) "
                         f"are no ResNeXt layout of width {width}")
    return groups, width_per_group


def _check_width(width: int | None, found: int, key: str, what: str) -> int:
    if width is not None and width != found:
        raise ValueError(f"{what}: width={width} but {key!r} has {found} output channels; "
                         f"leave width=None to take it from the weights")
    return found


def _assemble(
    weights: Mapping[str, np.ndarray],
    module: ResNet,
    source_of: Callable[[LeafPath], Source],
    ignored: Callable[[str], bool],
    what: str,
) -> dict[str, Any]:
    """Fill ``module``'s variables from ``weights`` through ``source_of``; check every key.

    Every leaf of ``module`` must find its source key, and every key of ``weights`` must be
    used or ``ignored``; shapes are compared in the source's own layout before transforms.
    """
    abstract = jax.eval_shape(module.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    flat = {}
    used = set()
    for path, leaf in sorted(_flatten(abstract).items(), key=lambda item: _natural(item[0])):
        key, transform = source_of(path)
        if key is None:
            flat[path] = np.full(leaf.shape, transform, np.float32)
            continue
        if key not in weights:
            raise ValueError(f"{what}: missing key {key!r} (needed for {'/'.join(path)} of "
                             f"ResNet-{module.depth}, width {module.width})")
        array = weights[key]
        # compare in the source's layout: (O, I, kh, kw) convs, (C,) norms
        expected = leaf.shape
        if path[-1] == "kernel":
            expected = tuple(leaf.shape[i] for i in (3, 2, 0, 1))
        if tuple(array.shape) != tuple(expected):
            raise ValueError(f"{what}: key {key!r} has shape {tuple(array.shape)}, expected "
                             f"{tuple(expected)} for ResNet-{module.depth}, width {module.width}")
        flat[path] = np.ascontiguousarray(transform(array), np.float32)
        used.add(key)
    unexpected = sorted(k for k in weights if k not in used and not ignored(k))
    if unexpected:
        raise ValueError(f"{what}: unexpected key {unexpected[0]!r} for ResNet-{module.depth}"
                         + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    return _unflatten(flat)


# ----------------------------------------------------------------------------------------
# torchvision
# ----------------------------------------------------------------------------------------

_TV_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")
_TV_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torchvision_source(path: LeafPath) -> Source:
    """Our leaf -> torchvision key, e.g. ``("batch_stats", "layer1_0", "downsample_bn", "mean")``
    -> ``"layer1.0.downsample.1.running_mean"``."""
    _, *modules, leaf = path
    names = []
    for m in modules:
        block = re.fullmatch(r"layer(\d+)_(\d+)", m)
        if block:
            names.append(f"layer{block.group(1)}.{block.group(2)}")
        else:
            names.append({"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
                         .get(m, m))
    if leaf == "kernel":
        return ".".join(names + ["weight"]), _kernel_from_oihw
    return ".".join(names + [_TV_BN[leaf]]), _vector


def _torchvision_ignored(key: str) -> bool:
    return key.startswith("fc.") or key.endswith(".num_batches_tracked")


def resnet_from_torchvision(
    state_dict: Mapping[str, Any],
    depth: int | None = None,
    *,
    width: int | None = None,
    output_stride: int = 32,
) -> tuple[ResNet, dict[str, Any]]:
    """A torchvision ResNet-18/34/50/101/152 (or ResNeXt) state dict -> ``(ResNet module,
    variables)``.

    ``state_dict`` maps names to torch tensors or numpy arrays (``fc.*`` and
    ``num_batches_tracked`` are ignored). ``depth`` and ``width`` are read off the weights
    when ``None`` and checked against them otherwise, the grouping always. The module is
    ``ResNet(depth, width, norm="frozen_bn", output_stride, num_groups, width_per_group)``;
    applied to RGB images
    normalised as torchvision does (``TORCHVISION_PIXEL_MEAN/STD`` on 0..255) it returns
    ``res2..res5`` equal to torchvision's ``layer1..layer4`` in eval mode.
    """
    what = "resnet_from_torchvision"
    weights = {k: _to_numpy(v) for k, v in state_dict.items()
               if not k.endswith("num_batches_tracked")}
    kind, counts = _block_layout(weights, _TV_BLOCK, 1, "layer1.0.conv3.weight")
    depth = _resolve_depth(depth, kind, counts, what, lambda s, i: f"layer{s}.{i}.conv1.weight")
    if "conv1.weight" not in weights:
        raise ValueError(f"{what}: missing key 'conv1.weight' (the stem convolution)")
    width = _check_width(width, weights["conv1.weight"].shape[0], "conv1.weight", what)
    groups, width_per_group = _grouping(weights, kind, "layer1.0.conv1.weight",
                                        "layer1.0.conv2.weight", width, what)
    module = ResNet(depth=depth, width=width, norm="frozen_bn", output_stride=output_stride,
                    num_groups=groups, width_per_group=width_per_group)
    return module, _assemble(weights, module, _torchvision_source, _torchvision_ignored, what)


# ----------------------------------------------------------------------------------------
# detectron2 / caffe2 MSRA
# ----------------------------------------------------------------------------------------
# caffe2 names (detectron2 renames them with "_" -> "." plus a few substitutions):
#   stem        conv1_w, res_conv1_bn_{s,b}
#   block       res{2..5}_{i}_branch2{a,b,c}_w, ..._branch2{a,b,c}_bn_{s,b}
#   shortcut    res{2..5}_{i}_branch1_w, res{2..5}_{i}_branch1_bn_{s,b}
# branch2a/2b/2c are the 1x1 / 3x3 / 1x1 convs (the two 3x3s of a basic block), branch1 the
# projection shortcut; "_bn_s"/"_bn_b" the frozen BN's scale and bias (no statistics).

_C2_BLOCK = re.compile(r"^res(\d+)_(\d+)_")
_C2_CONV = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c",
            "downsample_conv": "branch1"}
_C2_NORM = {"bn1": "branch2a", "bn2": "branch2b", "bn3": "branch2c", "downsample_bn": "branch1"}
# The classifier, optimiser state, and conv1_b: the MSRA stem conv carries a bias of ~1e-9
# noise that detectron2 does not load either (its stem conv has none).
_C2_IGNORED = re.compile(r"^(fc1000|pred)_[wb]$|^conv1_b$|_momentum$")


def _stage_block_c2(s: int, i: int, branch: str) -> str:
    """Our stage ``s`` (1..4, torchvision's layer{s}) is caffe2's ``res{s + 1}``."""
    return f"res{s + 1}_{i}_{branch}"


def _bgr_to_rgb_kernel(array: np.ndarray) -> np.ndarray:
    # caffe2 fed BGR: reversing conv1's input channels makes the same filter read RGB.
    return _kernel_from_oihw(array[:, ::-1])


def _detectron2_source(path: LeafPath) -> Source:
    _, *modules, leaf = path
    if modules == ["conv1"]:
        return "conv1_w", _bgr_to_rgb_kernel
    if modules == ["bn1"]:
        prefix = "res_conv1_bn"
    else:
        block, layer = modules
        m = re.fullmatch(r"layer(\d+)_(\d+)", block)
        s, i = int(m.group(1)), int(m.group(2))
        if leaf == "kernel":
            return _stage_block_c2(s, i, _C2_CONV[layer]) + "_w", _kernel_from_oihw
        prefix = _stage_block_c2(s, i, _C2_NORM[layer]) + "_bn"
    if leaf == "mean":
        return None, 0.0
    if leaf == "var":
        # (x - 0) / sqrt(var + eps) * s + b must be exactly x * s + b: var + eps == 1 in
        # float32 (detectron2's FrozenBatchNorm2d starts from the same 1 - eps).
        return None, 1.0 - NORM_EPS
    return f"{prefix}_{'s' if leaf == 'scale' else 'b'}", _vector


def read_detectron2_pickle(pkl_path_or_dict: PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The caffe2 blobs of a detectron2 ImageNet pickle (or of an already-loaded dict).

    Accepts the raw blob dict of ``R-50.pkl``, detectron2's ``{"model": blobs, "__author__":
    ...}`` wrapper and Detectron1's ``{"blobs": blobs}``; ``*_momentum`` blobs are dropped
    later as ignored. Python-2 pickles are read with ``encoding="latin1"``.
    """
    data = pkl_path_or_dict
    if not isinstance(data, Mapping):
        with open(data, "rb") as f:
            data = pickle.load(f, encoding="latin1")
        if not isinstance(data, Mapping):
            raise ValueError(f"{os.fspath(pkl_path_or_dict)}: not a pickled dict of caffe2 "
                             f"blobs (got {type(data).__name__})")
    for wrapper in ("model", "blobs"):
        if wrapper in data and isinstance(data[wrapper], Mapping):
            data = data[wrapper]
            break
    return {str(k): _to_numpy(v) for k, v in data.items()}


def resnet_from_detectron2(
    pkl_path_or_dict: PathLike | Mapping[str, Any],
    depth: int | None = None,
    *,
    output_stride: int = 32,
    stride_in_1x1: bool = True,
) -> tuple[ResNet, dict[str, Any]]:
    """A detectron2 caffe2 ImageNet pickle (MSRA ``R-50.pkl``, ``R-101.pkl``; FAIR
    ``X-101-32x8d.pkl`` with ``stride_in_1x1=False``) -> ``(module, variables)``.

    The module is ``ResNet(depth, width, norm="frozen_bn", stride_in_1x1, output_stride,
    num_groups, width_per_group)``, the grouping read off the blobs (32 x 8 for X-101-32x8d);
    frozen BN is stored with mean 0 and var ``1 - eps`` so it is exactly ``x * s + b``.
    conv1's input channels are reversed: the module takes **RGB** images normalised with
    ``DETECTRON2_PIXEL_MEAN`` (RGB order) and ``DETECTRON2_PIXEL_STD = (1, 1, 1)`` (MSRA) or
    ``DETECTRON2_FAIR_PIXEL_STD`` (FAIR), and then equals detectron2's backbone fed the same
    picture as BGR with d2's BGR mean and std.
    ``depth`` (and the width) are read off the blobs when ``None``; ``fc1000_*``/``pred_*``,
    ``conv1_b`` and ``*_momentum`` blobs are ignored, as detectron2 ignores them. Blobs with
    BN statistics (``*_bn_rm``/``*_bn_riv``) are not MSRA's layout and are rejected.
    """
    name = ("resnet_from_detectron2" if isinstance(pkl_path_or_dict, Mapping)
            else f"resnet_from_detectron2({os.fspath(pkl_path_or_dict)!r})")
    weights = read_detectron2_pickle(pkl_path_or_dict)
    kind, counts = _block_layout(weights, _C2_BLOCK, 2, "res2_0_branch2c_w")
    depth = _resolve_depth(depth, kind, counts, name,
                           lambda s, i: _stage_block_c2(s, i, "branch2a_w"))
    if "conv1_w" not in weights:
        raise ValueError(f"{name}: missing key 'conv1_w' (the stem convolution)")
    width = weights["conv1_w"].shape[0]
    groups, width_per_group = _grouping(weights, kind, _stage_block_c2(1, 0, "branch2a_w"),
                                        _stage_block_c2(1, 0, "branch2b_w"), width, name)
    module = ResNet(depth=depth, width=width, norm="frozen_bn", output_stride=output_stride,
                    stride_in_1x1=stride_in_1x1, num_groups=groups,
                    width_per_group=width_per_group)
    return module, _assemble(weights, module, _detectron2_source,
                             lambda k: bool(_C2_IGNORED.search(k)), name)


# ----------------------------------------------------------------------------------------
# detectron2 trained models: the ResNet inside a model's state dict
# ----------------------------------------------------------------------------------------
# A trained detectron2 model (a model zoo .pkl, or the .pth its training writes) holds its
# ResNet under "backbone.bottom_up." with PyTorch module names: stem.conv1, res{2..5}.{i}.
# conv{1,2,3} and res{2..5}.{i}.shortcut, each with its norm under ".norm" (FrozenBatchNorm2d
# or BatchNorm2d: weight, bias, running_mean, running_var; GroupNorm: weight, bias). Its stem
# reads BGR images (INPUT.FORMAT "BGR", every PointRend zoo model), so conv1's input channels
# are reversed as for the MSRA pickles.

_D2_MODEL_MODULES = {"conv1": "conv1", "bn1": "conv1.norm", "conv2": "conv2",
                     "bn2": "conv2.norm", "conv3": "conv3", "bn3": "conv3.norm",
                     "downsample_conv": "shortcut", "downsample_bn": "shortcut.norm"}
_D2_MODEL_NORM_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean",
                         "var": "running_var"}


def detectron2_model_resnet_source(path: tuple[str, ...], *, bgr: bool = True
                                   ) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """Our :class:`ResNet` leaf ``path`` below the backbone (module names, then the leaf:
    ``("layer3_5", "bn2", "mean")``) -> ``(its name in a detectron2 ResNet's state dict,
    "res4.5.conv2.norm.running_mean", the transform of that array into our layout)``: conv
    kernels (O, I, kh, kw) -> (kh, kw, I, O), the stem's input channels BGR -> RGB when
    ``bgr``, norm vectors unchanged."""
    *modules, leaf = path
    if modules[0] in ("conv1", "bn1"):
        name = "stem." + _D2_MODEL_MODULES[modules[0]]
    else:
        block = re.fullmatch(r"layer(\d+)_(\d+)", modules[0])
        if block is None or len(modules) != 2:
            raise ValueError(f"detectron2_model_resnet_source: {'/'.join(path)} is no ResNet leaf")
        name = (f"res{int(block.group(1)) + 1}.{block.group(2)}."
                + _D2_MODEL_MODULES[modules[1]])
    if leaf == "kernel":
        stem = modules == ["conv1"] and bgr
        return name + ".weight", (_bgr_to_rgb_kernel if stem else _kernel_from_oihw)
    return f"{name}.{_D2_MODEL_NORM_LEAVES[leaf]}", _vector


# ----------------------------------------------------------------------------------------
# File format and merging into a model
# ----------------------------------------------------------------------------------------


def backbone_meta(module: ResNet, weights_format: str, source: str) -> dict[str, Any]:
    """The meta entry describing ``module``'s converted weights from ``weights_format``."""
    if weights_format not in WEIGHT_FORMATS:
        raise ValueError(f"weights_format={weights_format!r} is not one of {tuple(WEIGHT_FORMATS)}")
    mean, std, _ = WEIGHT_FORMATS[weights_format]
    return {"depth": module.depth, "width": module.width, "stride_in_1x1": module.stride_in_1x1,
            "num_groups": module.num_groups, "width_per_group": module.width_per_group,
            "source": source, "pixel_mean": list(mean), "pixel_std": list(std),
            "input_format": "RGB"}


def _check_meta(meta: Mapping[str, Any], where: str) -> None:
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise ValueError(f"{where}: backbone meta lacks {missing} (needs {list(META_FIELDS)})")
    if meta["input_format"] not in ("RGB", "BGR"):
        raise ValueError(f"{where}: meta input_format must be 'RGB' or 'BGR', "
                         f"got {meta['input_format']!r}")


def save_backbone(path: PathLike, variables: Tree, meta: Mapping[str, Any]) -> None:
    """Write ``variables`` (``{"params", "batch_stats"}``) and ``meta`` to an ``.npz`` at ``path``.

    Arrays are stored float32 under '/'-joined keys (``"params/layer1_0/conv1/kernel"``);
    ``meta`` (see ``META_FIELDS``) as a JSON string under ``"__meta__"``. Reading it back needs
    only numpy (:func:`load_backbone`).
    """
    where = os.fspath(path)
    _check_meta(meta, where)
    arrays = {"/".join(k): np.asarray(v, np.float32) for k, v in _flatten(variables).items()}
    meta = {**meta, "format_version": FORMAT_VERSION}
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **arrays)


def load_backbone(path: PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`save_backbone` -> ``(variables, meta)`` (numpy leaves);
    fields a file predates get their ``META_DEFAULTS``."""
    where = os.fspath(path)
    with np.load(path, allow_pickle=False) as npz:
        if META_KEY not in npz.files:
            raise ValueError(f"{where}: not a converted backbone (no {META_KEY!r} entry); "
                             f"write one with `python -m pointrend_jax.convert`")
        meta = {**META_DEFAULTS, **json.loads(str(npz[META_KEY]))}
        flat = {tuple(k.split("/")): npz[k] for k in npz.files if k != META_KEY}
    _check_meta(meta, where)
    return _unflatten(flat), meta


def num_parameters(variables: Tree) -> int:
    """Number of scalars in ``variables["params"]`` (the trainable convs of a frozen-BN ResNet)."""
    return int(sum(np.size(v) for v in _flatten(variables.get("params", {})).values()))


def _subtree(tree: Tree, prefix: tuple[str, ...], name: str) -> Tree:
    node = tree
    for i, key in enumerate(prefix):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"merge_pretrained: the model's {name} have no "
                             f"{''.join(f'[{k!r}]' for k in prefix[:i + 1])} "
                             f"(prefix={prefix!r})")
        node = node[key]
    return node


def _replace(tree: Tree, prefix: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` (dicts along ``prefix`` only) with ``tree[prefix]`` = ``value``."""
    if not prefix:
        return value
    out = dict(tree)
    out[prefix[0]] = _replace(tree[prefix[0]], prefix[1:], value)
    return out


def merge_pretrained(
    params: Tree,
    batch_stats: Tree | None,
    backbone_variables: Tree | PathLike,
    *,
    prefix: tuple[str, ...] = ("net", "backbone"),
    source: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Replace the backbone sub-trees of a model's ``params``/``batch_stats`` with pretrained ones.

    ``backbone_variables``: ``{"params", "batch_stats"}`` from a converter or
    :func:`load_backbone`, or the path of a converted file (loaded here). ``source`` names it
    in errors (defaults to the path). Leaves are matched by their path below ``prefix``,
    whichever collection the file put them in, so frozen-BN weights also fill a ``norm="bn"``
    backbone (scale/bias in "params", mean/var in "batch_stats"). Each value is cast to the
    model leaf's dtype. Every model leaf must be filled and every file leaf used, with equal
    shapes; otherwise a ``ValueError`` names the file and the first mismatching key.
    Returns new ``(params, batch_stats)``; the inputs are not modified.
    """
    meta = None
    if not isinstance(backbone_variables, Mapping):
        source = source or os.fspath(backbone_variables)
        backbone_variables, meta = load_backbone(backbone_variables)
    source = source or "pretrained backbone"
    described = (f" (ResNet-{meta['depth']}, width {meta['width']})" if meta else "")
    prefix = tuple(prefix)

    available = {}
    for collection in ("params", "batch_stats"):
        for path, value in _flatten(backbone_variables.get(collection, {})).items():
            available[path] = value
    targets = {"params": _flatten(_subtree(params, prefix, "params"))}
    if batch_stats is not None and _has_path(batch_stats, prefix):
        targets["batch_stats"] = _flatten(_subtree(batch_stats, prefix, "batch_stats"))

    def fail(detail):
        raise ValueError(f"merge_pretrained: {source}{described} does not fit the model at "
                         f"{'/'.join(prefix)}: {detail}")

    merged = {}
    used = set()
    for collection, leaves in targets.items():
        merged[collection] = {}
        for path, leaf in sorted(leaves.items(), key=lambda item: _natural(item[0])):
            key = "/".join(path)
            if path not in available:
                fail(f"the model has {collection} {key!r} {tuple(leaf.shape)}, the file does not")
            value = available[path]
            if tuple(np.shape(value)) != tuple(leaf.shape):
                fail(f"{key!r} has shape {tuple(np.shape(value))} in the file, "
                     f"{tuple(leaf.shape)} in the model")
            merged[collection][path] = jnp.asarray(value, dtype=leaf.dtype)
            used.add(path)
    extra = sorted((p for p in available if p not in used), key=_natural)
    if extra:
        fail(f"the file has {'/'.join(extra[0])!r} {tuple(np.shape(available[extra[0]]))}, "
             f"the model does not (a different depth or norm?)")

    new_params = _replace(params, prefix, _unflatten(merged["params"]))
    new_stats = batch_stats
    if "batch_stats" in merged:
        new_stats = _replace(batch_stats, prefix, _unflatten(merged["batch_stats"]))
    return new_params, new_stats


def _natural(path: tuple[str, ...]) -> tuple:
    """Sort key putting ``layer3_6`` before ``layer3_10``, so errors name the first block."""
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p))
                 for p in path)


def _has_path(tree: Tree, prefix: tuple[str, ...]) -> bool:
    node = tree
    for key in prefix:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


__all__ = [
    "DETECTRON2_FAIR_PIXEL_STD",
    "DETECTRON2_PIXEL_MEAN",
    "DETECTRON2_PIXEL_STD",
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
    "WEIGHT_FORMATS",
    "backbone_meta",
    "detectron2_model_resnet_source",
    "load_backbone",
    "merge_pretrained",
    "num_parameters",
    "read_detectron2_pickle",
    "resnet_from_detectron2",
    "resnet_from_torchvision",
    "save_backbone",
]
