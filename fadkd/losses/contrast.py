"""Contrastive feature alignment (`loss.contrast`): InfoNCE between pooled student and teacher states.

For each mapped layer pair, each sequence's student hidden state is mean-pooled over its real tokens
(the positions β and γ compare, loss.feature_tokens) and put through the pair's projection P_l; the
teacher's state at the mapped layer is pooled the same way. Row i of the student must then pick its own
teacher row i out of the batch (in-batch negatives, as CRD, Tian et al. 2020, and CoDIR, Sun et al.
2020, on mean-pooled BERT layers), optionally also against a queue of earlier batches' teacher rows
(loss.contrast_queue; MoCo's memory queue, as CoDIR uses): similarity = cosine / τ_c
(loss.contrast_temperature), loss = mean over rows of cross-entropy with the own teacher row as class.

All in float32; padding never enters a value or a gradient (pooling reads real tokens only).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from fadkd.losses.reduce import mean_over


def mean_pool(rows: Tensor, sample: Tensor, batch: int) -> Tensor:
    """[B, H]: the mean of each sequence's rows. rows [N, H] (real tokens only), sample [N] (long, which
    sequence each row belongs to, in 0..B−1). A sequence with no row pools to zeros."""
    sums = torch.zeros(batch, rows.shape[-1], dtype=torch.float32, device=rows.device)
    sums = sums.index_add(0, sample, rows.float())
    counts = torch.bincount(sample, minlength=batch).clamp_min(1).to(sums.dtype)
    return sums / counts[:, None]


def pool_real(hidden: Tensor, real: Tensor) -> Tensor:
    """[B, H]: hidden [B, L, H] mean-pooled over the positions where real [B, L] (bool) is True."""
    if tuple(real.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"mask has shape {tuple(real.shape)} but the hidden states need {tuple(hidden.shape[:-1])}")
    return mean_pool(hidden[real], real.nonzero()[:, 0], hidden.shape[0])


def contrastive_loss(student: Tensor, teacher: Tensor, temperature: float, queue: Tensor | None = None) -> Tensor:
    """InfoNCE: mean over i of −log softmax_j(cos(s_i, t_j) / τ)[i], j over the batch's teacher rows, then the
    queue's.

    student [B, H] (pooled, projected to the teacher's width), teacher [B, H] (pooled, detached by the caller),
    queue [Q, H] or None: earlier teacher rows, extra negatives only. With B = 1 and no queue the value is 0
    (one candidate). Its minimum over the student, for distinct teacher rows, is where each s_i points along t_i.
    """
    if temperature <= 0:
        raise ValueError(f"contrast temperature must be > 0, got {temperature}")
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"contrast: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be [B, H]")
    s = F.normalize(student.float(), dim=-1, eps=1e-8)
    candidates = teacher.float() if queue is None or not len(queue) else torch.cat([teacher.float(), queue.float()])
    t = F.normalize(candidates, dim=-1, eps=1e-8)
    logits = s @ t.T / temperature
    # Negatives are this process's batch (and queue); the mean over rows is the global batch's under torchrun.
    return mean_over(F.cross_entropy(logits, torch.arange(len(s), device=s.device), reduction="sum"), len(s))
