"""Balanced weights (`loss.balance`): every term that is on rescaled to one reference term's magnitude.

magnitude: at every step each term k other than the reference gets the factor |L_ref| / |L_k|, both values
unweighted and the factor detached (a constant of the step: no gradient flows through it), so
weight_k · factor_k · L_k has the size weight_k · |L_ref|: the weights then say how much each term counts
relative to the reference, whatever the terms' natural scales (fadkd's demo logs kd 0.008, cos 0.164,
mse 0.308, attn 0.001). The reference is the task loss (ce) when it is on, else KD (alpha). This is the
idea of NVIDIA ModelOpt's LogitsAndIntermediatesLossBalancer (modelopt.torch.distill), which rescales
the intermediate terms' mean to the logit term's, then their sum to the task loss's; here each term is
rescaled on its own. The factors are logged per step (steps.jsonl "balance_<term>") and drawn by
`fadkd plot` (balance.png).

gradnorm (scaling by gradient norms on shared layers) is not implemented: it needs one extra backward
pass per term each step.
"""

from torch import Tensor

EPS = 1e-12  # a term at exactly 0 gets a large but finite factor


def reference(values: dict[str, Tensor]) -> str | None:
    """The term the others are scaled to: ce, else kd, else None."""
    return next((name for name in ("ce", "kd") if name in values), None)


def magnitude_factors(values: dict[str, Tensor], ref: str) -> dict[str, Tensor]:
    """{term: |values[ref]| / |values[term]|} for every term but `ref`, detached float32 scalars."""
    size = values[ref].detach().float().abs()
    return {k: size / v.detach().float().abs().clamp_min(EPS) for k, v in values.items() if k != ref}


def balance_factors(balance: str, values: dict[str, Tensor]) -> dict[str, Tensor]:
    """This step's factors for loss.balance (none: no factors, nothing changes)."""
    if balance == "none":
        return {}
    if balance != "magnitude":
        raise ValueError(f"loss.balance={balance!r} is not one of none, magnitude")
    ref = reference(values)
    return magnitude_factors(values, ref) if ref is not None else {}
