"""The objective: the weighted combination of the loss terms, and the learned projections.

L = α·τ²·KL(p_t ‖ p_s) + ce·task
    + Σ_l λ_l [β·(1 − cos(F_T, P F_S)) + γ·‖F_T − P F_S‖² + δ·‖A_T − A_S‖² + contrast·InfoNCE(P F̄_S, F̄_T)]

The terms and their weights are the records of fadkd/losses/table.py. The α term may be another
divergence (loss.kd, fadkd/losses/kd.py; dkd: fadkd/losses/dkd.py) and the δ term MiniLMv2 relations
instead of maps (loss.attn=relations, fadkd/losses/relations.py); TermChoice says which. The contrast
term is fadkd/losses/contrast.py; loss.balance=magnitude|gradnorm rescales the terms (fadkd/losses/balance.py).

All terms are computed in float32 (inputs are upcast) so bf16/fp16 models do not lose
precision in reductions. Masks use 1/True for real tokens. Masked positions never affect
a value or a gradient: their inputs are replaced by constants before any arithmetic, so
even NaN/inf garbage in padding is harmless. Mistakes a user can fix (weights, mapping,
attention implementation, tokenizers) raise FadkdError; shape mismatches are bugs (ValueError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fadkd.errors import FadkdError
from fadkd.losses import contrast as contrast_terms
from fadkd.losses import kd as kd_terms
from fadkd.losses import terms as row_terms
from fadkd.losses.balance import balance_factors, shared_layer
from fadkd.losses.contrast import contrastive_loss, pool_real
from fadkd.losses.dkd import lm_targets
from fadkd.losses.kd import TermChoice, kd_label
from fadkd.losses.kd import forward_kl as kd_kl  # noqa: F401  (Hinton KD, the default α term; re-exported)
from fadkd.losses.mapping import LayerPair, pair_key
from fadkd.losses.relations import check_relation_heads, relation_loss
from fadkd.losses.table import BY_NAME, TERMS, feature_weights, positional, reads
from fadkd.losses.terms import attention_loss, feature_tokens, real_mask
from fadkd.losses.weights import LossWeights  # re-exported: the objective's weights

if TYPE_CHECKING:
    from fadkd.models.capture import Outputs

MODULES = {"kd": kd_terms, "terms": row_terms, "contrast": contrast_terms}
FUNCTIONS = {t.name: getattr(MODULES[t.fn.split(".")[0]], t.fn.split(".")[1]) for t in TERMS}  # each record's


def _layer(record: dict, idx: int, who: str, kind: str) -> Tensor:
    x = record.get(idx)
    if x is None and kind == "attention":
        raise FadkdError(
            f"attention maps are missing for {who} layer {idx}; the attention term (delta > 0) reads them from "
            "fadkd's attention function (fadkd/models/attention.py) or eager attention, since SDPA/flash "
            "attention return no maps; load the model with one of those or set loss.delta to 0"
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
                f"some of loss.{feature_weights().replace(', ', '/')} > 0 but no layer pair has λ > 0; give a pair "
                "λ > 0 or set them to 0"
            )
        # Layer 0 is the embedding output, which has no attention map.
        self.attn_pairs = [p for p in self.pairs if p.student and p.teacher]
        self.shared = shared_layer(w, self.pairs)  # gradnorm's z: hidden_states[shared], None = the logits
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
        if not reads(w, "hidden"):
            return
        if w.contrast > 0 and w.contrast_queue > 0:  # earlier teacher states, newest first (saved with the run)
            for p in self.pairs:
                self.register_buffer(f"queue_{pair_key(p)}", torch.zeros(w.contrast_queue, teacher_widths[p.teacher]))
                self.register_buffer(f"queued_{pair_key(p)}", torch.zeros((), dtype=torch.long))
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
        """Return (total, terms); terms are unweighted detached scalars, keyed by the table's names.

        Only terms with weight > 0 are computed and reported. Layer terms are λ-weighted sums over
        pairs; per-pair values are under "cos/s2_t4", "mse/s2_t4", "attn/s2_t4", "contrast/s2_t4". For
        regression (one output) the kd term is the MSE between student and teacher logits: a single
        output defines no distribution to take a KL over. For causal-LM logits [B, L, V] kd and ce use
        the token mask. With loss.balance=magnitude|gradnorm each term's factor is under "balance_<name>".

        feature_scale multiplies the layer terms and prediction_scale α and ce, for this call (the step's
        factors of loss.feature_schedule, fadkd/losses/spec.py). At 0 the terms are still computed, so
        every projection keeps a (zero) gradient, as DDP expects.
        """
        w = self.weights
        terms: dict[str, Tensor] = {}
        values: dict[str, Tensor] = {}  # unweighted, with their graphs
        if w.alpha > 0:
            values["kd"] = self._kd(student, teacher, labels)
        if w.layerwise:
            same = student.mask.shape == teacher.mask.shape and torch.equal(student.mask != 0, teacher.mask != 0)
            if positional(w) and not same:
                raise FadkdError(
                    "student and teacher token masks differ, so their positions do not line up; hidden-state and "
                    "attention alignment need tokenizers that give the same tokens (or set beta, gamma, delta to 0)"
                )
            sums = self._feature_terms(student, teacher, terms)
            sums |= self._attention_terms(student, teacher, terms)
            sums |= self._contrast_terms(student, teacher, terms)
            values |= {t.name: sums[t.name] for t in TERMS if t.layers and getattr(w, t.weight) > 0}
        if w.ce > 0:
            if labels is None:
                raise FadkdError(
                    "loss.ce > 0 but the batch has no labels; set loss.ce to 0 for label-free distillation"
                )
            if student.logits.dim() == 3:  # causal LM: never train on padding
                labels = labels.masked_fill(student.mask == 0, -100)
            values["ce"] = FUNCTIONS["ce"](student.logits, labels, self.is_regression)
        shared = None
        if w.balance == "gradnorm":  # z of fadkd/losses/balance.py
            shared = student.logits if self.shared is None else _layer(student.hidden, self.shared, "student", "z")
        return self.combine(values, terms, feature_scale, prediction_scale, shared), terms

    def combine(self, values: dict, terms: dict, feature_scale: float, prediction_scale: float, shared=None) -> Tensor:
        """Σ weight × value in the table's order (a name without a record is refused: the table is the one place
        a term is named); the unweighted values, and the balancer's factors, into `terms`."""
        unknown = sorted(set(values) - set(BY_NAME))
        if unknown:
            raise ValueError(f"loss terms {unknown} have no record in fadkd/losses/table.py")
        scale = {"feature": feature_scale, "prediction": prediction_scale}
        factors = balance_factors(self.weights.balance, values, shared)
        weighted: list[Tensor] = []
        for t in (t for t in TERMS if t.name in values):
            terms[t.name] = values[t.name].detach()
            weight = getattr(self.weights, t.weight) * scale[t.stage]
            if t.name in factors:
                terms[f"balance_{t.name}"] = factors[t.name]
                weight = weight * factors[t.name]
            weighted.append(weight * values[t.name])
        return torch.stack(weighted).sum()

    def _kd(self, student: Outputs, teacher: Outputs, labels: Tensor | None) -> Tensor:
        """The α term; kd=dkd reads its target from the labels (causal LMs: the next token's)."""
        if self.is_regression:
            return F.mse_loss(student.logits.float().squeeze(-1), teacher.logits.detach().float().squeeze(-1))
        target = labels if self.choice.kd == "dkd" else None
        if target is not None and student.logits.dim() == 3:
            target = lm_targets(target.masked_fill(student.mask == 0, -100), student.mask.shape)
        return self.choice.output_term(student, teacher, self.weights.temperature, target)

    def _feature_terms(self, student: Outputs, teacher: Outputs, terms: dict) -> dict[str, Tensor]:
        """β and γ: λ-weighted sums over pairs of cosine / MSE on real tokens; per-pair values into `terms`."""
        w = self.weights
        fns = [
            (t.name, FUNCTIONS[t.name]) for t in TERMS if t.reads == "hidden" and t.positional and getattr(w, t.weight)
        ]
        feature_real = feature_tokens(student.mask, self.choice.feature_tokens)  # δ sees every real token
        sums: dict[str, Tensor] = {}
        for p in self.pairs if fns else []:
            hs = _layer(student.hidden, p.student, "student", "hidden states")
            ht = _layer(teacher.hidden, p.teacher, "teacher", "hidden states")
            # Only real tokens are gathered, projected and compared (a third of a padded batch's
            # rows in the speed protocol): padding costs nothing and cannot reach a gradient.
            real_mask(feature_real, hs.shape[:-1]), real_mask(feature_real, ht.shape[:-1])  # shapes checked
            fs, ft = self._project(p, hs[feature_real]), ht[feature_real].detach()
            norm = getattr(self, f"norm_t{p.teacher}", None)  # loss.feature_norm=standardize
            if norm is not None:
                fs, ft = (fs - norm[0]) / norm[1], (ft.float() - norm[0]) / norm[1]
            for name, fn in fns:
                value = fn(fs, ft)
                terms[f"{name}/{pair_key(p)}"] = value.detach()
                sums[name] = sums.get(name, 0.0) + p.weight * value
        return sums

    def _attention_terms(self, student: Outputs, teacher: Outputs, terms: dict) -> dict[str, Tensor]:
        """δ: λ-weighted sum over pairs of attention maps (or MiniLMv2 relations); per-pair values into `terms`."""
        real = student.mask != 0
        relations = self.choice.attn == "relations"
        sums: dict[str, Tensor] = {}
        for p in self.attn_pairs if self.weights.delta > 0 else []:
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
        return sums

    def _contrast_terms(self, student: Outputs, teacher: Outputs, terms: dict) -> dict[str, Tensor]:
        """contrast: λ-weighted sum over pairs of InfoNCE on pooled states (fadkd/losses/contrast.py)."""
        w, sums = self.weights, {}
        if w.contrast <= 0:  # off: not even its masks
            return sums
        s_real = feature_tokens(student.mask, self.choice.feature_tokens)
        t_real = feature_tokens(teacher.mask, self.choice.feature_tokens)
        for p in self.pairs:
            hs = _layer(student.hidden, p.student, "student", "hidden states")
            ht = _layer(teacher.hidden, p.teacher, "teacher", "hidden states")
            pooled_s = self._project(p, pool_real(hs, s_real))  # P is affine: P(mean) = mean(P rows)
            pooled_t = pool_real(ht.detach(), t_real)
            queue = self._queue(pair_key(p), pooled_t)
            value = contrastive_loss(pooled_s, pooled_t, w.contrast_temperature, queue)
            terms[f"contrast/{pair_key(p)}"] = value.detach()
            sums["contrast"] = sums.get("contrast", 0.0) + p.weight * value
        return sums

    def _queue(self, key: str, newest: Tensor) -> Tensor | None:
        """The queue's filled rows (the negatives for this call), then `newest` pushed in front (FIFO)."""
        queue = getattr(self, f"queue_{key}", None)
        if queue is None:
            return None
        filled = int(getattr(self, f"queued_{key}"))
        n, kept = len(queue), max(len(queue) - len(newest), 0)  # a new tensor of its own (safetensors saves it)
        setattr(self, f"queue_{key}", torch.cat([newest[:n].to(queue.dtype), queue[:kept]]))
        setattr(self, f"queued_{key}", torch.clamp(getattr(self, f"queued_{key}") + len(newest), max=len(queue)))
        return queue[:filled]

    def __str__(self) -> str:
        w = self.weights
        c = self.choice
        labels = {
            "kd": "MSE(logits)" if self.is_regression else kd_label(c.kd, w.temperature, c.jsd_beta, c.dkd_weights),
            "attn": c.attn_label(),
            "contrast": f"InfoNCE(τ={w.contrast_temperature}"
            + (f", queue {w.contrast_queue})" if w.contrast_queue else ")"),
        }
        parts = [f"{getattr(w, t.weight)}*{labels.get(t.name, t.label)}" for t in TERMS if getattr(w, t.weight) > 0]
        text = "L = " + " + ".join(parts)
        ref, z = ("ce" if w.ce > 0 else "kd"), "logits" if self.shared is None else f"hidden_states[{self.shared}]"
        if w.balance == "magnitude":
            text += f" [balance=magnitude: each term × |{ref}| / |term|, detached]"
        if w.balance == "gradnorm":
            text += f" [balance=gradnorm: each term × ‖∇z {ref}‖ / ‖∇z term‖, z = student {z}, detached]"
        # λ only matters when a layer term is active.
        if w.layerwise and any(p.weight != 1.0 for p in self.all_pairs):
            lams = (f"s{p.student}→t{p.teacher}={p.weight}" for p in self.all_pairs)
            text += " [λ: " + ", ".join(lams) + "]"
        return text
