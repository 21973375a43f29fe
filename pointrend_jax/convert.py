"""Convert pretrained ResNet weights into pointrend-jax's backbone file (an ``.npz``).

    python -m pointrend_jax.convert SRC DST [--depth D] [--format torchvision|detectron2]

SRC is a torchvision checkpoint (``.pth``/``.pt``: a state dict, read with
``torch.load(map_location="cpu", weights_only=True)``) or a detectron2 MSRA ImageNet pickle
(``.pkl``: ``R-50.pkl``, ``R-101.pkl``); ``--format`` overrides the guess from the suffix.
The depth is read off the weights unless ``--depth`` is given (then it is checked). DST is
written by :func:`pointrend_jax.backbones.save_backbone` and read at train time with numpy
alone. torch is needed for ``.pth`` files only, and imported only then.

The converted backbone always takes RGB images; the printed pixel mean/std (RGB order, on
0..255 pixels) are what ``config.model.pixel_mean/pixel_std`` must be for these weights, and
``stride_in_1x1`` what ``config.model.backbone.stride_in_1x1`` must be.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Mapping, Sequence

from pointrend_jax import backbones

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
                         f"torchvision|detectron2")
    if weights_format == "torchvision":
        module, variables = backbones.resnet_from_torchvision(load_torch_state_dict(src), depth)
    elif weights_format == "detectron2":
        module, variables = backbones.resnet_from_detectron2(src, depth)
    else:
        raise ValueError(f"--format must be torchvision or detectron2, got {weights_format!r}")
    meta = backbones.backbone_meta(module, weights_format,
                                   source=f"{weights_format}:{os.path.basename(src)}")
    backbones.save_backbone(dst, variables, meta)
    return {**meta, "num_params": backbones.num_parameters(variables)}


def _numbers(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pointrend_jax.convert",
        description="Convert torchvision (.pth) or detectron2 MSRA (.pkl) ResNet weights "
                    "into a pointrend-jax backbone file (.npz).")
    parser.add_argument("src", help="torchvision .pth/.pt state dict or detectron2 .pkl")
    parser.add_argument("dst", help="output file (.npz)")
    parser.add_argument("--depth", type=int, default=None,
                        help="ResNet depth (18/34/50/101/152); read off the weights if omitted")
    parser.add_argument("--format", dest="weights_format", default=None,
                        choices=tuple(backbones.WEIGHT_FORMATS),
                        help="source layout; guessed from the suffix if omitted")
    args = parser.parse_args(argv)
    if args.weights_format is None and guess_format(args.src) is None:
        parser.error(f"cannot tell the format of {args.src!r} from its suffix; "
                     f"pass --format torchvision|detectron2")
    try:
        meta = convert(args.src, args.dst, depth=args.depth, weights_format=args.weights_format)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: ResNet-{meta['depth']}, width {meta['width']}, "
          f"{meta['num_params']:,} params, stride_in_1x1={meta['stride_in_1x1']}, "
          f"from {meta['source']}\n"
          f"these weights take {meta['input_format']} images on 0..255 normalised with "
          f"pixel_mean={_numbers(meta['pixel_mean'])} pixel_std={_numbers(meta['pixel_std'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
