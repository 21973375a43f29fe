"""ResNeXt: the grouped ResNet against torch re-statements (torch_resnext.py) and the
conversion of its weights (torchvision state dicts, detectron2's FAIR caffe2 pickle).

Oracles: ``TorchResNeXt`` (torchvision's ResNeXt layout) and ``c2_forward`` (detectron2's
ResNet driven by caffe2 blobs, BGR input, stride in the 3x3 as d2's ``STRIDE_IN_1X1: False``).
All weights and images random; outputs compared in float32.
"""
import pickle
import types

import jax
import numpy as np
import pytest
import torch

from pointrend_jax import config as config_lib
from pointrend_jax import convert
from pointrend_jax.backbones import (
    DETECTRON2_FAIR_PIXEL_STD,
    DETECTRON2_PIXEL_MEAN,
    backbone_meta,
    load_backbone,
    resnet_from_detectron2,
    resnet_from_torchvision,
    save_backbone,
)
from pointrend_jax.models.layers import normalize_images
from pointrend_jax.models.resnet import ResNet
from pointrend_jax.semantic.config import semantic_config
from pointrend_jax.train.state import with_pretrained_backbone
from torch_resnet import randomize_, torch_resnet_to_variables
from torch_resnext import TorchResNeXt, c2_forward, make_c2_resnext_blobs

LEVELS = ("res2", "res3", "res4", "res5")


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _assert_levels_match(got, want_nchw, what):
    for level, want in zip(LEVELS, want_nchw):
        want = want.detach().numpy().transpose(0, 2, 3, 1)
        g = np.asarray(got[level])
        assert g.shape == want.shape, f"{what} {level}: {g.shape} vs {want.shape}"
        err = np.abs(g - want).max() / np.abs(want).max()
        assert err < 1e-4, f"{what} {level}: relative error {err:.2e}"


def test_resnext_kernels_have_torchvisions_grouped_shapes():
    # X-101-32x8d: 32 groups of 8 channels at res2, the inner width doubling per stage.
    module = ResNet(depth=101, width=64, num_groups=32, width_per_group=8)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(
        (1, 64, 64, 3), np.float32))["params"]
    for stage, inner in ((1, 256), (2, 512), (3, 1024), (4, 2048)):
        block = shapes[f"layer{stage}_0"]
        assert block["conv1"]["kernel"].shape[-1] == inner
        assert block["conv2"]["kernel"].shape == (3, 3, 8 * 2 ** (stage - 1), inner)
        assert block["conv3"]["kernel"].shape[-1] == 256 * 2 ** (stage - 1)
    assert len([k for k in shapes if k.startswith("layer3_")]) == 23


@pytest.mark.parametrize("output_stride,stride_in_1x1", [(32, False), (8, True)])
def test_resnext_matches_torchvision_layout_oracle(np_rng, output_stride, stride_in_1x1):
    width, groups, width_per_group = 8, 4, 16  # 4 groups of 2 channels at res2
    dilation = {32: (False, False, False), 8: (False, True, True)}[output_stride]
    torch_model = randomize_(TorchResNeXt(50, width, groups, width_per_group,
                                          replace_stride_with_dilation=dilation,
                                          stride_in_1x1=stride_in_1x1),
                             np_rng.integers(2**31))
    images = np_rng.standard_normal((2, 48, 64, 3)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(_nchw(images))
    module = ResNet(depth=50, width=width, norm="frozen_bn", output_stride=output_stride,
                    stride_in_1x1=stride_in_1x1, num_groups=groups,
                    width_per_group=width_per_group)
    got = jax.jit(module.apply)(torch_resnet_to_variables(torch_model.state_dict()), images)
    _assert_levels_match(got, want, f"ResNeXt-50 os{output_stride}")


def test_torchvision_resnext_state_dict_converts_with_its_grouping(np_rng):
    torch_model = randomize_(TorchResNeXt(50, 8, 2, 32), np_rng.integers(2**31))
    state = {**torch_model.state_dict(), "fc.weight": torch.zeros(10, 256),
             "fc.bias": torch.zeros(10)}
    module, variables = resnet_from_torchvision(state)
    assert (module.depth, module.width, module.num_groups, module.width_per_group) == (50, 8, 2, 32)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables,
                           torch_resnet_to_variables(torch_model.state_dict()))


def test_fair_pickle_gives_rgb_resnext_matching_detectron2_on_bgr(np_rng):
    blobs = make_c2_resnext_blobs(np_rng, 50, 8, 4, 16)
    pixels = np_rng.uniform(0, 255, (2, 32, 48, 3)).astype(np.float32)  # RGB
    # detectron2: BGR pixels, the X-101 yaml's BGR mean and std
    bgr = (pixels[..., ::-1] - np.float32([103.530, 116.280, 123.675])) / np.float32(
        [57.375, 57.120, 58.395])
    with torch.no_grad():
        want = c2_forward(blobs, _nchw(bgr), stride_in_1x1=False, groups=4)

    module, variables = resnet_from_detectron2(blobs, stride_in_1x1=False)
    assert (module.num_groups, module.width_per_group, module.stride_in_1x1) == (4, 16, False)
    x = normalize_images(pixels, DETECTRON2_PIXEL_MEAN, DETECTRON2_FAIR_PIXEL_STD, np.float32)
    _assert_levels_match(jax.jit(module.apply)(variables, x), want, "FAIR X-50")


def test_convert_cli_needs_the_fair_format_for_caffe2_resnext(np_rng, tmp_path, capsys):
    src, dst = tmp_path / "X-50.pkl", tmp_path / "x50.npz"
    blobs = make_c2_resnext_blobs(np_rng, 50, 8, 4, 16)
    with open(src, "wb") as f:
        pickle.dump(blobs, f, protocol=2)
    assert convert.main([str(src), str(dst)]) == 1  # guessed MSRA: refused
    assert "--format detectron2_fair" in capsys.readouterr().err
    assert convert.main([str(src), str(dst), "--format", "detectron2_fair"]) == 0
    assert "num_groups=4, width_per_group=16" in capsys.readouterr().out
    variables, meta = load_backbone(dst)
    assert (meta["num_groups"], meta["width_per_group"], meta["stride_in_1x1"]) == (4, 16, False)
    assert tuple(meta["pixel_mean"]) == DETECTRON2_PIXEL_MEAN
    assert tuple(meta["pixel_std"]) == DETECTRON2_FAIR_PIXEL_STD
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables,
                           resnet_from_detectron2(blobs, stride_in_1x1=False)[1])


def test_backbone_files_from_before_resnext_read_as_plain_resnets(tmp_path):
    module = ResNet(depth=18, width=4)
    meta = backbone_meta(module, "torchvision", "torchvision:old.pth")
    for key in ("num_groups", "width_per_group"):
        del meta[key]
    save_backbone(tmp_path / "old.npz", {"params": {}, "batch_stats": {}}, meta)
    _, read = load_backbone(tmp_path / "old.npz")
    assert (read["num_groups"], read["width_per_group"]) == (1, 64)


def test_pretrained_grouping_must_match_the_config(np_rng, tmp_path):
    module, variables = resnet_from_detectron2(make_c2_resnext_blobs(np_rng, 50, 8, 4, 16),
                                               stride_in_1x1=False)
    path = tmp_path / "x50.npz"
    save_backbone(path, variables, backbone_meta(module, "detectron2_fair", "x"))
    c = semantic_config()
    c.model.backbone.update(depth=50, width=8, stride_in_1x1=False, pretrained=str(path))
    c.model.update(pixel_mean=DETECTRON2_PIXEL_MEAN, pixel_std=DETECTRON2_FAIR_PIXEL_STD)
    state = types.SimpleNamespace()  # the checks come before the state is touched
    with pytest.raises(ValueError, match=r"num_groups=4; set --config.model.backbone.num_groups=4"):
        with_pretrained_backbone(state, c.model)


@pytest.mark.parametrize(
    "update,match",
    [
        (dict(depth=18, num_groups=32, width_per_group=8),
         r"--config.model.backbone.num_groups=32 / width_per_group=8 \(ResNeXt\) needs a "
         r"bottleneck depth"),
        (dict(num_groups=0), r"--config.model.backbone.num_groups must be >= 1"),
        (dict(width_per_group=0), r"--config.model.backbone.width_per_group must be >= 1"),
        (dict(width=8, num_groups=4, width_per_group=4),
         r"--config.model.backbone.width_per_group=4 leaves res2's groups no channels"),
    ],
)
def test_config_refuses_grouping_that_is_no_resnext(update, match):
    c = semantic_config()
    c.model.backbone.update(**update)
    with pytest.raises(ValueError, match=match):
        config_lib.validate_shared(c)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=34, num_groups=2), r"needs bottleneck blocks"),
        (dict(num_groups=0), r"num_groups must be a positive int"),
        (dict(width=8, width_per_group=4), r"leaves res2's groups no channels"),
    ],
)
def test_resnet_refuses_grouping_that_is_no_resnext(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**kwargs)
