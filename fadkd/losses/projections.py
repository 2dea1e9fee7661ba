"""How the learned projections P_l (student width -> teacher width) start and learn.

A projection initialised at random and trained at the student's fine-tuning learning rate
(1e-5 .. 1e-4) barely moves in a few hundred steps, so the feature terms pull the student's
hidden states toward a near-random image of the teacher's: that wrecks pretrained features
instead of transferring any. Two remedies, each a config switch:

- loss.projection_init=lstsq: before step 1, fit each P_l by ridge least squares on one
  batch (student hidden states -> teacher hidden states over real tokens), so the feature
  terms start from what the student can already express linearly;
- loss.projection_init=channels (a pruned student, student.init=pruned): each P_l starts as the
  selection of the teacher's kept hidden channels, P[c_j, j] = 1, so P F_S puts the student's channel j
  where the teacher's channel c_j is, and the other teacher channels at 0;
- loss.projection_lr: the projections' own learning rate (a fresh layer wants a larger one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fadkd.losses.mapping import pair_key
from fadkd.losses.terms import feature_tokens


@torch.no_grad()
def fit_linear(student: Tensor, teacher: Tensor, layer: nn.Linear, ridge: float = 1e-3) -> None:
    """Set `layer` (in=Hs, out=Ht) to the ridge least-squares map student [N, Hs] -> teacher [N, Ht].

    Solved on centred data (the bias takes the means, unpenalised); the ridge is relative,
    ridge · the mean eigenvalue of the Gram matrix, so it does not depend on the inputs' scale.
    """
    x, y = student.double(), teacher.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    x, y = x - x_mean, y - y_mean
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(len(gram), dtype=torch.double)
    weight = torch.linalg.solve(gram, x.T @ y).T  # [Ht, Hs]
    layer.weight.copy_(weight.to(layer.weight.dtype))
    layer.bias.copy_((y_mean - weight @ x_mean).to(layer.bias.dtype))


@torch.no_grad()
def select_channels(loss_fn, channels: list[int]) -> int:
    """loss.projection_init=channels: every projection of `loss_fn` set to the channel selection (bias 0).

    channels[j] is the teacher channel the student's channel j was kept from. Returns how many were set.
    """
    for layer in loss_fn.projections.values():
        if layer.in_features != len(channels) or max(channels) >= layer.out_features:
            raise ValueError(
                f"{len(channels)} kept channels do not fit a projection {layer.in_features} -> {layer.out_features}"
            )
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[torch.tensor(channels), torch.arange(len(channels))] = 1.0
    return len(loss_fn.projections)


@torch.no_grad()
def fit_projections(loss_fn, student, teacher) -> dict[str, float]:
    """Least-squares start for every projection of `loss_fn` (a DistillLoss) from one batch.

    student, teacher: fadkd.models.capture.Outputs of the same batch. A shared projection is fitted
    on the tokens of every pair at once. Returns each projection's R² on that batch (the share
    of the teacher's variance it explains), for the log.
    """
    real = student.mask != 0
    stacked: dict[str, tuple[list[Tensor], list[Tensor]]] = {}
    for p in loss_fn.pairs:
        key = "shared" if "shared" in loss_fn.projections else pair_key(p)
        if key not in loss_fn.projections:
            continue
        xs, ys = stacked.setdefault(key, ([], []))
        xs.append(student.hidden[p.student][real].float().cpu())
        ys.append(teacher.hidden[p.teacher][real].float().cpu())
    r2 = {}
    for key, (xs, ys) in stacked.items():
        layer = loss_fn.projections[key]
        x, y = torch.cat(xs), torch.cat(ys)
        fit_linear(x, y, layer)
        pred = x.to(layer.weight.device) @ layer.weight.T.float() + layer.bias.float()
        y = y.to(pred.device)
        r2[key] = float(1 - (pred - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12))
    return r2


@torch.no_grad()
def fit_feature_norm(loss_fn, teacher) -> dict[str, float]:
    """loss.feature_norm=standardize: each mapped teacher layer's per-dimension mean and std.

    Measured on `teacher` (fadkd.models.capture.Outputs of one batch) over the tokens the β / γ terms
    compare, into the loss's `norm_t<layer>` buffers (saved with its projections). Returns, per
    layer, the ratio of the largest dimension's std to the median one: how much a few
    dimensions dominated the raw terms.
    """
    real = feature_tokens(teacher.mask, loss_fn.choice.feature_tokens)
    spread = {}
    for name, buffer in loss_fn.named_buffers():
        if not name.startswith("norm_t"):
            continue
        rows = teacher.hidden[int(name.removeprefix("norm_t"))][real].float()
        std = rows.std(0, unbiased=False) if len(rows) > 1 else torch.ones_like(buffer[1])
        std = std.clamp_min(1e-3 * float(std.mean()) + 1e-12)
        buffer.copy_(torch.stack([rows.mean(0), std]).to(buffer))
        spread[name.removeprefix("norm_")] = float(std.max() / std.median())
    return spread


def param_groups(student: nn.Module, loss_fn: nn.Module, lr: float, projection_lr: float | None) -> list[dict]:
    """AdamW parameter groups: the student at train.lr, the projections at loss.projection_lr."""
    groups = [{"params": [p for p in student.parameters() if p.requires_grad], "lr": lr}]
    projections = [p for p in loss_fn.parameters() if p.requires_grad]
    if projections:
        groups.append({"params": projections, "lr": lr if projection_lr is None else projection_lr})
    return groups
