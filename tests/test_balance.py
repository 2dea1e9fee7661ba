"""Balanced weights (loss.balance=magnitude|gradnorm, fadkd/losses/balance.py)."""

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
    with pytest.raises(ValueError, match="none, magnitude, gradnorm"):
        balance_factors("gradients", values)


def test_config_needs_a_reference_and_guards_read_the_factors():
    with pytest.raises(ConfigError, match="loss.balance=magnitude"):
        LossConfig(alpha=0.0, ce=0.0, balance="magnitude")
    with pytest.raises(ConfigError, match="loss.balance=gradnorm rescales"):
        LossConfig(alpha=0.0, ce=0.0, balance="gradnorm")
    with pytest.raises(ConfigError, match="loss.balance"):
        LossConfig(balance="gradients")
    assert LossConfig(balance="magnitude").balance == "magnitude"
    assert nonfinite_term({"kd": torch.tensor(1.0), "balance_cos": torch.tensor(float("nan"))}) == "balance_cos"


# gradnorm: the factors are ratios of gradient norms on z, the deepest student representation every term reads.


def _chain(seed):
    """Student outputs where the logits and hidden_states[2] are computed from hidden_states[1] (so every term's
    gradient reaches z = hidden_states[1]), the teacher's plain tensors."""
    s, t = _outputs(seed, grad=True), _outputs(seed + 1)
    torch.manual_seed(seed + 2)
    z = s.hidden[1]
    s.hidden[2] = torch.tanh(z @ torch.randn(8, 8))
    s.logits = s.hidden[2].mean(1) @ torch.randn(8, 2)
    return s, t


def _grad_norm(value, z):
    return torch.autograd.grad(value, z, retain_graph=True)[0].norm()


def test_gradnorm_factors_equalise_gradients_that_differ_by_a_known_factor():
    z = torch.randn(5, 3, requires_grad=True)
    direction = torch.randn(5, 3)
    values = {"kd": (z * direction).sum(), "mse": (z * direction * 7.5).sum() + 3.0, "ce": (z * direction).sum() / 4}
    factors = balance_factors("gradnorm", values, z)
    torch.testing.assert_close(factors["kd"], torch.tensor(0.25))  # ‖∇ce‖ / ‖∇kd‖
    torch.testing.assert_close(factors["mse"], torch.tensor(1 / 30))
    weighted = [_grad_norm(factors.get(k, 1.0) * v, z) for k, v in values.items()]
    torch.testing.assert_close(torch.stack(weighted), torch.full((3,), float(_grad_norm(values["ce"], z))))
    assert "ce" not in factors and not any(f.requires_grad for f in factors.values())
    assert z.grad is None  # measuring the norms accumulates no gradient anywhere


def test_gradnorm_in_the_objective_gives_every_term_the_reference_gradient_norm_on_z():
    labels = torch.tensor([0, 1, 1])
    s, t = _chain(1)
    loss = _loss("gradnorm", delta=0.0)
    assert loss.shared == 1  # the pair reads student layer 1: z = hidden_states[1]
    assert "balance=gradnorm: each term × ‖∇z ce‖ / ‖∇z term‖, z = student hidden_states[1]" in str(loss)
    total, terms = loss(s, t, labels)
    z = s.hidden[1]
    values = loss_values(loss, s, t, labels)
    ref = float(_grad_norm(values["ce"], z))
    for name, weight in (("kd", 1.0), ("cos", 0.5), ("mse", 2.0)):
        balanced = _grad_norm(weight * terms[f"balance_{name}"] * values[name], z)
        torch.testing.assert_close(float(balanced), weight * ref, rtol=1e-4, atol=0)


def loss_values(loss, s, t, labels):
    """The unweighted terms, with their graphs (loss.balance=none's forward, terms read back through combine)."""
    seen = {}
    combine = loss.combine
    loss.combine = lambda values, *rest: (seen.update(values), combine(values, *rest))[1]
    try:
        loss(s, t, labels)
    finally:
        del loss.combine
    return seen


def test_gradnorm_factors_are_constants_with_no_second_order_gradient():
    labels = torch.tensor([0, 1, 1])
    s, t = _chain(3)
    total, terms = _loss("gradnorm", delta=0.0, beta=0.0)(s, t, labels)
    total.backward()
    balanced = s.hidden[1].grad.clone()
    s2, _ = _chain(3)
    fixed = _loss(
        "none", delta=0.0, beta=0.0, alpha=float(terms["balance_kd"]), gamma=2.0 * float(terms["balance_mse"])
    )
    fixed(s2, t, labels)[0].backward()  # the same weights as plain numbers: the same gradients
    torch.testing.assert_close(balanced, s2.hidden[1].grad)


def test_gradnorm_with_one_term_on_is_a_no_op_and_none_changes_nothing(monkeypatch):
    labels = torch.tensor([0, 1, 1])
    s, t = _chain(5)
    only_ce = _loss("gradnorm", alpha=0.0, beta=0.0, gamma=0.0, delta=0.0)
    total, terms = only_ce(s, t, labels)
    assert set(terms) == {"ce"} and only_ce.shared is None  # no factor; z would be the logits
    torch.testing.assert_close(total, _loss("none", alpha=0.0, beta=0.0, gamma=0.0, delta=0.0)(s, t, labels)[0])
    calls, grad = [], torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(a) or grad(*a, **k))
    only_ce(s, t, labels)
    plain_total, plain = _loss("none")(s, t, labels)
    assert calls == [] and not any(k.startswith("balance_") for k in plain)
    with torch.no_grad():  # no graph: nothing to measure, weights as set
        assert not any(k.startswith("balance_") for k in _loss("gradnorm")(s, t, labels)[1])


def test_gradnorm_reads_the_shallowest_layer_any_term_reads():
    from fadkd.losses.balance import shared_layer

    pairs = [LayerPair(2, 4, 1.0), LayerPair(3, 6, 1.0), LayerPair(1, 2, 0.0)]  # λ = 0 pairs are not read
    live = [p for p in pairs if p.weight > 0]
    assert shared_layer(LossWeights(beta=1.0), live) == 2
    assert shared_layer(LossWeights(delta=1.0), live) == 1  # the maps of layer 2 come from hidden_states[1]
    assert shared_layer(LossWeights(delta=1.0), [LayerPair(0, 0, 1.0)]) is None  # layer 0 has no maps
    assert shared_layer(LossWeights(beta=1.0), [LayerPair(0, 0, 1.0)]) == 0
    assert shared_layer(LossWeights(), live) is None  # KD and ce only: the logits
