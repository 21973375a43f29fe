"""Convert pretrained ResNet weights into pointrend-jax's backbone file (an ``.npz``).

    python -m pointrend_jax.convert SRC DST [--depth D]
        [--format torchvision|detectron2|detectron2_fair]

SRC is a torchvision checkpoint (``.pth``/``.pt``: a state dict, read with
``torch.load(map_location="cpu", weights_only=True)``) or a detectron2 caffe2 ImageNet pickle
(``.pkl``: MSRA's ``R-50.pkl``, ``R-101.pkl``; FAIR's ResNeXt ``X-101-32x8d.pkl`` needs
``--format detectron2_fair``); ``--format`` overrides the guess from the suffix.
The depth is read off the weights unless ``--depth`` is given (then it is checked). DST is
written by :func:`pointrend_jax.backbones.save_backbone` and read at train time with numpy
alone. torch is needed for ``.pth`` files only, and imported only then.

A whole trained detectron2 model (PointRend, semantic or instance, Implicit PointRend, or a
Mask R-CNN baseline) becomes a run directory instead (`pointrend_jax.detectron2_models`):

    python -m pointrend_jax.convert MODEL --config CONFIG --workdir OUT [--class-names FILE]
        [--input-format BGR|RGB] [--config.KEY=VALUE ...]

The converted backbone always takes RGB images; the printed pixel mean/std (RGB order, on
0..255 pixels) are what ``config.model.pixel_mean/pixel_std`` must be for these weights, and
``stride_in_1x1`` (and a ResNeXt's ``num_groups``/``width_per_group``) what the
``config.model.backbone`` keys of the same names must be.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from typing import Any, Mapping, Sequence

from pointrend_jax import backbones, detectron2_models
from pointrend_jax.config import load_config

_SUFFIX_FORMAT = {".pkl": "detectron2", ".pth": "torchvision", ".pt": "torchvision"}


def guess_format(path: str) -> str | None:
    """``"detectron2"`` for ``.pkl``, ``"torchvision"`` for ``.pth``/``.pt``, else ``None``."""
    return _SUFFIX_FORMAT.get(os.path.splitext(path)[1].lower())


def load_torch_state_dict(path: str) -> Mapping[str, Any]:
    """A torchvision checkpoint's state dict (unwrapping a ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper), loaded on CPU without unpickling arbitrary objects."""
    try:
        import torch
    except ImportError as e:  # torch is a conversion-time dependency only
        raise RuntimeError(
            f"reading {path!r} (a torchvision checkpoint) needs PyTorch: "
            f"pip install torch (CPU build is enough), or convert on a machine that has it"
        ) from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def convert(src: str, dst: str, *, depth: int | None = None,
            weights_format: str | None = None) -> dict[str, Any]:
    """Convert ``src`` to ``dst``; returns the meta written (plus ``"num_params"``)."""
    weights_format = weights_format or guess_format(src)
    if weights_format is None:
        raise ValueError(f"{src}: cannot tell the format from the suffix; pass --format "
                         f"{'|'.join(backbones.WEIGHT_FORMATS)}")
    if weights_format == "torchvision":
        module, variables = backbones.resnet_from_torchvision(load_torch_state_dict(src), depth)
    elif weights_format in ("detectron2", "detectron2_fair"):
        module, variables = backbones.resnet_from_detectron2(
            src, depth, stride_in_1x1=backbones.WEIGHT_FORMATS[weights_format][2])
        if weights_format == "detectron2" and module.num_groups > 1:
            raise ValueError(f"{src} is a caffe2 ResNeXt ({module.num_groups} groups): "
                             "detectron2's are FAIR's (X-101-32x8d.pkl), trained with the stride "
                             "in the 3x3 conv and ImageNet's std; pass --format detectron2_fair")
    else:
        raise ValueError(f"--format must be one of {'|'.join(backbones.WEIGHT_FORMATS)}, got "
                         f"{weights_format!r}")
    meta = backbones.backbone_meta(module, weights_format,
                                   source=f"{weights_format}:{os.path.basename(src)}")
    backbones.save_backbone(dst, variables, meta)
    return {**meta, "num_params": backbones.num_parameters(variables)}


def _numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pointrend_jax.convert",
        description="Convert torchvision (.pth) or detectron2 MSRA/FAIR (.pkl) ResNet or "
                    "ResNeXt weights into a pointrend-jax backbone file (.npz).")
    parser.add_argument("src", help="torchvision .pth/.pt state dict or detectron2 .pkl; with "
                        "--config and --workdir: a trained detectron2 model (.pkl or .pth)")
    parser.add_argument("dst", nargs="?", help="output file (.npz)")
    whole = parser.add_argument_group(
        "a whole trained detectron2 model (PointRend or Mask R-CNN) into a run directory")
    whole.add_argument("--config", help="the config describing the model, FILE[:ARG]; "
                       "--config.KEY=VALUE overrides a key")
    whole.add_argument("--workdir", help="the run directory to write")
    whole.add_argument("--class-names", dest="class_names",
                       help="file of the class names, one per line (COCO's 80, "
                            "Cityscapes' 8 instance and 19 semantic classes are known)")
    whole.add_argument("--input-format", dest="input_format", default="BGR",
                       choices=detectron2_models.INPUT_FORMATS,
                       help="the channel order the model was trained on (INPUT.FORMAT; "
                            "default %(default)s, every detectron2 zoo model)")
    parser.add_argument("--depth", type=int, default=None,
                        help="ResNet depth (18/34/50/101/152); read off the weights if omitted")
    parser.add_argument("--format", dest="weights_format", default=None,
                        choices=tuple(backbones.WEIGHT_FORMATS),
                        help="source layout; guessed from the suffix if omitted")
    args, rest = parser.parse_known_args(argv)
    if args.config or args.workdir:
        return _import_model(parser, args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.dst is None:
        parser.error("give DST (a backbone file), or --config and --workdir (a whole model)")
    if args.weights_format is None and guess_format(args.src) is None:
        parser.error(f"cannot tell the format of {args.src!r} from its suffix; "
                     f"pass --format {'|'.join(backbones.WEIGHT_FORMATS)}")
    try:
        meta = convert(args.src, args.dst, depth=args.depth, weights_format=args.weights_format)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    grouping = (f", num_groups={meta['num_groups']}, width_per_group={meta['width_per_group']}"
                if meta["num_groups"] > 1 else "")
    print(f"wrote {args.dst}: ResNet-{meta['depth']}, width {meta['width']}, "
          f"{meta['num_params']:,} params, stride_in_1x1={meta['stride_in_1x1']}{grouping}, "
          f"from {meta['source']}\n"
          f"these weights take {meta['input_format']} images on 0..255 normalised with "
          f"pixel_mean={_numbers(meta['pixel_mean'])} pixel_std={_numbers(meta['pixel_std'])}")
    return 0


def _override(config, assignment: str) -> None:
    """Applies `--config.KEY=VALUE` to `config` (VALUE a Python literal, else a string)."""
    key, sep, text = assignment[len("--config."):].partition("=")
    if not sep:
        raise ValueError(f"{assignment}: write --config.KEY=VALUE")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *groups, leaf = key.split(".")
    node = config
    for group in groups:
        node = node[group]
    if leaf not in node:
        raise ValueError(f"--config.{key}: the config has no such key")
    node[leaf] = value


def _import_model(parser, args, overrides: Sequence[str]) -> int:
    """`python -m pointrend_jax.convert MODEL --config CONFIG --workdir OUT`."""
    if not (args.config and args.workdir):
        parser.error("importing a detectron2 model needs both --config and --workdir")
    if args.dst is not None or args.depth is not None or args.weights_format is not None:
        parser.error("DST, --depth and --format are for backbone files; a whole model takes "
                     "MODEL --config CONFIG --workdir OUT")
    bad = [a for a in overrides if not a.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    start = time.perf_counter()
    try:
        config = load_config(args.config)
        for assignment in overrides:
            _override(config, assignment)
        info = detectron2_models.import_detectron2_model(
            args.src, config, args.workdir, class_names_file=args.class_names,
            input_format=args.input_format)
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.workdir}: a {info['task']} model with {info['num_classes']} classes, "
          f"{info['num_params']:,} weights, checkpoint step {info['step']}, from {args.src} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
