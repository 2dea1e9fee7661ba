"""Balanced weights (`loss.balance`): every term that is on rescaled to one reference term, each step.

The reference is the task loss (ce) when it is on, else KD (alpha). Every other term k that is on gets a
factor f_k, detached (a constant of the step: no gradient flows through it, no second-order term), so the
weights then say how much each term counts relative to the reference, whatever the terms' natural scales
(fadkd's demo logs kd 0.008, cos 0.164, mse 0.308, attn 0.001). The factors are logged per step
(steps.jsonl "balance_<term>") and drawn by `fadkd plot` (balance.png). With one term on there is nothing
to balance: no factor, nothing computed.

magnitude: f_k = |L_ref| / |L_k| (values unweighted), so weight_k · f_k · L_k has the size weight_k · |L_ref|.
This is the idea of NVIDIA ModelOpt's LogitsAndIntermediatesLossBalancer (modelopt.torch.distill), which
rescales the intermediate terms' mean to the logit term's, then their sum to the task loss's; here each
term is rescaled on its own.

gradnorm: f_k = ‖∇_z L_ref‖ / ‖∇_z L_k‖, the gradients of the unweighted terms with respect to z, the
deepest student representation that every term on back-propagates through (`shared_layer`): the
student's hidden_states[j] with j the shallowest layer a layer term reads (layer s for hidden-state terms,
s − 1 for attention maps or query/key/value, which layer s computes from its input), or the logits when
only KD and ce are on. Then ‖∇_z (weight_k · f_k · L_k)‖ = weight_k · ‖∇_z L_ref‖: every term pushes the
shared representation equally hard, scaled by its weight. This is GradNorm (Chen et al., ICML 2018,
arXiv 1711.02257) without its learned weights and training-rate target (its asymmetry α = 0, the balance
it converges to, taken in closed form every step), on the last shared layer as GradNorm recommends, but
measured on that layer's output rather than its weights: the gradient with respect to the shared
representation, as MGDA-UB does (Sener & Koltun, NeurIPS 2018, arXiv 1810.04650), which needs no
parameter gradients, so it leaves DDP's gradient hooks and the optimizer untouched. The survey of the
paper (arXiv 2504.13825) names gradient-aware scheduling of the transfer weights; this is that, per step.
Under torchrun the squared norms are summed over every process before the ratio (z is each process's
shard of the global batch), so every rank applies the same factors.

Cost: one torch.autograd.grad per term on (retain_graph) from the term down to z, activations only (no
parameter gradients), each up to a backward through the student above z; plus one all-reduce of K numbers
under torchrun. In the speed protocol (5 terms, z = the embedding output): see bench/results/speed.md.
"""

import torch
from torch import Tensor

from fadkd.losses.reduce import summed_over_processes
from fadkd.losses.table import active

EPS = 1e-12  # a term at exactly 0 (or with no gradient) gets a large but finite factor


def reference(values: dict[str, Tensor]) -> str | None:
    """The term the others are scaled to: ce, else kd, else None."""
    return next((name for name in ("ce", "kd") if name in values), None)


def magnitude_factors(values: dict[str, Tensor], ref: str) -> dict[str, Tensor]:
    """{term: |values[ref]| / |values[term]|} for every term but `ref`, detached float32 scalars."""
    size = values[ref].detach().float().abs()
    return {k: size / v.detach().float().abs().clamp_min(EPS) for k, v in values.items() if k != ref}


def shared_layer(weights, pairs) -> int | None:
    """The student's hidden_states index that every term on reads through (None: the logits, only KD / ce).

    `pairs` are the layer pairs with λ > 0. hidden_states[0] is the embedding output; attention maps and
    query/key/value of layer s are computed from hidden_states[s − 1]."""
    depths = [
        p.student - 1 if t.reads == "attentions" else p.student
        for t in active(weights)
        if t.layers
        for p in pairs
        if t.reads != "attentions" or p.student > 0
    ]
    return min(depths) if depths else None


def gradnorm_factors(values: dict[str, Tensor], ref: str, shared: Tensor) -> dict[str, Tensor]:
    """{term: ‖∇_shared values[ref]‖ / ‖∇_shared values[term]‖} for every term but `ref`, detached float32
    scalars; the squared norms summed over processes under torchrun (fadkd/losses/reduce.py)."""
    squares = []
    for value in values.values():
        grad = None
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
        squares.append(grad.float().square().sum() if grad is not None else shared.new_zeros((), dtype=torch.float32))
    norms = summed_over_processes(torch.stack(squares)).sqrt()
    size = norms[list(values).index(ref)]
    return {k: size / norms[i].clamp_min(EPS) for i, k in enumerate(values) if k != ref}


def balance_factors(balance: str, values: dict[str, Tensor], shared: Tensor | None = None) -> dict[str, Tensor]:
    """This step's factors for loss.balance (none, or a single term: no factors, nothing computed).

    gradnorm needs `shared`, the representation z (DistillLoss passes it); outside autograd (no_grad) it
    gives no factors."""
    if balance == "none" or len(values) < 2:
        return {}
    if balance not in ("magnitude", "gradnorm"):
        raise ValueError(f"loss.balance={balance!r} is not one of none, magnitude, gradnorm")
    ref = reference(values)
    if ref is None:
        return {}
    if balance == "magnitude":
        return magnitude_factors(values, ref)
    if shared is None or not (torch.is_grad_enabled() and shared.requires_grad):
        return {}
    return gradnorm_factors(values, ref, shared)
