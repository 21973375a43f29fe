"""Tests for pointrend_jax.backbones and the convert CLI: pretrained ResNet weights.

Oracles: ``TorchResNet`` (torchvision's layout re-stated, ``torch_resnet.py``) for torchvision
state dicts, and ``c2_msra_forward`` below, a functional torch ResNet driven directly by a dict
of caffe2 blobs (MSRA: stride in the first 1x1 conv, frozen BN as ``x * s + b``, BGR input)
for detectron2 pickles. All weights random; outputs compared in float32.
"""
import math
import os
import pathlib
import pickle
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointrend_jax import convert
from pointrend_jax.backbones import (
    DETECTRON2_PIXEL_MEAN,
    DETECTRON2_PIXEL_STD,
    TORCHVISION_PIXEL_MEAN,
    TORCHVISION_PIXEL_STD,
    backbone_meta,
    load_backbone,
    merge_pretrained,
    resnet_from_detectron2,
    resnet_from_torchvision,
    save_backbone,
)
from pointrend_jax.models import ResNet
from torch_resnet import TorchResNet, randomize_, torch_resnet_to_variables

REPO = pathlib.Path(__file__).resolve().parents[1]
LEVELS = ("res2", "res3", "res4", "res5")


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _assert_levels_match(got, want_nchw, what):
    """``got {"res2".."res5"}`` (NHWC) against torch's ``[layer1..layer4]`` (NCHW)."""
    for level, want in zip(LEVELS, want_nchw):
        want = want.detach().numpy().transpose(0, 2, 3, 1)
        g = np.asarray(got[level])
        assert g.shape == want.shape, f"{what} {level}"
        err = np.abs(g - want).max() / np.abs(want).max()
        assert err < 1e-4, f"{what} {level}: relative error {err:.2e}"


def _torchvision_state_dict(np_rng, depth, width):
    """A random torchvision-layout model and its state dict, with the extra keys a real
    checkpoint has (``fc.*``, ``num_batches_tracked``)."""
    model = randomize_(TorchResNet(depth, width), np_rng.integers(2**31))
    state = dict(model.state_dict())
    channels = width * 8 * (1 if depth < 50 else 4)
    state["fc.weight"] = torch.zeros(10, channels)
    state["fc.bias"] = torch.zeros(10)
    assert any(k.endswith("num_batches_tracked") for k in state)
    return model, state


def _torch_levels(model, images):
    with torch.no_grad():
        return model(_nchw(images))


# ----------------------------------------------------------------------------------------
# torchvision
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_torchvision_state_dict_gives_resnet_matching_torchvision_in_eval(np_rng, depth):
    width = 8
    torch_model, state = _torchvision_state_dict(np_rng, depth, width)
    if depth == 101:
        assert len(torch_model.layer3) == 23  # a real 101-layer network, only narrow
    images = np_rng.standard_normal((2, 32, 32, 3)).astype(np.float32)

    module, variables = resnet_from_torchvision(state)  # depth and width read off the weights
    assert (module.depth, module.width, module.norm, module.stride_in_1x1) == (
        depth, width, "frozen_bn", False)
    # same leaves as the test-side statement of the name mapping
    reference = torch_resnet_to_variables(torch_model.state_dict())
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, reference)

    got = jax.jit(module.apply)(variables, images)
    _assert_levels_match(got, _torch_levels(torch_model, images), f"ResNet-{depth}")


def test_torchvision_conversion_accepts_numpy_arrays_and_explicit_depth_width(np_rng):
    _, state = _torchvision_state_dict(np_rng, 18, 4)
    _, from_torch = resnet_from_torchvision(state)
    module, from_numpy = resnet_from_torchvision({k: v.numpy() for k, v in state.items()}, 18,
                                                 width=4, output_stride=8)
    assert module.output_stride == 8
    jax.tree_util.tree_map(np.testing.assert_array_equal, from_numpy, from_torch)


@pytest.mark.parametrize(
    "edit,kwargs,match",
    [
        (lambda s: s.pop("layer2.1.bn2.running_var"), {},
         r"missing key 'layer2\.1\.bn2\.running_var'"),
        (lambda s: s.pop("conv1.weight"), {}, r"missing key 'conv1\.weight'"),
        (lambda s: s.__setitem__("layer1.0.conv4.weight", torch.zeros(1)), {},
         r"unexpected key 'layer1\.0\.conv4\.weight'"),
        (lambda s: s.__setitem__("layer1.0.conv2.weight", torch.zeros(8, 8, 1, 1)), {},
         r"'layer1\.0\.conv2\.weight' has shape \(8, 8, 1, 1\), expected \(8, 8, 3, 3\)"),
        (lambda s: s.__setitem__("layer3.0.bn1.weight", torch.zeros(5)), {},
         r"'layer3\.0\.bn1\.weight' has shape \(5,\), expected \(32,\)"),
        (None, dict(depth=101), r"depth=101 but the weights look like ResNet-50.*layer3\.6\."),
        (None, dict(depth=18), r"depth=18 but the weights look like ResNet-50"),
        (None, dict(width=64), r"width=64 but 'conv1\.weight' has 8"),
    ],
)
def test_torchvision_conversion_errors_name_the_key(edit, kwargs, match):
    state = dict(TorchResNet(50, 8).state_dict())
    if edit is not None:
        edit(state)
    with pytest.raises(ValueError, match=match):
        resnet_from_torchvision(state, **kwargs)


def test_weights_of_the_other_format_are_rejected(np_rng):
    with pytest.raises(ValueError,
                       match=r"no ResNet block keys such as 'layer1\.0\.conv1\.weight'"):
        resnet_from_torchvision(make_c2_blobs(np_rng, 50, 2))
    with pytest.raises(ValueError, match=r"no ResNet block keys such as 'res2_0_branch2a_w'"):
        resnet_from_detectron2(TorchResNet(18, 2).state_dict())


def test_torchvision_layout_that_is_no_resnet_is_rejected():
    state = {k: v for k, v in TorchResNet(18, 4).state_dict().items()
             if not k.startswith("layer4.1.")}
    with pytest.raises(ValueError, match=r"basic blocks \(2, 2, 2, 1\).*no ResNet"):
        resnet_from_torchvision(state)


# ----------------------------------------------------------------------------------------
# detectron2 / caffe2 MSRA pickles
# ----------------------------------------------------------------------------------------

C2_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def make_c2_blobs(rng, depth, width):
    """Random caffe2 blobs with the names of detectron2's MSRA ``R-{depth}.pkl``."""
    blobs = {}

    def conv(name, c_out, c_in, k):
        w = rng.standard_normal((c_out, c_in, k, k)) * math.sqrt(2.0 / (c_in * k * k))
        blobs[f"{name}_w"] = w.astype(np.float32)

    def frozen_bn(name, c):
        blobs[f"{name}_bn_s"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        blobs[f"{name}_bn_b"] = rng.normal(0.0, 0.1, c).astype(np.float32)

    conv("conv1", width, 3, 7)
    frozen_bn("res_conv1", width)
    c_in = width
    for stage, count in enumerate(C2_BLOCKS[depth]):
        planes = width * 2**stage
        for i in range(count):
            block = f"res{stage + 2}_{i}"
            for branch, c_out, c_from, k in (("branch2a", planes, c_in, 1),
                                             ("branch2b", planes, planes, 3),
                                             ("branch2c", 4 * planes, planes, 1)):
                conv(f"{block}_{branch}", c_out, c_from, k)
                frozen_bn(f"{block}_{branch}", c_out)
            if i == 0:
                conv(f"{block}_branch1", 4 * planes, c_in, 1)
                frozen_bn(f"{block}_branch1", 4 * planes)
            c_in = 4 * planes
    blobs["fc1000_w"] = rng.standard_normal((1000, c_in)).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    blobs["conv1_b"] = np.full(width, 1e-9, np.float32)  # noise in the real files, unused
    blobs["res2_0_branch2a_w_momentum"] = np.zeros_like(blobs["res2_0_branch2a_w"])
    return blobs


def c2_msra_forward(blobs, images_bgr_nchw):
    """detectron2's ResNet with MSRA weights, re-stated: -> [res2, res3, res4, res5] NCHW."""
    t = {k: torch.from_numpy(v) for k, v in blobs.items()}

    def affine(x, name):  # FrozenBN of caffe2 weights: scale and bias only
        return x * t[f"{name}_bn_s"][:, None, None] + t[f"{name}_bn_b"][:, None, None]

    def conv_bn(x, name, stride=1, padding=0):
        return affine(F.conv2d(x, t[f"{name}_w"], stride=stride, padding=padding), name)

    x = F.relu(affine(F.conv2d(images_bgr_nchw, t["conv1_w"], stride=2, padding=3), "res_conv1"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    outs = []
    stage = 2
    while f"res{stage}_0_branch2a_w" in t:
        i = 0
        while f"res{stage}_{i}_branch2a_w" in t:
            block = f"res{stage}_{i}"
            stride = 2 if stage > 2 and i == 0 else 1
            out = F.relu(conv_bn(x, f"{block}_branch2a", stride))  # stride in the 1x1
            out = F.relu(conv_bn(out, f"{block}_branch2b", padding=1))
            out = conv_bn(out, f"{block}_branch2c")
            shortcut = (conv_bn(x, f"{block}_branch1", stride) if f"{block}_branch1_w" in t
                        else x)
            x = F.relu(out + shortcut)
            i += 1
        outs.append(x)
        stage += 1
    return outs


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the Python-2 era protocol of the real files
    return path


def test_detectron2_pickle_gives_rgb_resnet_matching_msra_oracle_on_bgr(np_rng, tmp_path):
    width = 8
    blobs = make_c2_blobs(np_rng, 50, width)
    path = _write_pickle(tmp_path / "R-50.pkl", blobs)
    images_rgb = np_rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = c2_msra_forward(blobs, _nchw(images_rgb[..., ::-1]))  # caffe2 reads BGR

    module, variables = resnet_from_detectron2(path)
    assert (module.depth, module.width, module.norm, module.stride_in_1x1) == (
        50, width, "frozen_bn", True)
    got = jax.jit(module.apply)(variables, images_rgb)
    _assert_levels_match(got, want, "MSRA R-50")

    # the frozen BN is an exact affine: mean 0 and var + eps == 1 in float32
    bn = variables["batch_stats"]["layer3_2"]["bn2"]
    np.testing.assert_array_equal(bn["mean"], 0.0)
    np.testing.assert_array_equal(np.float32(bn["var"]) + np.float32(1e-5), 1.0)
    np.testing.assert_array_equal(bn["scale"], blobs["res4_2_branch2b_bn_s"])


def test_detectron2_loader_accepts_raw_wrapped_and_in_memory_blobs(np_rng, tmp_path):
    blobs = make_c2_blobs(np_rng, 50, 4)
    _, raw = resnet_from_detectron2(_write_pickle(tmp_path / "raw.pkl", blobs), 50)
    wrapped_path = _write_pickle(tmp_path / "d2.pkl", {"model": blobs, "__author__": "MSRA",
                                                        "matching_heuristics": True})
    for other in (resnet_from_detectron2(wrapped_path)[1],
                  resnet_from_detectron2({"blobs": blobs})[1],
                  resnet_from_detectron2(blobs)[1]):
        jax.tree_util.tree_map(np.testing.assert_array_equal, other, raw)
    # conv1 takes RGB: its input channels are caffe2's reversed
    np.testing.assert_array_equal(raw["params"]["conv1"]["kernel"],
                                  blobs["conv1_w"][:, ::-1].transpose(2, 3, 1, 0))


def test_detectron2_r101_layout_is_recognised_and_checked(np_rng):
    blobs = make_c2_blobs(np_rng, 101, 2)
    module, variables = resnet_from_detectron2(blobs)
    assert module.depth == 101 and "layer3_22" in variables["params"]
    with pytest.raises(ValueError, match=r"depth=50 but the weights look like ResNet-101"):
        resnet_from_detectron2(blobs, 50)


@pytest.mark.parametrize(
    "edit,depth,match",
    [
        (lambda b: b.pop("res3_1_branch2b_bn_s"), None, r"missing key 'res3_1_branch2b_bn_s'"),
        (lambda b: b.pop("res_conv1_bn_b"), None, r"missing key 'res_conv1_bn_b'"),
        (lambda b: b.__setitem__("res2_0_branch2a_bn_rm", np.zeros(4)), None,
         r"unexpected key 'res2_0_branch2a_bn_rm'"),
        (lambda b: b.__setitem__("res5_0_branch1_w", np.zeros((128, 32, 1, 1))), None,
         r"'res5_0_branch1_w' has shape \(128, 32, 1, 1\), expected \(128, 64, 1, 1\)"),
        (None, 101, r"depth=101 but the weights look like ResNet-50.*res4_6_branch2a_w"),
    ],
)
def test_detectron2_conversion_errors_name_the_caffe2_key(np_rng, edit, depth, match):
    blobs = make_c2_blobs(np_rng, 50, 4)
    if edit is not None:
        edit(blobs)
    with pytest.raises(ValueError, match=match):
        resnet_from_detectron2(blobs, depth)


# ----------------------------------------------------------------------------------------
# File format and the convert CLI
# ----------------------------------------------------------------------------------------


def test_convert_cli_round_trip_of_torchvision_checkpoint(np_rng, tmp_path):
    torch_model, state = _torchvision_state_dict(np_rng, 18, 8)
    src, dst = tmp_path / "resnet18.pth", tmp_path / "r18.npz"
    torch.save(state, src)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "pointrend_jax.convert", str(src), str(dst)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ResNet-18, width 8" in proc.stdout
    assert "pixel_mean=[123.675, 116.28, 103.53] pixel_std=[58.395, 57.12, 57.375]" in proc.stdout

    variables, meta = load_backbone(dst)
    assert meta["depth"] == 18 and meta["width"] == 8 and meta["stride_in_1x1"] is False
    assert meta["input_format"] == "RGB" and meta["source"] == "torchvision:resnet18.pth"
    assert tuple(meta["pixel_mean"]) == TORCHVISION_PIXEL_MEAN
    assert tuple(meta["pixel_std"]) == TORCHVISION_PIXEL_STD
    module = ResNet(depth=meta["depth"], width=meta["width"], norm="frozen_bn",
                    stride_in_1x1=meta["stride_in_1x1"])
    images = np_rng.standard_normal((1, 32, 32, 3)).astype(np.float32)
    got = jax.jit(module.apply)(variables, images)
    _assert_levels_match(got, _torch_levels(torch_model, images), "converted ResNet-18")


def test_convert_main_on_detectron2_pickle_writes_msra_meta(np_rng, tmp_path, capsys):
    blobs = make_c2_blobs(np_rng, 50, 4)
    src = _write_pickle(tmp_path / "R-50.pkl", blobs)
    dst = tmp_path / "converted.weights"  # any name: nothing is appended to it
    assert convert.main([str(src), str(dst), "--depth", "50"]) == 0
    out = capsys.readouterr().out
    assert "ResNet-50, width 4" in out and "stride_in_1x1=True" in out
    assert "pixel_std=[1, 1, 1]" in out
    variables, meta = load_backbone(dst)
    assert meta["stride_in_1x1"] is True and meta["input_format"] == "RGB"
    assert tuple(meta["pixel_mean"]) == DETECTRON2_PIXEL_MEAN
    assert tuple(meta["pixel_std"]) == DETECTRON2_PIXEL_STD
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables,
                           resnet_from_detectron2(blobs)[1])


def test_convert_main_reports_errors_and_unknown_suffix(np_rng, tmp_path, capsys):
    src = _write_pickle(tmp_path / "R-50.pkl", make_c2_blobs(np_rng, 50, 4))
    assert convert.main([str(src), str(tmp_path / "x.npz"), "--depth", "101"]) == 1
    assert "the weights look like ResNet-50" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert.main([str(tmp_path / "weights.bin"), str(tmp_path / "x.npz")])
    assert "--format" in capsys.readouterr().err


def test_load_backbone_rejects_other_npz_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npz.*not a converted backbone"):
        load_backbone(path)
    with pytest.raises(ValueError, match="input_format"):
        meta = backbone_meta(ResNet(depth=18, width=4), "torchvision", "x")
        save_backbone(path, {"params": {}}, {**meta, "input_format": "rgb"})


# ----------------------------------------------------------------------------------------
# merge_pretrained
# ----------------------------------------------------------------------------------------


class _Net(nn.Module):
    depth: int
    width: int
    norm: str = "frozen_bn"

    @nn.compact
    def __call__(self, x):
        feats = ResNet(depth=self.depth, width=self.width, norm=self.norm, name="backbone")(x)
        return nn.Dense(3, name="head")(feats["res5"])


class _Model(nn.Module):
    """The nesting of our segmenters: params["net"]["backbone"] + other heads."""

    depth: int
    width: int
    norm: str = "frozen_bn"

    @nn.compact
    def __call__(self, x):
        features = _Net(self.depth, self.width, self.norm, name="net")(x)
        return nn.Dense(2, name="point_head")(features)


def _zero_model_trees(model):
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    return zeros["params"], zeros.get("batch_stats")


def _saved_torchvision_backbone(np_rng, tmp_path, depth, width):
    _, state = _torchvision_state_dict(np_rng, depth, width)
    module, variables = resnet_from_torchvision(state)
    path = tmp_path / f"r{depth}_w{width}.npz"
    save_backbone(path, variables, backbone_meta(module, "torchvision", "test"))
    return path, variables


@pytest.mark.parametrize("norm", ["frozen_bn", "bn"])
def test_merge_pretrained_replaces_only_the_backbone(np_rng, tmp_path, norm):
    path, converted = _saved_torchvision_backbone(np_rng, tmp_path, 18, 4)
    params, stats = _zero_model_trees(_Model(18, 4, norm))
    new_params, new_stats = merge_pretrained(params, stats, path)

    conv = new_params["net"]["backbone"]["layer2_0"]["downsample_conv"]["kernel"]
    np.testing.assert_array_equal(
        conv, converted["params"]["layer2_0"]["downsample_conv"]["kernel"])
    bn = converted["batch_stats"]["layer3_1"]["bn2"]
    merged_bn = {**new_params["net"]["backbone"]["layer3_1"].get("bn2", {}),
                 **new_stats["net"]["backbone"]["layer3_1"]["bn2"]}
    assert set(merged_bn) == {"scale", "bias", "mean", "var"}
    for name in merged_bn:  # with norm="bn", scale/bias moved into "params"
        np.testing.assert_array_equal(merged_bn[name], bn[name])
    if norm == "bn":
        assert set(new_stats["net"]["backbone"]["bn1"]) == {"mean", "var"}
    # everything else untouched, inputs not modified
    assert new_params["point_head"] is params["point_head"]
    assert new_params["net"]["head"] is params["net"]["head"]
    assert not np.any(params["net"]["backbone"]["conv1"]["kernel"])
    leaf_dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(new_params["net"]["backbone"])}
    assert leaf_dtypes == {np.dtype(np.float32)}


def test_merge_pretrained_into_the_pointrend_model(np_rng, tmp_path):
    pointrend = pytest.importorskip("pointrend_jax.models.pointrend")
    path, converted = _saved_torchvision_backbone(np_rng, tmp_path, 18, 4)
    net = pointrend.SemanticSegmentationNet(num_classes=3, depth=18, width=4, fpn_channels=8,
                                            head_channels=8)
    model = pointrend.PointRendSegmenter(net=net, num_classes=3, fc_dim=8)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    abstract = jax.eval_shape(model.init, {"params": jax.random.key(0),
                                           "points": jax.random.key(1)}, images)
    params, stats = merge_pretrained(abstract["params"], abstract["batch_stats"], path)
    np.testing.assert_array_equal(params["net"]["backbone"]["conv1"]["kernel"],
                                  converted["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(stats["net"]["backbone"]["bn1"]["var"],
                                  converted["batch_stats"]["bn1"]["var"])


def test_merge_pretrained_rejects_wrong_depth_and_width_naming_file_and_key(np_rng, tmp_path):
    path, _ = _saved_torchvision_backbone(np_rng, tmp_path, 50, 2)
    params, stats = _zero_model_trees(_Model(101, 2))
    with pytest.raises(ValueError, match=r"r50_w2\.npz \(ResNet-50, width 2\).*'layer3_6/"):
        merge_pretrained(params, stats, path)
    params, stats = _zero_model_trees(_Model(50, 4))
    with pytest.raises(ValueError,
                       match=r"r50_w2\.npz.*'conv1/kernel' has shape \(7, 7, 3, 2\) in the file, "
                             r"\(7, 7, 3, 4\) in the model"):
        merge_pretrained(params, stats, path)
    variables, _ = load_backbone(path)
    params, stats = _zero_model_trees(_Model(50, 2, "gn"))
    with pytest.raises(ValueError, match=r"my weights.*the file has '.*(mean|var)'"):
        merge_pretrained(params, stats, variables, source="my weights")
    with pytest.raises(ValueError, match=r"\['net'\]\['trunk'\]"):
        merge_pretrained(params, stats, variables, prefix=("net", "trunk"))
