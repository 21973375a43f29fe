"""The point head: a small MLP that re-predicts logits at points.

N: images (or regions), P: points, C: fine-grained feature channels, K: classes.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu}

# detectron2's c2_msra_fill: He-normal over fan_out with the ReLU gain.
_hidden_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_predictor_init = nn.initializers.normal(stddev=0.001)


class PointHead(nn.Module):
    """Per-point MLP over fine-grained features and coarse logits (detectron2's
    StandardPointHead; its 1x1 Conv1d layers are `Dense` layers over the point axis).

    `__call__(fine_point_feats (N, P, C), coarse_point_logits (N, P, K)) -> (N, P, K)`.
    The input is `concat(fine, coarse)`; with `coarse_pred_each_layer` the coarse logits
    are concatenated again after every hidden layer, so the predictor sees them too.
    `activation="elu"` is a practitioner's variant (docs/design.md, section 1).
    """

    num_classes: int
    num_fc: int = 3
    fc_dim: int = 256
    coarse_pred_each_layer: bool = True
    activation: str = "relu"
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32

    def _check(self, fine, coarse):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"PointHead.activation must be one of {tuple(_ACTIVATIONS)}; got {self.activation!r}")
        for name, value in (("num_classes", self.num_classes), ("fc_dim", self.fc_dim)):
            if value < 1:
                raise ValueError(f"PointHead.{name} must be >= 1; got {value}")
        if self.num_fc < 0:
            raise ValueError(f"PointHead.num_fc must be >= 0; got {self.num_fc}")
        if np.ndim(fine) != 3:
            raise ValueError(
                f"fine_point_feats must be (N, P, C); got shape {tuple(np.shape(fine))}")
        if np.ndim(coarse) != 3 or np.shape(coarse)[:2] != np.shape(fine)[:2]:
            raise ValueError(
                f"coarse_point_logits must be (N, P, K) with the (N, P) of fine_point_feats "
                f"{tuple(np.shape(fine))[:2]}; got shape {tuple(np.shape(coarse))}")

    @nn.compact
    def __call__(self, fine_point_feats: jax.Array, coarse_point_logits: jax.Array) -> jax.Array:
        self._check(fine_point_feats, coarse_point_logits)
        act = _ACTIVATIONS[self.activation]
        coarse = coarse_point_logits
        x = jnp.concatenate([fine_point_feats, coarse.astype(fine_point_feats.dtype)], axis=-1)
        for i in range(self.num_fc):
            x = nn.Dense(self.fc_dim, kernel_init=_hidden_init, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"fc{i + 1}")(x)
            x = act(x)
            if self.coarse_pred_each_layer:
                x = jnp.concatenate([x, coarse.astype(x.dtype)], axis=-1)
        return nn.Dense(self.num_classes, kernel_init=_predictor_init, dtype=self.dtype,
                        param_dtype=self.param_dtype, name="predictor")(x)
