"""The per-position loss terms: cosine and MSE of hidden states, attention maps, the task loss.

All terms are computed in float32 (inputs are upcast) so bf16/fp16 models do not lose precision in
reductions. Masks use 1/True for real tokens. Masked positions never affect a value or a gradient:
their inputs are replaced by constants before any arithmetic, so even NaN/inf garbage in padding is
harmless. Shape mismatches are bugs (ValueError).
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from fadkd.losses.reduce import mean_over


def real_mask(mask: Tensor, shape: torch.Size) -> Tensor:
    """Mask as bool, checked against the leading shape it must cover."""
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but the inputs need {tuple(shape)}")
    return mask != 0


def feature_tokens(mask: Tensor, which: str) -> Tensor:
    """Bool [B, L]: the positions β and γ compare, all real tokens or ("first") position 0 only."""
    real = mask != 0
    return real & (torch.arange(real.shape[1], device=real.device) == 0) if which == "first" else real


def _same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        shapes = f"{tuple(student.shape)} vs {tuple(teacher.shape)}"
        raise ValueError(f"{what}: student and teacher shapes differ ({shapes})")


def _rows(student: Tensor, teacher: Tensor, mask: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """The real tokens of [B, L, H] student and teacher, as [N, H] rows (padding never read)."""
    _same_shape(student, teacher, what)
    real = real_mask(mask, student.shape[:-1])
    return student[real], teacher[real]


def cosine_rows(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over rows of 1 − cos(student, teacher); [N, H] each, 0 when N = 0."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)
    return mean_over((1.0 - cos).sum(), len(cos))


def mse_rows(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over rows of the mean over H of (student − teacher)²; [N, H] each, 0 when N = 0."""
    return mean_over((student.float() - teacher.float()).pow(2).mean(-1).sum(), len(student))


def cosine_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens of 1 − cos(student, teacher) along H.

    student, teacher: [B, L, H] (student already projected to the teacher width);
    mask: [B, L]. Invariant to positive scaling of either input. Range [0, 2].
    """
    return cosine_rows(*_rows(student, teacher, mask, "hidden states for cosine loss"))


def mse_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens of the mean over H of (student − teacher)².

    student, teacher: [B, L, H]; mask: [B, L]. Normalised per element (mean, not sum,
    over H) so the scale does not grow with the hidden width and γ transfers across
    model sizes.
    """
    return mse_rows(*_rows(student, teacher, mask, "hidden states for mse loss"))


def attention_loss(student_attn: Tensor, teacher_attn: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error between attention probability maps.

    student_attn: [B, Hs, L, L], teacher_attn: [B, Ht, L, L]; mask: [B, L]. If Hs == Ht
    the maps are compared head by head; otherwise each side is first averaged over its heads
    (no head correspondence exists) and the [B, 1, L, L] means are compared. Only entries
    whose query AND key are real tokens count; the result is the mean over those entries,
    averaged over heads in the per-head case.
    """
    if student_attn.dim() != 4 or teacher_attn.dim() != 4:
        raise ValueError("attention maps must be [B, heads, L, L]")
    # Head counts may differ; batch and sequence sizes may not.
    _same_shape(student_attn[:, :1], teacher_attn[:, :1], "attention maps [B, :, L, L]")
    b, _, length, _ = student_attn.shape
    real = real_mask(mask, (b, length))
    pair = real[:, :, None] & real[:, None, :]  # [B, L, L]
    s, t = student_attn.float(), teacher_attn.float()
    if s.shape[1] != t.shape[1]:  # sanitise first: head-averaging would spread padding garbage
        s = torch.where(pair[:, None], s, 0.0).mean(1, keepdim=True)
        t = torch.where(pair[:, None], t, 0.0).mean(1, keepdim=True)
    # `where` after the difference: padding entries (even NaN) give 0 and a 0 gradient. Every
    # head has the same counted entries, so this is the mean over counted (head, query, key).
    diff = torch.where(pair[:, None], s - t, 0.0)
    return mean_over(diff.pow(2).sum(), pair.sum() * s.shape[1])


def task_loss(logits: Tensor, labels: Tensor, is_regression: bool) -> Tensor:
    """Supervised loss of the student.

    Regression: MSE of logits.squeeze(-1) ([B, 1] -> [B]) against float labels [B], NaN skipped.
    Classification: cross-entropy of logits [B, C] against class ids [B], -100 skipped (the two
    marks of task.augment's copies). Causal LM: logits [B, L, V], labels [B, L] aligned with input_ids
    (Hugging Face convention); shifted here so position i predicts token i+1; label -100 is ignored.
    """
    if is_regression:
        pred, target = logits.float().squeeze(-1), labels.float().reshape(-1)
        known = ~target.isnan()
        return mean_over(((pred - target.nan_to_num()) ** 2 * known).sum(), known.sum())
    if logits.dim() == 3:  # position i predicts token i+1: one row per predicted token
        logits, labels = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
    ce = F.cross_entropy(logits.float(), labels.long(), ignore_index=-100, reduction="sum")
    return mean_over(ce, (labels != -100).sum())
