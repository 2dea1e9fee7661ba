"""Distillation loss terms and their weighted combination.

L = α·τ²·KL(p_t ‖ p_s) + ce·task
    + Σ_l λ_l [β·(1 − cos(F_T, P F_S)) + γ·‖F_T − P F_S‖² + δ·‖A_T − A_S‖²]

The α term may be another divergence (loss.kd, fadkd/losses/kd.py) and the δ term MiniLMv2
relations instead of maps (loss.attn=relations, fadkd/losses/relations.py); TermChoice says which.

All terms are computed in float32 (inputs are upcast) so bf16/fp16 models do not lose
precision in reductions. Masks use 1/True for real tokens. Masked positions never affect
a value or a gradient: their inputs are replaced by constants before any arithmetic, so
even NaN/inf garbage in padding is harmless. Mistakes a user can fix (weights, mapping,
attention implementation, tokenizers) raise FadkdError; shape mismatches are bugs (ValueError).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fadkd.errors import FadkdError
from fadkd.losses.kd import TermChoice, kd_label
from fadkd.losses.kd import forward_kl as kd_kl  # noqa: F401  (Hinton KD, the default α term; re-exported)
from fadkd.losses.mapping import LayerPair, pair_key
from fadkd.losses.relations import check_relation_heads, relation_loss

if TYPE_CHECKING:
    from fadkd.models.capture import Outputs


def _real(mask: Tensor, shape: torch.Size) -> Tensor:
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
    real = _real(mask, student.shape[:-1])
    return student[real], teacher[real]


def cosine_rows(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over rows of 1 − cos(student, teacher); [N, H] each, 0 when N = 0."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)
    return (1.0 - cos).sum() / max(len(cos), 1)


def mse_rows(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over rows of the mean over H of (student − teacher)²; [N, H] each, 0 when N = 0."""
    return (student.float() - teacher.float()).pow(2).mean(-1).sum() / max(len(student), 1)


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
    real = _real(mask, (b, length))
    pair = real[:, :, None] & real[:, None, :]  # [B, L, L]
    s, t = student_attn.float(), teacher_attn.float()
    if s.shape[1] != t.shape[1]:  # sanitise first: head-averaging would spread padding garbage
        s = torch.where(pair[:, None], s, 0.0).mean(1, keepdim=True)
        t = torch.where(pair[:, None], t, 0.0).mean(1, keepdim=True)
    # `where` after the difference: padding entries (even NaN) give 0 and a 0 gradient. Every
    # head has the same counted entries, so this is the mean over counted (head, query, key).
    diff = torch.where(pair[:, None], s - t, 0.0)
    return diff.pow(2).sum() / (pair.sum().clamp_min(1) * s.shape[1])


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
        return ((pred - target.nan_to_num()) ** 2 * known).sum() / known.sum().clamp(min=1)
    if logits.dim() == 3:  # position i predicts token i+1: one row per predicted token
        logits, labels = logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten()
    ce = F.cross_entropy(logits.float(), labels.long(), ignore_index=-100, reduction="sum")
    return ce / (labels != -100).sum().clamp(min=1)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the objective; plain values (the config converts into this)."""

    alpha: float = 1.0  # KD on logits
    temperature: float = 2.0
    beta: float = 0.0  # cosine feature alignment
    gamma: float = 0.0  # MSE feature alignment
    delta: float = 0.0  # attention alignment
    ce: float = 1.0  # task loss on labels

    def __post_init__(self) -> None:
        for f in fields(self):
            v = float(getattr(self, f.name))
            if not 0 <= v < float("inf"):
                raise FadkdError(f"loss.{f.name} must be a finite number >= 0, got {v}")
            # Stored as float so ints from a config print as 1.0 in the formula.
            object.__setattr__(self, f.name, v)
        if self.temperature <= 0:
            raise FadkdError(f"loss.temperature must be > 0, got {self.temperature} (2.0 is a common choice)")
        if not any((self.alpha, self.beta, self.gamma, self.delta, self.ce)):
            raise FadkdError(
                "all loss weights are 0, so nothing would be trained; set alpha, beta, gamma, delta or ce > 0"
            )

    @property
    def layerwise(self) -> bool:
        """Whether any hidden-state/attention term is active."""
        return self.beta > 0 or self.gamma > 0 or self.delta > 0


def _layer(record: dict, idx: int, who: str, kind: str) -> Tensor:
    x = record.get(idx)
    if x is None and kind == "attention":
        raise FadkdError(
            f"attention maps are missing for {who} layer {idx}; the attention term (delta > 0) needs models "
            "that run with eager attention (attn_implementation='eager'), since SDPA/flash attention return "
            "no maps; load both models with eager attention or set loss.delta to 0"
        )
    if x is None:
        have = sorted(record)
        raise ValueError(f"{kind} of {who} layer {idx} not captured (have {have})")
    return x


class DistillLoss(nn.Module):
    """The full objective, holding the learned projections P_l.

    One nn.Linear(student_width, teacher_width) per pair whose widths differ (key
    "s{student}_t{teacher}"), only when beta or gamma > 0; with shared_projection=True
    a single Linear (key "shared") serves all pairs, which requires every pair to have
    the same (student, teacher) widths. Pairs with λ = 0 are skipped entirely (no
    projection, no term). Teacher tensors are detached: the teacher is a fixed target.
    """

    def __init__(
        self,
        weights: LossWeights,
        pairs: list[LayerPair],
        student_widths: dict[int, int],
        teacher_widths: dict[int, int],
        is_regression: bool,
        shared_projection: bool = False,
        choice: TermChoice | None = None,
    ) -> None:
        super().__init__()
        w = self.weights = weights
        c = self.choice = choice or TermChoice()  # which α / δ terms (fadkd/losses/kd.py)
        self.all_pairs = list(pairs)
        self.pairs = [p for p in pairs if p.weight > 0]
        self.is_regression = is_regression
        if w.layerwise and not self.pairs:
            raise FadkdError(
                "loss.beta/gamma/delta > 0 but no layer pair has λ > 0; give a pair λ > 0 or set them to 0"
            )
        # Layer 0 is the embedding output, which has no attention map.
        self.attn_pairs = [p for p in self.pairs if p.student and p.teacher]
        if w.delta > 0 and not self.attn_pairs:
            raise FadkdError(
                "loss.delta > 0 but every layer pair uses layer 0 (embeddings), which has no attention map; "
                "map at least one transformer layer (1..L) or set loss.delta to 0"
            )
        if w.delta > 0 and c.attn == "relations":  # attention width = hidden width for the models fadkd loads
            widths = {f"student layer {p.student}": student_widths.get(p.student, 0) for p in self.attn_pairs}
            widths |= {f"teacher layer {p.teacher}": teacher_widths.get(p.teacher, 0) for p in self.attn_pairs}
            check_relation_heads(c.relation_heads, {k: v for k, v in widths.items() if v})
        self.projections = nn.ModuleDict()
        if w.beta == 0 and w.gamma == 0:
            return
        if c.feature_norm == "standardize":  # per teacher layer: [mean; std] of its dimensions (fit_feature_norm)
            for t in sorted({p.teacher for p in self.pairs}):
                width = teacher_widths.get(t)
                if width is None:
                    raise ValueError(f"no hidden width given for teacher layer {t}")
                self.register_buffer(f"norm_t{t}", torch.stack([torch.zeros(width), torch.ones(width)]))
        widths = {}
        for p in self.pairs:
            if p.student not in student_widths or p.teacher not in teacher_widths:
                raise ValueError(f"no hidden width given for pair {pair_key(p)}")
            widths[pair_key(p)] = (student_widths[p.student], teacher_widths[p.teacher])
        differing = {k: v for k, v in widths.items() if v[0] != v[1]}
        if shared_projection and differing:
            if len(set(widths.values())) != 1:
                raise FadkdError(
                    f"shared_projection needs the same (student, teacher) hidden widths for every pair, got {widths}; "
                    "set loss.shared_projection to false to learn one projection per pair"
                )
            self.projections["shared"] = nn.Linear(*next(iter(differing.values())))
            return
        for key, (sw, tw) in differing.items():
            self.projections[key] = nn.Linear(sw, tw)

    def _project(self, pair: LayerPair, rows: Tensor) -> Tensor:
        """P_l applied to the student's real-token rows [N, Hs] (padding is never projected)."""
        key = "shared" if "shared" in self.projections else pair_key(pair)
        return self.projections[key](rows.float()) if key in self.projections else rows

    def forward(
        self,
        student: Outputs,
        teacher: Outputs,
        labels: Tensor | None = None,
        feature_scale: float = 1.0,
        prediction_scale: float = 1.0,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return (total, terms); terms are unweighted detached scalars.

        feature_scale multiplies β, γ, δ and prediction_scale α and ce, for this call (the step's
        factors of loss.feature_schedule, fadkd/losses/spec.py). At 0 the terms are still computed, so
        every projection keeps a (zero) gradient, as DDP expects.

        Only terms with weight > 0 are computed and reported. Feature/attention terms
        are λ-weighted sums over pairs; per-pair values are under "cos/s2_t4",
        "mse/s2_t4", "attn/s2_t4". For regression (one output) the kd term is the MSE
        between student and teacher logits: a single output defines no distribution to
        take a KL over. For causal-LM logits [B, L, V] kd and ce use the token mask.
        """
        w = self.weights
        terms: dict[str, Tensor] = {}
        weighted: list[Tensor] = []

        def add(name: str, weight: float, value: Tensor) -> None:
            terms[name] = value.detach()
            weighted.append(weight * value)

        causal = student.logits.dim() == 3
        if w.alpha > 0:
            if self.is_regression:
                kd = F.mse_loss(student.logits.float().squeeze(-1), teacher.logits.detach().float().squeeze(-1))
            else:
                kd = self.choice.output_term(student, teacher, w.temperature)
            add("kd", w.alpha * prediction_scale, kd)
        if w.layerwise:
            same = student.mask.shape == teacher.mask.shape and torch.equal(student.mask != 0, teacher.mask != 0)
            if not same:
                raise FadkdError(
                    "student and teacher token masks differ, so their positions do not line up; hidden-state and "
                    "attention alignment need tokenizers that give the same tokens (or set beta, gamma, delta to 0)"
                )
            real = student.mask != 0
            feature_real = feature_tokens(student.mask, self.choice.feature_tokens)  # δ sees every real token
            sums: dict[str, Tensor] = {}
            feature_fns = [
                (name, fn)
                for name, weight, fn in (("cos", w.beta, cosine_rows), ("mse", w.gamma, mse_rows))
                if weight > 0
            ]
            for p in self.pairs if feature_fns else []:
                hs = _layer(student.hidden, p.student, "student", "hidden states")
                ht = _layer(teacher.hidden, p.teacher, "teacher", "hidden states")
                # Only real tokens are gathered, projected and compared (a third of a padded batch's
                # rows in the speed protocol): padding costs nothing and cannot reach a gradient.
                _real(feature_real, hs.shape[:-1]), _real(feature_real, ht.shape[:-1])  # shapes checked
                fs, ft = self._project(p, hs[feature_real]), ht[feature_real].detach()
                norm = getattr(self, f"norm_t{p.teacher}", None)  # loss.feature_norm=standardize
                if norm is not None:
                    fs, ft = (fs - norm[0]) / norm[1], (ft.float() - norm[0]) / norm[1]
                for name, fn in feature_fns:
                    value = fn(fs, ft)
                    terms[f"{name}/{pair_key(p)}"] = value.detach()
                    sums[name] = sums.get(name, 0.0) + p.weight * value
            relations = self.choice.attn == "relations"
            for p in self.attn_pairs if w.delta > 0 else []:
                if relations:  # MiniLMv2 relations from each side's query / key / value (fadkd/losses/relations.py)
                    q_s = _layer(student.qkv, p.student, "student", "query/key/value")
                    q_t = tuple(x.detach() for x in _layer(teacher.qkv, p.teacher, "teacher", "query/key/value"))
                    value = relation_loss(q_s, q_t, real, self.choice.relation_heads, self.choice.relations)
                else:
                    a_s = _layer(student.attentions, p.student, "student", "attention")
                    a_t = _layer(teacher.attentions, p.teacher, "teacher", "attention")
                    value = attention_loss(a_s, a_t.detach(), real)
                terms[f"attn/{pair_key(p)}"] = value.detach()
                sums["attn"] = sums.get("attn", 0.0) + p.weight * value
            for name, weight in (("cos", w.beta), ("mse", w.gamma), ("attn", w.delta)):
                if weight > 0:
                    add(name, weight * feature_scale, sums[name])
        if w.ce > 0:
            if labels is None:
                raise FadkdError(
                    "loss.ce > 0 but the batch has no labels; set loss.ce to 0 for label-free distillation"
                )
            if causal:  # never train on padding
                labels = labels.masked_fill(student.mask == 0, -100)
            add("ce", w.ce * prediction_scale, task_loss(student.logits, labels, self.is_regression))
        total = torch.stack(weighted).sum()
        return total, terms

    def __str__(self) -> str:
        w = self.weights
        c = self.choice
        kd = "MSE(logits)" if self.is_regression else kd_label(c.kd, w.temperature, c.jsd_beta)
        named = ((kd, w.alpha), ("cos", w.beta), ("mse", w.gamma), (c.attn_label(), w.delta))
        parts = [f"{v}*{name}" for name, v in (*named, ("ce", w.ce)) if v > 0]
        text = "L = " + " + ".join(parts)
        # λ only matters when a layer term is active.
        if w.layerwise and any(p.weight != 1.0 for p in self.all_pairs):
            lams = (f"s{p.student}→t{p.teacher}={p.weight}" for p in self.all_pairs)
            text += " [λ: " + ", ".join(lams) + "]"
        return text
