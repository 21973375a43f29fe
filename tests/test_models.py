"""Tests for pointrend_jax.models: shapes, strides, dtypes, norms, and torch oracles.

The oracles are plain-torch re-statements: a torchvision-layout ResNet (state-dict keys
``conv1.weight``, ``layer1.0.downsample.1.running_var`` ...; in ``torch_resnet.py``, shared
with the weight-converter tests), an FPN and the two heads (here). Their random weights are
copied into the linen modules and the outputs compared in float32.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn as tnn

from pointrend_jax.models import (
    FPN,
    DeepLabV3Head,
    FrozenBatchNorm,
    ResNet,
    SemanticFPNHead,
    gn_groups,
)
from torch_resnet import TorchResNet, randomize_, torch_resnet_to_variables


def _assert_same_tree(got, expected):
    got_shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), got)
    expected_shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), expected)
    assert got_shapes == expected_shapes


def _torch_to_flax_flat(modules):
    """{name: torch Conv2d | GroupNorm} -> linen params with the same (flat) names."""
    params = {}
    for name, m in modules.items():
        if isinstance(m, tnn.Conv2d):
            params[name] = {"kernel": jnp.asarray(m.weight.detach().numpy().transpose(2, 3, 1, 0))}
            if m.bias is not None:
                params[name]["bias"] = jnp.asarray(m.bias.detach().numpy())
        elif isinstance(m, tnn.GroupNorm):
            params[name] = {"scale": jnp.asarray(m.weight.detach().numpy()),
                            "bias": jnp.asarray(m.bias.detach().numpy())}
    return {"params": params}


def _init(module, *args):
    """Jitted ``module.init``. The "rbg" key compiles several times faster than threefry
    on CPU for a network's worth of initialisers; flax derives every rng from its impl."""
    return jax.jit(module.init)(jax.random.key(0, impl="rbg"), *args)


def _apply(module, variables, *args, **kwargs):
    """Jitted ``module.apply``; ``kwargs`` (train, mutable, rngs) are closed over."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def _nchw(x):
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _assert_close_to_torch(got, want_nchw, what):
    want = want_nchw.detach().numpy().transpose(0, 2, 3, 1)
    got = np.asarray(got)
    assert got.shape == want.shape, what
    scale = np.abs(want).max()
    assert scale > 0, what
    err = np.abs(got - want).max() / scale
    assert err < 1e-4, f"{what}: relative error {err:.2e}"


# ----------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------

_DILATION_FOR = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


@pytest.mark.parametrize(
    "depth,output_stride,stride_in_1x1,size",
    [
        (18, 32, False, (64, 96)),
        (18, 8, False, (64, 96)),
        (18, 32, False, (37, 53)),  # odd sizes: torch-style padding rounds up identically
        (50, 32, False, (64, 96)),
        (50, 8, False, (64, 96)),
        (50, 16, True, (64, 96)),
    ],
)
def test_resnet_matches_torchvision_layout_oracle_in_eval(np_rng, depth, output_stride,
                                                          stride_in_1x1, size):
    width = 8
    torch_model = randomize_(
        TorchResNet(depth, width, _DILATION_FOR[output_stride], stride_in_1x1),
        np_rng.integers(2**31),
    )
    images = np_rng.standard_normal((2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(_nchw(images))

    model = ResNet(depth=depth, width=width, norm="frozen_bn", output_stride=output_stride,
                   stride_in_1x1=stride_in_1x1)
    variables = torch_resnet_to_variables(torch_model.state_dict())
    _assert_same_tree(variables, jax.eval_shape(model.init, jax.random.key(0), images))
    got = jax.jit(model.apply)(variables, images)
    for level, w in zip(("res2", "res3", "res4", "res5"), want):
        _assert_close_to_torch(got[level], w, f"ResNet-{depth} os{output_stride} {level}")


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_resnet_output_shapes_and_strides(depth, output_stride):
    width, n, h, w = 8, 2, 64, 96
    expansion = 1 if depth == 18 else 4
    model = ResNet(depth=depth, width=width, output_stride=output_stride)
    images = jax.ShapeDtypeStruct((n, h, w, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    out = jax.eval_shape(model.apply, variables, images)
    assert sorted(out) == ["res2", "res3", "res4", "res5"]
    for i, level in enumerate(("res2", "res3", "res4", "res5")):
        stride = min(2 ** (i + 2), output_stride)
        assert out[level].shape == (n, h // stride, w // stride, width * 2**i * expansion), level


def test_resnet_init_is_he_normal_fan_out_with_unit_norms():
    model = ResNet(depth=18, width=16)
    variables = _init(model, jnp.zeros((1, 32, 32, 3)))
    kernel = np.asarray(variables["params"]["layer4_1"]["conv2"]["kernel"])  # (3, 3, 128, 128)
    fan_out = 3 * 3 * kernel.shape[-1]
    assert abs(kernel.std() / math.sqrt(2.0 / fan_out) - 1.0) < 0.03
    assert abs(kernel.mean()) < 0.05 * kernel.std()
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # untruncated, as torch kaiming_normal_
    assert "bias" not in variables["params"]["conv1"]
    bn = variables["batch_stats"]["layer4_1"]["bn2"]
    np.testing.assert_array_equal(bn["scale"], 1.0)
    np.testing.assert_array_equal(bn["bias"], 0.0)


def test_frozen_bn_never_changes_batch_stats_even_in_train(np_rng):
    model = ResNet(depth=18, width=4, norm="frozen_bn")
    images = jnp.asarray(np_rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    variables = _init(model, images)
    _, updates = _apply(model, variables, images, train=True, mutable=["batch_stats"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, updates["batch_stats"],
                           variables["batch_stats"])
    # an optimiser over "params" sees only the convs
    assert all("bn" not in name for name in variables["params"]["layer1_0"])


def test_bn_updates_running_stats_in_train_and_uses_them_in_eval(np_rng):
    model = ResNet(depth=18, width=4, norm="bn")
    images = jnp.asarray(np_rng.standard_normal((2, 32, 32, 3)) + 0.5, jnp.float32)
    variables = _init(model, images)
    assert set(variables["params"]["bn1"]) == {"scale", "bias"}
    assert set(variables["batch_stats"]["bn1"]) == {"mean", "var"}
    _, updates = _apply(model, variables, images, train=True, mutable=["batch_stats"])
    old, new = variables["batch_stats"]["bn1"], updates["batch_stats"]["bn1"]
    # torch momentum 0.1: new = 0.9 * old + 0.1 * batch mean
    assert not np.allclose(new["mean"], old["mean"])
    assert not np.allclose(new["var"], old["var"])
    # eval mode reads the running stats and does not ask for a mutable collection
    _apply(model, variables, images, train=False)


def test_gn_norm_resnet_has_no_batch_stats():
    model = ResNet(depth=18, width=4, norm="gn")
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert "batch_stats" not in variables
    assert variables["params"]["bn1"]["scale"].shape == (4,)


def test_bf16_compute_gives_bf16_activations_and_fp32_params():
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    bf16 = dict(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    backbone = ResNet(depth=18, width=8, norm="frozen_bn", **bf16)
    fpn = FPN(out_channels=16, **bf16)
    sem = SemanticFPNHead(num_classes=3, conv_dims=8, **bf16)
    deeplab = DeepLabV3Head(num_classes=3, conv_dims=8, **bf16)

    def init_and_apply(module, x):
        variables = jax.eval_shape(module.init, jax.random.key(0), x)
        for leaf in jax.tree_util.tree_leaves(variables):
            assert leaf.dtype == jnp.float32, type(module).__name__
        return jax.eval_shape(module.apply, variables, x)

    feats = init_and_apply(backbone, images)
    pyramid = init_and_apply(fpn, feats)
    for out in (*feats.values(), *pyramid.values(), init_and_apply(sem, pyramid),
                init_and_apply(deeplab, feats)):
        assert out.dtype == jnp.bfloat16


def test_bf16_resnet_runs_close_to_fp32(np_rng):
    images = jnp.asarray(np_rng.standard_normal((1, 32, 32, 3)), jnp.float32)
    model32 = ResNet(depth=18, width=4)
    variables = _init(model32, images)
    ref = _apply(model32, variables, images)["res5"]
    got = _apply(ResNet(depth=18, width=4, dtype=jnp.bfloat16), variables, images)["res5"]
    assert got.dtype == jnp.bfloat16
    err = np.abs(np.asarray(got, np.float32) - np.asarray(ref)).max() / np.abs(ref).max()
    assert err < 0.1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=20), "depth"),
        (dict(norm="batch"), "norm"),
        (dict(output_stride=4), "output_stride"),
        (dict(width=0), "width"),
    ],
)
def test_resnet_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**kwargs)


@pytest.mark.parametrize("shape", [(32, 32, 3), (1, 32, 32, 1), (1, 3, 32, 32)])
def test_resnet_rejects_non_nhwc_rgb_images(shape):
    model = ResNet(depth=18, width=4)
    with pytest.raises(ValueError, match="images"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_frozen_batch_norm_formula(np_rng):
    x = jnp.asarray(np_rng.standard_normal((2, 3, 5, 4)), jnp.float32)
    stats = {k: jnp.asarray(np_rng.uniform(0.5, 1.5, 4), jnp.float32)
             for k in ("scale", "bias", "mean", "var")}
    y = _apply(FrozenBatchNorm(), {"batch_stats": stats}, x)
    want = (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * stats["scale"] + stats["bias"]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_gn_groups_is_largest_divisor_up_to_32():
    assert gn_groups(256) == 32
    assert gn_groups(128) == 32
    assert gn_groups(48) == 24
    assert gn_groups(8) == 8
    assert gn_groups(7) == 7
    assert gn_groups(1) == 1


# ----------------------------------------------------------------------------------------
# FPN and heads
# ----------------------------------------------------------------------------------------


class TorchFPNAndSemHead(tnn.Module):
    """detectron2 FPN (sum fusion, no norm) + SemSegFPNHead (GN) re-stated; flat names."""

    def __init__(self, in_channels, fpn_dims, conv_dims, num_classes, common_stride=4):
        super().__init__()
        self.m = tnn.ModuleDict()
        for level, c in zip((2, 3, 4, 5), in_channels):
            self.m[f"fpn_lateral{level}"] = tnn.Conv2d(c, fpn_dims, 1)
            self.m[f"fpn_output{level}"] = tnn.Conv2d(fpn_dims, fpn_dims, 3, padding=1)
            blocks = max(1, level - int(math.log2(common_stride)))
            for k in range(blocks):
                self.m[f"p{level}_{k}"] = tnn.Conv2d(fpn_dims if k == 0 else conv_dims,
                                                     conv_dims, 3, padding=1, bias=False)
                self.m[f"p{level}_{k}_norm"] = tnn.GroupNorm(gn_groups(conv_dims), conv_dims)
        self.m["predictor"] = tnn.Conv2d(conv_dims, num_classes, 1)
        self.common_stride = common_stride

    def forward(self, res):
        prev = self.m["fpn_lateral5"](res[3])
        ps = {5: self.m["fpn_output5"](prev)}
        for level in (4, 3, 2):
            prev = self.m[f"fpn_lateral{level}"](res[level - 2]) + F.interpolate(
                prev, scale_factor=2, mode="nearest")
            ps[level] = self.m[f"fpn_output{level}"](prev)
        total = 0
        for level in (2, 3, 4, 5):
            x = ps[level]
            for k in range(max(1, level - int(math.log2(self.common_stride)))):
                x = F.relu(self.m[f"p{level}_{k}_norm"](self.m[f"p{level}_{k}"](x)))
                if 2**level != self.common_stride:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            total = total + x
        return ps, self.m["predictor"](total)


def test_fpn_and_semantic_fpn_head_match_torch_oracle(np_rng):
    n, h, w = 2, 64, 96
    channels = (8, 12, 16, 20)
    res = {f"res{l}": np_rng.standard_normal((n, h >> l, w >> l, c)).astype(np.float32)
           for l, c in zip((2, 3, 4, 5), channels)}
    oracle = randomize_(TorchFPNAndSemHead(channels, 16, 12, 5), np_rng.integers(2**31))
    with torch.no_grad():
        want_p, want_logits = oracle([_nchw(res[f"res{l}"]) for l in (2, 3, 4, 5)])

    fpn_names = {k: v for k, v in oracle.m.items() if k.startswith("fpn_")}
    head_names = {k: v for k, v in oracle.m.items() if not k.startswith("fpn_")}
    fpn = FPN(out_channels=16, norm="")
    head = SemanticFPNHead(num_classes=5, conv_dims=12, norm="gn")
    fpn_vars = _torch_to_flax_flat(fpn_names)
    head_vars = _torch_to_flax_flat(head_names)
    _assert_same_tree(fpn_vars, jax.eval_shape(fpn.init, jax.random.key(0), res))

    pyramid = _apply(fpn, fpn_vars, res)
    for level in (2, 3, 4, 5):
        assert pyramid[f"p{level}"].shape == (n, h >> level, w >> level, 16)
        _assert_close_to_torch(pyramid[f"p{level}"], want_p[level], f"p{level}")
    _assert_same_tree(head_vars, jax.eval_shape(head.init, jax.random.key(0), pyramid))
    logits = _apply(head, head_vars, pyramid)
    assert logits.shape == (n, h // 4, w // 4, 5)
    _assert_close_to_torch(logits, want_logits, "semantic FPN logits")


class TorchASPPHead(tnn.Module):
    """ASPP (1x1, three atrous 3x3, image pooling; GN) + projection + predictor; flat names."""

    def __init__(self, in_channels, dims, dilations, num_classes):
        super().__init__()
        self.dilations = dilations
        self.m = tnn.ModuleDict()
        g = gn_groups(dims)
        self.m["aspp_0"] = tnn.Conv2d(in_channels, dims, 1, bias=False)
        for i, d in enumerate(dilations):
            self.m[f"aspp_{i + 1}"] = tnn.Conv2d(in_channels, dims, 3, padding=d, dilation=d,
                                                 bias=False)
        self.m["aspp_pool"] = tnn.Conv2d(in_channels, dims, 1, bias=False)
        self.m["aspp_project"] = tnn.Conv2d(5 * dims, dims, 1, bias=False)
        for name in ("aspp_0", "aspp_1", "aspp_2", "aspp_3", "aspp_pool", "aspp_project"):
            self.m[f"{name}_norm"] = tnn.GroupNorm(g, dims)
        self.m["predictor"] = tnn.Conv2d(dims, num_classes, 1)

    def _cnr(self, name, x):
        return F.relu(self.m[f"{name}_norm"](self.m[name](x)))

    def forward(self, x):
        branches = [self._cnr(f"aspp_{i}", x) for i in range(4)]
        pooled = self._cnr("aspp_pool", x.mean(dim=(2, 3), keepdim=True))
        branches.append(pooled.expand_as(branches[0]))
        return self.m["predictor"](self._cnr("aspp_project", torch.cat(branches, dim=1)))


def test_deeplabv3_head_matches_torch_aspp_oracle_in_eval(np_rng):
    # dilation 6 on a 4x6 map: most taps land in the zero padding, as in torch
    res5 = np_rng.standard_normal((2, 4, 6, 24)).astype(np.float32)
    oracle = randomize_(TorchASPPHead(24, 16, (1, 2, 6), 7), np_rng.integers(2**31))
    with torch.no_grad():
        want = oracle(_nchw(res5))
    head = DeepLabV3Head(num_classes=7, conv_dims=16, dilations=(1, 2, 6), norm="gn")
    variables = _torch_to_flax_flat(oracle.m)
    _assert_same_tree(variables, jax.eval_shape(head.init, jax.random.key(0), {"res5": res5}))
    logits = _apply(head, variables, {"res5": res5}, train=False)
    assert logits.shape == (2, 4, 6, 7)
    _assert_close_to_torch(logits, want, "DeepLabV3 logits")


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplabv3_head_on_dilated_resnet_logits_at_output_stride(np_rng, output_stride):
    images = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)
    backbone = ResNet(depth=50, width=8, output_stride=output_stride)
    feats = jax.eval_shape(backbone.apply, jax.eval_shape(backbone.init, jax.random.key(0), images),
                           images)
    head = DeepLabV3Head(num_classes=4, conv_dims=16, norm="bn")
    variables = jax.eval_shape(head.init, jax.random.key(0), feats)
    logits = jax.eval_shape(head.apply, variables, feats)
    assert logits.shape == (2, 64 // output_stride, 96 // output_stride, 4)


def test_deeplabv3_head_train_mode_uses_dropout_and_updates_bn(np_rng):
    feats = {"res5": jnp.asarray(np_rng.standard_normal((2, 4, 6, 8)), jnp.float32)}
    head = DeepLabV3Head(num_classes=3, conv_dims=8, norm="bn", dropout=0.5)
    variables = _init(head, feats)
    eval_a = _apply(head, variables, feats)
    eval_b = _apply(head, variables, feats)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, upd = _apply(head, variables, feats, train=True, mutable=["batch_stats"],
                              rngs={"dropout": jax.random.key(1)})
    train_b, _ = _apply(head, variables, feats, train=True, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(train_a, train_b)
    assert not np.allclose(upd["batch_stats"]["aspp_0_norm"]["mean"],
                           variables["batch_stats"]["aspp_0_norm"]["mean"])
    pred = variables["params"]["predictor"]
    assert np.asarray(pred["kernel"]).std() < 0.002
    np.testing.assert_array_equal(pred["bias"], 0.0)


def test_fpn_rejects_misaligned_levels_from_size_not_multiple_of_32():
    backbone = ResNet(depth=18, width=4)
    images = jax.ShapeDtypeStruct((1, 48, 64, 3), jnp.float32)  # 48 is not a multiple of 32
    feats = jax.eval_shape(backbone.apply, jax.eval_shape(backbone.init, jax.random.key(0), images),
                           images)
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(FPN(out_channels=8).init, jax.random.key(0), feats)


def test_fpn_rejects_dilated_backbone_and_missing_levels():
    feats = {f"res{l}": jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32) for l in (2, 3, 4, 5)}
    with pytest.raises(ValueError, match="output_stride"):
        jax.eval_shape(FPN(out_channels=8).init, jax.random.key(0), feats)
    del feats["res3"]
    with pytest.raises(ValueError, match="res3"):
        jax.eval_shape(FPN(out_channels=8).init, jax.random.key(0), feats)
    with pytest.raises(ValueError, match="norm"):
        FPN(norm="bn")


def test_semantic_fpn_head_rejects_bad_config():
    with pytest.raises(ValueError, match="norm"):
        SemanticFPNHead(num_classes=3, norm="frozen_bn")
    with pytest.raises(ValueError, match="common_stride"):
        SemanticFPNHead(num_classes=3, common_stride=6)
    with pytest.raises(ValueError, match="finer than common_stride"):
        SemanticFPNHead(num_classes=3, common_stride=8)
    with pytest.raises(ValueError, match="p5"):
        feats = {f"p{l}": jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32) for l in (2, 3, 4)}
        jax.eval_shape(SemanticFPNHead(num_classes=3).init, jax.random.key(0), feats)


def test_semantic_fpn_head_single_level_at_common_stride(np_rng):
    feats = {"p3": jnp.asarray(np_rng.standard_normal((1, 8, 12, 6)), jnp.float32)}
    head = SemanticFPNHead(num_classes=2, conv_dims=4, common_stride=8, in_strides={"p3": 8})
    variables = _init(head, feats)
    assert _apply(head, variables, feats).shape == (1, 8, 12, 2)


def test_deeplabv3_head_rejects_bad_config():
    with pytest.raises(ValueError, match="norm"):
        DeepLabV3Head(num_classes=3, norm="")
    with pytest.raises(ValueError, match="dilations"):
        DeepLabV3Head(num_classes=3, dilations=(6, 12))
    with pytest.raises(ValueError, match="dropout"):
        DeepLabV3Head(num_classes=3, dropout=1.0)
    with pytest.raises(ValueError, match="res5"):
        jax.eval_shape(DeepLabV3Head(num_classes=3).init, jax.random.key(0),
                       {"res4": jax.ShapeDtypeStruct((1, 4, 4, 8), jnp.float32)})

