"""MiniLMv2 self-attention relation distillation (Wang et al. 2021): `loss.attn=relations`.

Attention maps can only be compared head by head when teacher and student have as many heads
(fadkd otherwise compares head-averaged maps). Relations need no head correspondence and no
projection: for a mapped layer, the queries of all heads are concatenated back into one vector
per token ([B, L, heads·d], the width the layer's attention works in) and split again into R
*relation heads* of width heads·d / R, on both sides with the same R. Within relation head r,
the relation map of the queries is softmax(Q_r Q_rᵀ / √(width/R)) over the keys' axis, [B, R, L, L];
the same for keys (kk) and values (vv). Teacher and student maps have the same shape whatever
their widths and head counts, and the term is KL(teacher ‖ student) per query row, averaged over
relation heads and real query tokens, summed over the chosen relations (MiniLMv2 sums qq, kk, vv).

Q, K, V are what the attention function receives (fadkd/models/attention.py): for Llama after the rotary
embedding; under grouped-query attention the key/value heads are repeated to the query-head count,
as the model does before its attention product, so K and V have the queries' width.
Padding: padded tokens never count as keys (masked before the softmax) or as query rows; causal
LMs are not masked causally (a relation is a similarity between tokens, not attention).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fadkd.errors import FadkdError
from fadkd.losses.reduce import mean_over

RELATIONS = ("qq", "kk", "vv")
_INDEX = {"qq": 0, "kk": 1, "vv": 2}


def relation_log_probs(x: Tensor, real: Tensor, heads: int) -> Tensor:
    """log softmax(X_r X_rᵀ / √d_r) over keys, [B, R, L, L], for x = per-head vectors [B, h, L, d].

    real: [B, L] bool (True = real token). The h·d concatenated width is split into `heads`
    relation heads of width d_r = h·d / heads; padded keys get probability 0.
    """
    b, h, length, d = x.shape
    width = h * d
    if width % heads:
        raise FadkdError(
            f"loss.relation_heads={heads} does not divide an attention width of {width} ({h} heads × {d}); "
            "relation heads must divide the teacher's and the student's attention widths: pick a common "
            "divisor (e.g. the smaller model's head count)"
        )
    x = torch.where(real[:, None, :, None], x.float(), 0.0)  # padding garbage never reaches a product
    per = width // heads
    x = x.transpose(1, 2).reshape(b, length, heads, per).transpose(1, 2)  # [B, R, L, d_r]
    scores = torch.matmul(x, x.transpose(-1, -2)) / math.sqrt(per)
    scores = scores.masked_fill(~real[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.log_softmax(scores, dim=-1)


def relation_loss(
    student_qkv: tuple[Tensor, Tensor, Tensor],
    teacher_qkv: tuple[Tensor, Tensor, Tensor],
    mask: Tensor,
    heads: int,
    relations: tuple[str, ...] = RELATIONS,
) -> Tensor:
    """Σ over `relations` of the mean over real query tokens and relation heads of KL(R_T ‖ R_S).

    student_qkv / teacher_qkv: (query, key, value), each [B, h, L, d] (h, d may differ between the
    two sides and between query and key/value); mask: [B, L], 1 = real token. Zero for identical
    inputs, non-negative.
    """
    real = mask != 0
    q = student_qkv[0]
    if tuple(real.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match queries {tuple(q.shape)}")
    total = torch.zeros((), device=mask.device)
    rows = real[:, None, :]  # [B, 1, L] query rows that count
    for name in relations:
        i = _INDEX[name]
        log_s = relation_log_probs(student_qkv[i], real, heads)
        log_t = relation_log_probs(teacher_qkv[i], real, heads)
        p_t = log_t.exp()
        kl = (p_t * (log_t - log_s)).sum(-1)  # [B, R, L]; padded keys: p_t = 0 exactly
        kl = torch.where(rows, kl, 0.0).mean(1)  # over relation heads
        total = total + mean_over(kl.sum(), real.sum())
    return total


def check_relation_heads(heads: int, widths: dict[str, int]) -> None:
    """Refuse, before training, relation heads that do not divide a mapped layer's width."""
    bad = {who: w for who, w in widths.items() if w % heads}
    if bad:
        listed = ", ".join(f"{who} width {w}" for who, w in sorted(bad.items()))
        raise FadkdError(
            f"loss.relation_heads={heads} does not divide {listed}; relation heads must divide the teacher's "
            "and the student's attention widths: pick a common divisor (e.g. the smaller model's head count)"
        )
