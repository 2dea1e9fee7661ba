"""Balanced weights (loss.balance=magnitude, fadkd/losses/balance.py)."""

import pytest
import torch

from fadkd.config.schema import ConfigError, LossConfig
from fadkd.losses.balance import balance_factors, magnitude_factors, reference
from fadkd.losses.distill import DistillLoss, LossWeights
from fadkd.losses.mapping import LayerPair
from fadkd.models.capture import Outputs
from fadkd.run.guards import nonfinite_term

MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
PAIRS = [LayerPair(1, 2, 1.0)]


def _outputs(seed, grad=False):
    torch.manual_seed(seed)
    width = 8
    hidden = {i: (torch.randn(3, 4, width) * 3).requires_grad_(grad) for i in range(3)}
    maps = {i: torch.softmax(torch.randn(3, 2, 4, 4), -1).requires_grad_(grad) for i in (1, 2)}
    return Outputs((torch.randn(3, 2) * 2).requires_grad_(grad), hidden, maps, MASK)


def _loss(balance, **weights):
    w = LossWeights(**{"alpha": 1.0, "beta": 0.5, "gamma": 2.0, "delta": 1.0, "ce": 1.0, **weights}, balance=balance)
    return DistillLoss(w, PAIRS, {1: 8}, {2: 8}, False)


def test_each_term_is_rescaled_to_the_task_loss():
    labels = torch.tensor([0, 1, 1])
    s, t = _outputs(1, grad=True), _outputs(2)
    total, terms = _loss("magnitude")(s, t, labels)
    ce = terms["ce"]
    for name in ("kd", "cos", "mse", "attn"):
        torch.testing.assert_close(terms[f"balance_{name}"], ce / terms[name])
    assert "balance_ce" not in terms  # the reference keeps its weight
    # every weighted term now has the size weight × |ce|
    torch.testing.assert_close(total.detach(), (1.0 + 0.5 + 2.0 + 1.0 + 1.0) * ce)
    plain_total, plain = _loss("none")(s, t, labels)
    assert not any(k.startswith("balance_") for k in plain)
    torch.testing.assert_close(
        plain_total.detach(), terms["kd"] + 0.5 * terms["cos"] + 2 * terms["mse"] + terms["attn"] + ce
    )


def test_the_factors_are_constants_of_the_step():
    labels = torch.tensor([0, 1, 1])
    s, t = _outputs(1, grad=True), _outputs(2)
    total, terms = _loss("magnitude", delta=0.0, beta=0.0)(s, t, labels)
    total.backward()
    balanced = s.logits.grad.clone(), s.hidden[1].grad.clone()
    s2 = _outputs(1, grad=True)
    fixed = _loss(
        "none", delta=0.0, beta=0.0, alpha=float(terms["balance_kd"]), gamma=2.0 * float(terms["balance_mse"])
    )
    fixed(s2, t, labels)[0].backward()  # the same weights as plain numbers: the same gradients
    torch.testing.assert_close(balanced[0], s2.logits.grad)
    torch.testing.assert_close(balanced[1], s2.hidden[1].grad)


def test_the_reference_is_kd_without_a_task_loss():
    values = {"kd": torch.tensor(0.01), "cos": torch.tensor(0.5), "mse": torch.tensor(0.0)}
    assert reference(values) == "kd"
    factors = magnitude_factors(values, "kd")
    torch.testing.assert_close(factors["cos"], torch.tensor(0.02))
    assert torch.isfinite(factors["mse"])  # a term at 0 gets a finite factor
    assert balance_factors("none", values) == {}
    with pytest.raises(ValueError, match="none, magnitude"):
        balance_factors("gradnorm", values)


def test_config_needs_a_reference_and_guards_read_the_factors():
    with pytest.raises(ConfigError, match="loss.balance=magnitude"):
        LossConfig(alpha=0.0, ce=0.0, balance="magnitude")
    with pytest.raises(ConfigError, match="loss.balance"):
        LossConfig(balance="gradnorm")
    assert LossConfig(balance="magnitude").balance == "magnitude"
    assert nonfinite_term({"kd": torch.tensor(1.0), "balance_cos": torch.tensor(float("nan"))}) == "balance_cos"
