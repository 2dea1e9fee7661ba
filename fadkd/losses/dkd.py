"""Decoupled knowledge distillation (`loss.kd=dkd`; Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation").

With p = softmax(z/τ) over V classes and t the target class, the forward KL splits into

    KL(p_T ‖ p_S) = TCKD + (1 − p_T[t])·NCKD

TCKD = KL(b_T ‖ b_S) over the binary distributions b = (p[t], 1 − p[t]) (target vs the rest);
NCKD = KL(p̂_T ‖ p̂_S) over the non-target classes renormalised, p̂[v] = p[v] / (1 − p[t]), v ≠ t.
DKD weighs them apart: τ²·(a·TCKD + b·NCKD), a = loss.dkd_alpha, b = loss.dkd_beta; a = 1 and the
per-position weight b = 1 − p_T[t] give τ²·forward KL exactly (tests/test_dkd.py checks it).

The target: the hard label where the row has one; a row without one (teacher-labelled copies, -100,
or no labels at all) takes the teacher's most likely class. Causal LMs: per token, the target of
position i is its next token (labels[i + 1]), the last position takes the teacher's argmax.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from fadkd.losses.reduce import mean_over


def dkd_target(teacher_logits: Tensor, labels: Tensor | None) -> Tensor:
    """The target class per position: labels [...] (long; -100 or negative = none), else the teacher's argmax.
    teacher_logits [..., V]. Labels outside 0..V−1 (none) take the argmax too."""
    argmax = teacher_logits.argmax(-1)
    if labels is None:
        return argmax
    labels = labels.long()
    known = (labels >= 0) & (labels < teacher_logits.shape[-1])
    return torch.where(known, labels, argmax)


def _log_parts(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(log b [..., 2]: log p[t], log(1 − p[t]); log p̂ [..., V] over the non-target classes, -inf at t)."""
    at_target = F.one_hot(target, logits.shape[-1]).bool()
    others = logits.masked_fill(at_target, float("-inf"))
    norm = torch.logsumexp(logits, dim=-1)
    log_t = logits.gather(-1, target[..., None]).squeeze(-1) - norm
    log_rest = torch.logsumexp(others, dim=-1) - norm
    return torch.stack([log_t, log_rest], dim=-1), F.log_softmax(others, dim=-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) along the last dim, 0·log 0 := 0 (the -inf entries: the target in p̂, or an empty side)."""
    p = log_p.exp()
    counted = p > 0
    return (p * (torch.where(counted, log_p, 0.0) - torch.where(counted, log_q, 0.0))).sum(-1)


def dkd_parts(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float):
    """(TCKD, NCKD, p_T[t]) per position, without τ²: logits [..., V] (float32 inside), target [...] long."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        shapes = f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        raise ValueError(f"dkd logits: student and teacher shapes differ ({shapes})")
    b_s, hat_s = _log_parts(student_logits.float() / temperature, target)
    b_t, hat_t = _log_parts(teacher_logits.float() / temperature, target)
    return _kl(b_t, b_s), _kl(hat_t, hat_s), b_t[..., 0].exp()


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    mask: Tensor | None = None,
    target: Tensor | None = None,
    alpha: float = 1.0,
    beta: float | Tensor = 8.0,
) -> Tensor:
    """τ²·mean over counted positions of alpha·TCKD + beta·NCKD.

    logits [..., V]; mask [...] or None (1/True = counted; masked positions read zero logits, so padding
    garbage never reaches a value or a gradient); target [...] (see dkd_target; None = the teacher's argmax);
    beta a float or a tensor [...] of per-position weights (1 − p_T[t] gives forward KL).
    """
    s, t = student_logits.float(), teacher_logits.float()
    real = None
    if mask is not None:
        if tuple(mask.shape) != tuple(s.shape[:-1]):
            raise ValueError(f"mask has shape {tuple(mask.shape)} but the logits need {tuple(s.shape[:-1])}")
        real = mask != 0
        s, t = torch.where(real[..., None], s, 0.0), torch.where(real[..., None], t, 0.0)
    target = dkd_target(t, target)  # -100 (or none) where unknown: the teacher's argmax
    if real is not None:
        target = torch.where(real, target, 0)
    tckd, nckd, _ = dkd_parts(s, t, target, temperature)
    values = alpha * tckd + beta * nckd
    # One reduction with the other KD forms: under torchrun, over the global batch's counted positions.
    mean = (
        mean_over(values.sum(), values.numel())
        if real is None
        else mean_over(torch.where(real, values, 0.0).sum(), real.sum())
    )
    return mean * temperature**2


def lm_targets(labels: Tensor | None, shape: torch.Size) -> Tensor | None:
    """Causal LM: the target of position i is labels[:, i + 1]; the last position has none (-100)."""
    if labels is None:
        return None
    nxt = torch.full(tuple(shape), -100, dtype=torch.long, device=labels.device)
    nxt[:, :-1] = labels[:, 1:].long()
    return nxt
