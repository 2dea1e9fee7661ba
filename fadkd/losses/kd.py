"""Output-distribution terms (the α term): `loss.kd=forward_kl|reverse_kl|symmetric_kl|jsd|soft_ce|uld|dkd`.

Every term takes logits [..., V] ([B, C] for classification, [B, L, V] for causal LMs) and an
optional mask [...] over the leading positions (1/True = counted; None = every position), softens
both sides at temperature τ (p = softmax(z/τ)) and returns the mean over counted positions of a
per-position value. The KL family is multiplied by τ², as in Hinton et al.'s KD, so gradients keep
their size across τ. Masked positions never count: their logits are replaced by zeros before any
arithmetic, so padding garbage (NaN, inf) changes neither the value nor a gradient.

- forward_kl   τ²·KL(p_t ‖ p_s): mass-covering; the default (losses.kd_kl is this function).
- reverse_kl   τ²·KL(p_s ‖ p_t): mode-seeking (MiniLLM, torchtune's ReverseKLLoss).
- symmetric_kl τ²·(KL(p_t ‖ p_s) + KL(p_s ‖ p_t)).
- jsd          τ²·JSD_β: β·KL(p_t ‖ m) + (1 − β)·KL(p_s ‖ m), m = β·p_t + (1 − β)·p_s (GKD, Agarwal et
               al. 2024; TRL's generalized_jsd_loss). JSD_β vanishes at β = 0 and 1, so, as TRL does,
               β = 0 means forward KL and β = 1 reverse KL (the directions JSD_β/β and JSD_β/(1 − β)
               tend to); β = 0.5 is the ordinary Jensen-Shannon divergence (at most log 2).
- soft_ce      τ²·H(p_t, p_s) = τ²·(H(p_t) + KL(p_t ‖ p_s)): TextBrewer's kd_ce_loss (times τ² here).
               Not zero for identical distributions (τ²·H(p_t) there, its minimum); its gradient is forward_kl's.
- uld          Universal Logit Distillation (Boizard et al. 2024), for tokenizers that differ: see `uld`.
- dkd          Decoupled KD (Zhao et al. 2022): target and non-target parts weighted apart (fadkd/losses/dkd.py).

A sparse teacher (the causal-LM cache, fadkd/teacher/lm_cache.py) gives per position only its k most likely
tokens and the probability mass of the rest: see `TopK` and `sparse_kd_term`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fadkd.losses.dkd import dkd
from fadkd.losses.reduce import mean_over

KD_TERMS = ("forward_kl", "reverse_kl", "symmetric_kl", "jsd", "soft_ce", "uld", "dkd")
KL_FAMILY = KD_TERMS[:5]  # token-level divergences a top-k teacher determines (dkd needs the full target entry)


def _soften(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None):
    """(log p_s, log p_t, real) at τ, in float32, masked positions zeroed; real is None without a mask."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        shapes = f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        raise ValueError(f"kd logits: student and teacher shapes differ ({shapes})")
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    real = None
    if mask is not None:
        if tuple(mask.shape) != tuple(s.shape[:-1]):
            raise ValueError(f"mask has shape {tuple(mask.shape)} but the logits need {tuple(s.shape[:-1])}")
        real = mask != 0
        s = torch.where(real[..., None], s, 0.0)
        t = torch.where(real[..., None], t, 0.0)
    return F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), real


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) along the last dim, with 0·log 0 := 0 (p may hold exact zeros from -inf logits)."""
    p = log_p.exp()
    counted = p > 0  # zeroing both logs there keeps the value and every gradient finite
    return (p * (torch.where(counted, log_p, 0.0) - torch.where(counted, log_q, 0.0))).sum(-1)


def _mean(values: Tensor, real: Tensor | None) -> Tensor:
    if real is None:
        return mean_over(values.sum(), values.numel())
    return mean_over(torch.where(real, values, 0.0).sum(), real.sum())


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None):
    """τ²·mean over counted positions of KL(p_t ‖ p_s). logits [..., V] (same V); mask [...] or None."""
    log_s, log_t, real = _soften(student_logits, teacher_logits, temperature, mask)
    return _mean(_kl(log_t, log_s), real) * temperature**2


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None):
    """τ²·mean over counted positions of KL(p_s ‖ p_t). logits [..., V]; mask [...] or None."""
    log_s, log_t, real = _soften(student_logits, teacher_logits, temperature, mask)
    return _mean(_kl(log_s, log_t), real) * temperature**2


def symmetric_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None):
    """τ²·mean over counted positions of KL(p_t ‖ p_s) + KL(p_s ‖ p_t). logits [..., V]; mask [...] or None."""
    log_s, log_t, real = _soften(student_logits, teacher_logits, temperature, mask)
    return _mean(_kl(log_t, log_s) + _kl(log_s, log_t), real) * temperature**2


def generalized_jsd(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None, beta: float = 0.5
):
    """τ²·mean over counted positions of JSD_β(p_t, p_s) = β·KL(p_t ‖ m) + (1 − β)·KL(p_s ‖ m).

    m = β·p_t + (1 − β)·p_s. β in [0, 1]; β = 0 gives forward KL and β = 1 reverse KL (see the
    module docstring). logits [..., V]; mask [...] or None.
    """
    if not 0 <= beta <= 1:
        raise ValueError(f"jsd beta must be in [0, 1], got {beta}")
    log_s, log_t, real = _soften(student_logits, teacher_logits, temperature, mask)
    if beta == 0:
        values = _kl(log_t, log_s)
    elif beta == 1:
        values = _kl(log_s, log_t)
    else:
        log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
        values = beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)
    return _mean(values, real) * temperature**2


def soft_ce(student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None):
    """τ²·mean over counted positions of −Σ_v p_t(v)·log p_s(v), the soft cross-entropy.

    = forward_kl + τ²·H(p_t): the same gradient for the student, offset by the teacher's entropy.
    logits [..., V]; mask [...] or None.
    """
    log_s, log_t, real = _soften(student_logits, teacher_logits, temperature, mask)
    p_t = log_t.exp()
    values = -torch.where(p_t > 0, p_t * log_s, 0.0).sum(-1)
    return _mean(values, real) * temperature**2


def uld(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    student_mask: Tensor | None = None,
    teacher_mask: Tensor | None = None,
) -> Tensor:
    """Universal Logit Distillation: mean over aligned positions of Σ_i |sort(p_s)_i − sort(p_t)_i|.

    student_logits [..., Vs], teacher_logits [..., Vt]: the vocabularies may differ in size and
    order. Each side's probabilities (at τ) are sorted in decreasing order and the shorter vector
    is padded with zeros, so the distance compares the i-th most likely student token with the
    i-th most likely teacher token, whatever they are: the closed form of the Wasserstein-1
    distance between the two distributions when every token is at unit distance from every other.
    Range [0, 2]; no τ² factor (a distance between probability vectors, not a KL).

    Causal LMs, [B, Ls, V] and [B, Lt, V'] with masks [B, Ls], [B, Lt] (right padding): position
    i of a row is paired with position i of the same row, for i below the shorter of the row's
    two real lengths (alignment by truncation, as in the paper); later positions do not count.
    Classification, [B, C] and [B, C']: masks None, every row counts.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s, t = student_logits.float(), teacher_logits.float()
    real = None
    if s.dim() == 3:
        if student_mask is None or teacher_mask is None:
            raise ValueError("uld on [B, L, V] logits needs both token masks")
        length = min(s.shape[1], t.shape[1])
        s, t = s[:, :length], t[:, :length]
        n = torch.minimum((student_mask != 0).sum(1), (teacher_mask != 0).sum(1))  # [B] aligned real tokens
        real = torch.arange(length, device=s.device)[None, :] < n[:, None]
        s = torch.where(real[..., None], s, 0.0)
        t = torch.where(real[..., None], t, 0.0)
    p_s = torch.softmax(s / temperature, dim=-1).sort(dim=-1, descending=True).values
    p_t = torch.softmax(t / temperature, dim=-1).sort(dim=-1, descending=True).values
    gap = p_s.shape[-1] - p_t.shape[-1]
    if gap > 0:
        p_t = F.pad(p_t, (0, gap))
    elif gap < 0:
        p_s = F.pad(p_s, (0, -gap))
    return _mean((p_s - p_t).abs().sum(-1), real)


@dataclass
class TopK:
    """A sparse teacher distribution at temperature τ (the causal-LM cache, fadkd/teacher/lm_cache.py).

    ids [..., k] (long): the teacher's k most likely tokens at each position; logp [..., k]:
    their log p_t^τ(v) = log softmax(z_t/τ)_v over the whole vocabulary; tail [...]: the log of
    the probability mass of every other token at τ (-inf, or at most TAIL_FLOOR, when k = V).
    """

    ids: Tensor
    logp: Tensor
    tail: Tensor


TAIL_FLOOR = -1e4  # log-mass of an empty tail: exp() is 0 in float32, and every gradient stays finite


def coarsen(student_logits: Tensor, ids: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """The student's log-probabilities at τ over k + 1 outcomes: the tokens `ids`, then all others.

    student_logits [..., V], ids [..., k] (distinct per position), mask [...] or None. Returns
    [..., k + 1]: log p_s^τ(ids), and the log of the mass on the V − k other tokens (the tail
    bucket, TAIL_FLOOR + log(V) when k = V). Masked positions read zero logits (padding garbage
    never reaches a value or a gradient).
    """
    s = student_logits.float()
    if mask is not None:
        s = torch.where((mask != 0)[..., None], s, 0.0)
    log_s = F.log_softmax(s / temperature, dim=-1)
    tail = torch.logsumexp(log_s.scatter(-1, ids, TAIL_FLOOR), dim=-1)  # the k entries removed
    return torch.cat([log_s.gather(-1, ids), tail[..., None]], dim=-1)


def sparse_kd_term(
    kind: str, student_logits: Tensor, teacher: TopK, temperature: float, mask: Tensor | None = None,
    jsd_beta: float = 0.5,
) -> Tensor:  # fmt: skip
    """The α term against a sparse teacher: `kind` on both distributions coarsened to k + 1 outcomes.

    student_logits [..., V]; teacher: TopK with ids / logp [..., k], tail [...]; mask [...] or
    None. Each distribution at τ is collapsed onto the teacher's k tokens plus one bucket holding
    the mass of the V − k others, and the configured term (forward_kl, reverse_kl, symmetric_kl,
    jsd, soft_ce) is taken between those two (k + 1)-outcome distributions, times τ².

    Why this form: the coarsened distributions are both exactly known (the student's tail is
    computed from its full logits), so every term of the KL family is a proper divergence there,
    0 when the student matches the teacher's top k and its tail mass. It equals the live term at
    k = V (the tail is empty). For smaller k it never exceeds it (data processing: merging
    outcomes cannot increase an f-divergence, nor the entropy in soft_ce), and for forward_kl the
    gap is exactly τ²·mean over positions of p_t(T)·KL(p_t(·|T) ‖ p_s(·|T)): the teacher's tail
    mass times the divergence inside the tail, which the student is no longer taught
    (tests/test_lm_cache.py checks it). Renormalising the teacher over its top k instead would
    tell the student to put no mass on the tail at all. uld is refused: it compares whole sorted
    distributions, which the top k do not determine.
    """
    if kind not in KL_FAMILY:
        raise ValueError(
            f"loss.kd={kind} cannot be computed from a top-k teacher; the sparse form exists for {', '.join(KL_FAMILY)}"
        )
    if teacher.ids.shape != teacher.logp.shape or tuple(teacher.ids.shape[:-1]) != tuple(student_logits.shape[:-1]):
        raise ValueError(
            f"top-k teacher ids {tuple(teacher.ids.shape)} / logp {tuple(teacher.logp.shape)} do not fit student "
            f"logits {tuple(student_logits.shape)}"
        )
    s = coarsen(student_logits, teacher.ids, temperature, mask)
    t = torch.cat([teacher.logp.float(), teacher.tail.float().clamp_min(TAIL_FLOOR)[..., None]], dim=-1)
    return kd_term(kind, s, t, 1.0, mask, jsd_beta=jsd_beta) * temperature**2


def kd_term(
    kind: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    student_mask: Tensor | None = None,
    teacher_mask: Tensor | None = None,
    jsd_beta: float = 0.5,
    target: Tensor | None = None,
    dkd_weights: tuple[float, float] = (1.0, 8.0),
) -> Tensor:
    """The configured α term. Token-level terms use the student's mask; dkd reads `target` and its (a, b)."""
    if kind == "dkd":  # target -100 / None: the teacher's argmax (fadkd/losses/dkd.py)
        return dkd(student_logits, teacher_logits, temperature, student_mask, target, *dkd_weights)
    if kind == "uld":
        return uld(student_logits, teacher_logits, temperature, student_mask, teacher_mask)
    if kind == "jsd":
        return generalized_jsd(student_logits, teacher_logits, temperature, student_mask, jsd_beta)
    functions = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "symmetric_kl": symmetric_kl, "soft_ce": soft_ce}
    if kind not in functions:
        raise ValueError(f"unknown kd term '{kind}'; known: {', '.join(KD_TERMS)}")
    return functions[kind](student_logits, teacher_logits, temperature, student_mask)


def kd_label(kind: str, temperature: float, jsd_beta: float, dkd_weights: tuple[float, float] = (1.0, 8.0)) -> str:
    """The term's name in the printed formula, e.g. KL(τ=2.0), JSD(β=0.5, τ=2.0) or DKD(a=1.0, b=8.0, τ=2.0)."""
    names = {"forward_kl": "KL", "reverse_kl": "RKL", "symmetric_kl": "SKL", "soft_ce": "softCE", "uld": "ULD"}
    if kind == "jsd":
        return f"JSD(β={jsd_beta}, τ={temperature})"
    if kind == "dkd":
        return f"DKD(a={dkd_weights[0]}, b={dkd_weights[1]}, τ={temperature})"
    return f"{names[kind]}(τ={temperature})"


@dataclass(frozen=True)
class TermChoice:
    """Which α and δ terms DistillLoss computes (from LossConfig; the defaults are the paper's)."""

    kd: str = "forward_kl"
    jsd_beta: float = 0.5
    attn: str = "maps"  # maps | relations
    relation_heads: int = 1  # resolved: the config's value, or the teacher's attention heads
    relations: tuple[str, ...] = ("qq", "kk", "vv")
    kd_vocab: int | None = None  # compare only the first kd_vocab logits (padded vocabularies)
    feature_tokens: str = "all"  # the β / γ terms on all real tokens, or on the first one only
    feature_norm: str = "none"  # none | standardize (β / γ on per-dimension standardised teacher states)
    dkd_weights: tuple[float, float] = (1.0, 8.0)  # kd=dkd: (a, b) on its target / non-target parts

    @classmethod
    def from_config(cls, loss, teacher_heads: int | None, kd_vocab: int | None = None) -> TermChoice:
        heads = loss.relation_heads or teacher_heads or 1
        return cls(
            loss.kd, float(loss.jsd_beta), loss.attn, int(heads), tuple(loss.relations), kd_vocab, loss.feature_tokens,
            loss.feature_norm, (float(loss.dkd_alpha), float(loss.dkd_beta)),
        )  # fmt: skip

    def output_term(self, student, teacher, temperature: float, target: Tensor | None = None) -> Tensor:
        """The α term on two Outputs: token-level on [B, L, V] (token masks), per row on [B, C] (dkd: `target`)."""
        sparse = getattr(teacher, "topk", None)  # the causal-LM cache: top-k ids, log-probs, tail
        if sparse is not None:  # its ids and log-probs were taken over the first kd_vocab logits
            s_logits = student.logits if self.kd_vocab is None else student.logits[..., : self.kd_vocab]
            return sparse_kd_term(self.kd, s_logits, sparse, temperature, student.mask, self.jsd_beta)
        s_logits, t_logits = student.logits, teacher.logits.detach()
        if self.kd_vocab is not None:  # the padding entries past the real vocabulary never count
            s_logits, t_logits = s_logits[..., : self.kd_vocab], t_logits[..., : self.kd_vocab]
        s_mask, t_mask = (student.mask, teacher.mask) if s_logits.dim() == 3 else (None, None)  # causal LM
        term = (self.kd, s_logits, t_logits, temperature, s_mask, t_mask, self.jsd_beta, target, self.dkd_weights)
        return kd_term(*term)

    def attn_label(self) -> str:
        if self.attn == "maps":
            return "attn"
        return f"rel({','.join(self.relations)}; {self.relation_heads} heads)"
