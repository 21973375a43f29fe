"""Plain-torch re-statements of detectron2's PointRend pieces, used as test oracles.

Written from the method's definitions (docs/design.md, section 1); NCHW / (N, C, P) like detectron2.
"""
import numpy as np
import torch
import torch.nn.functional as F


class TorchPointHead(torch.nn.Module):
    """detectron2's StandardPointHead: 1x1 Conv1d layers over (N, C, P)."""

    def __init__(self, in_channels, num_classes, num_fc, fc_dim, coarse_pred_each_layer, activation):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.act = {"relu": F.relu, "elu": F.elu}[activation]
        dim_in = in_channels + num_classes
        self.fcs = torch.nn.ModuleList()
        for _ in range(num_fc):
            self.fcs.append(torch.nn.Conv1d(dim_in, fc_dim, 1))
            dim_in = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = torch.nn.Conv1d(dim_in, num_classes, 1)

    def load_flax(self, params):
        """Copies a flax PointHead's params (Dense kernels (in, out)) into the Conv1d layers."""
        layers = list(self.fcs) + [self.predictor]
        names = [f"fc{i + 1}" for i in range(len(self.fcs))] + ["predictor"]
        with torch.no_grad():
            for layer, name in zip(layers, names):
                kernel = np.asarray(params[name]["kernel"], np.float64)
                layer.weight.copy_(torch.from_numpy(kernel.T[:, :, None]))
                layer.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"], np.float64)))
        return self.double()

    def forward(self, fine, coarse):
        x = torch.cat([fine, coarse], dim=1)
        for fc in self.fcs:
            x = self.act(fc(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.predictor(x)


def point_sample(features, coords):
    """features (N, C, H, W), coords (N, P, 2) in [0, 1] -> (N, C, P)."""
    return F.grid_sample(features, coords[:, None] * 2 - 1, align_corners=False)[:, :, 0]


def subdivision(coarse, fine_maps, head, num_steps, num_points):
    """detectron2's PointRendSemSegHead inference loop; coarse (N, K, H, W), fine maps NCHW."""
    logits = coarse.clone()
    for _ in range(num_steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        top2 = torch.topk(logits, k=2, dim=1)[0]
        uncertainty = top2[:, 1] - top2[:, 0]
        n, k, h, w = logits.shape
        p = min(h * w, num_points)
        idx = torch.topk(uncertainty.view(n, h * w), k=p, dim=1)[1]
        coords = torch.stack([(idx % w).double() / w + 0.5 / w, (idx // w).double() / h + 0.5 / h], -1)
        fine = torch.cat([point_sample(f, coords) for f in fine_maps], dim=1)
        point_logits = head(fine, point_sample(coarse, coords))
        logits = logits.reshape(n, k, h * w).scatter_(2, idx[:, None].expand(-1, k, -1), point_logits)
        logits = logits.view(n, k, h, w)
    return logits


def nchw(x):
    return torch.from_numpy(np.asarray(x, np.float64)).permute(0, 3, 1, 2).contiguous()
