import math

import pytest
import torch
import torch.nn.functional as F

from fadkd.config.schema import ConfigError, LossConfig
from fadkd.errors import FadkdError
from fadkd.losses.distill import DistillLoss, LossWeights, kd_kl
from fadkd.losses.kd import TermChoice
from fadkd.losses.mapping import LayerPair
from fadkd.losses.spec import feature_scale
from fadkd.losses.terms import attention_loss, cosine_loss, mse_loss, task_loss
from fadkd.models.capture import Outputs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def attn(b, h, length):
    return torch.softmax(torch.randn(b, h, length, length), dim=-1)


def pad(x, n, dims, value=float("nan")):
    """Append n garbage positions along each dim in dims."""
    for d in dims:
        shape = list(x.shape)
        shape[d] = n
        x = torch.cat([x, torch.full(shape, value, dtype=x.dtype)], dim=d)
    return x


MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # second row padded
B, L, H = 2, 5, 8


# ---- individual terms -------------------------------------------------------------------


def test_zero_on_identical_inputs():
    x = torch.randn(B, L, H)
    a = attn(B, 4, L)
    logits = torch.randn(B, L, 11)
    assert kd_kl(logits, logits.clone(), 2.0, MASK).abs() < 1e-6
    assert cosine_loss(x, x.clone(), MASK).abs() < 1e-6
    assert mse_loss(x, x.clone(), MASK) == 0
    assert attention_loss(a, a.clone(), MASK) == 0
    assert attention_loss(attn(B, 2, L).repeat(1, 2, 1, 1), attn(B, 2, L).repeat(1, 3, 1, 1), MASK) >= 0


def test_non_negative_on_random_inputs():
    for _ in range(5):
        assert kd_kl(torch.randn(B, 7) * 3, torch.randn(B, 7) * 3, 1.5) >= 0
        assert cosine_loss(torch.randn(B, L, H), torch.randn(B, L, H), MASK) >= 0
        assert mse_loss(torch.randn(B, L, H), torch.randn(B, L, H), MASK) >= 0
        assert attention_loss(attn(B, 4, L), attn(B, 2, L), MASK) >= 0


def test_padding_does_not_change_value_or_gradient():
    s, t = torch.randn(B, L, H), torch.randn(B, L, H)
    sa, ta = attn(B, 4, L), attn(B, 4, L)
    sl, tl = torch.randn(B, L, 9), torch.randn(B, L, 9)
    big = pad(MASK, 3, [1], value=0)
    for fn, a, b, dims in (
        (cosine_loss, s, t, [1]),
        (mse_loss, s, t, [1]),
        (attention_loss, sa, ta, [2, 3]),
        (lambda x, y, m: kd_kl(x, y, 2.0, m), sl, tl, [1]),
    ):
        ref = fn(a, b, MASK)
        a_pad = pad(a, 3, dims).requires_grad_()
        got = fn(a_pad, pad(b, 3, dims, value=1e30), big)
        torch.testing.assert_close(got, ref)
        got.backward()
        assert torch.isfinite(a_pad.grad).all()
        # masked positions inside the original length (row 1, tokens 3-4) are ignored too
        a2 = a.clone()
        if dims == [2, 3]:
            a2[1, :, 3:, :] = 5.0
            a2[1, :, :, 3:] = 5.0
        else:
            a2[1, 3:] = 5.0
        torch.testing.assert_close(fn(a2, b, MASK), ref)


def test_cosine_scale_invariance():
    s, t = torch.randn(B, L, H), torch.randn(B, L, H)
    ref = cosine_loss(s, t, MASK)
    torch.testing.assert_close(cosine_loss(3.7 * s, t, MASK), ref)
    torch.testing.assert_close(cosine_loss(s, 0.01 * t, MASK), ref)
    torch.testing.assert_close(cosine_loss(-s, t, MASK), 2 - ref)  # negative scaling flips


def test_mse_is_per_element_mean():
    s, t = torch.zeros(1, 2, 4), torch.ones(1, 2, 4)
    assert mse_loss(s, t, torch.ones(1, 2)) == 1.0
    wide_s, wide_t = torch.zeros(1, 2, 64), torch.ones(1, 2, 64)
    assert mse_loss(wide_s, wide_t, torch.ones(1, 2)) == 1.0


def test_kd_golden_value():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert abs(expected - 0.130812) < 1e-6
    assert kd_kl(student, teacher, 1.0).item() == pytest.approx(expected, abs=1e-6)


def test_kd_temperature_scaling_and_kl_div():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    for tau in (1.0, 2.0, 4.0):
        p_s = F.softmax(s / tau, -1)
        p_t = F.softmax(t / tau, -1)
        plain = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
        torch.testing.assert_close(kd_kl(s, t, tau), tau**2 * plain)
        ref = F.kl_div(
            F.log_softmax(s / tau, -1),
            F.log_softmax(t / tau, -1),
            log_target=True,
            reduction="batchmean",
        )
        torch.testing.assert_close(kd_kl(s, t, tau), tau**2 * ref)


def test_kd_direction_is_teacher_to_student():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kd_kl(s, t, 1.0).item() != pytest.approx(reverse, abs=1e-4)


def test_kd_teacher_minus_inf_logits_are_finite():
    t = torch.tensor([[2.0, float("-inf"), 0.0]])
    assert torch.isfinite(kd_kl(torch.randn(1, 3), t, 1.0))


def test_kd_upcasts_half_precision():
    s, t = torch.randn(3, 6), torch.randn(3, 6)
    out = kd_kl(s.bfloat16(), t.bfloat16(), 2.0)
    assert out.dtype == torch.float32


def test_attention_head_averaging_when_counts_differ():
    sa, ta = attn(B, 2, L), attn(B, 6, L)
    mask = torch.ones(B, L)
    expected = (sa.mean(1) - ta.mean(1)).pow(2).mean()
    torch.testing.assert_close(attention_loss(sa, ta, mask), expected)
    # same head count: per-head comparison, not averaged
    sb = attn(B, 2, L)
    torch.testing.assert_close(attention_loss(sa, sb, mask), (sa - sb).pow(2).mean())
    assert attention_loss(sa, sa.flip(1), mask) > 0


def test_attention_counts_only_real_query_and_key():
    sa, ta = torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3)
    mask = torch.tensor([[1, 1, 0]])
    sa[0, 0, 2, :] = 1.0  # padded query row differs: ignored
    assert attention_loss(sa, ta, mask) == 1.0


def test_task_loss():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    torch.testing.assert_close(task_loss(logits, labels, False), F.cross_entropy(logits, labels))
    reg = torch.randn(4, 1)
    y = torch.randn(4)
    torch.testing.assert_close(task_loss(reg, y, True), F.mse_loss(reg.squeeze(-1), y))
    lm = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    torch.testing.assert_close(
        task_loss(lm, ids, False),
        F.cross_entropy(lm[:, :-1].reshape(-1, 7), ids[:, 1:].reshape(-1)),
    )


# ---- combiner ---------------------------------------------------------------------------

PAIRS = [LayerPair(1, 2, 1.0), LayerPair(2, 4, 0.5)]


def outputs(width, heads, layers, logits, grad=False):
    hidden = {i: torch.randn(B, L, width, requires_grad=grad) for i in range(layers + 1)}
    atts = {i: attn(B, heads, L).requires_grad_(grad) for i in range(1, layers + 1)}
    return Outputs(
        logits=logits.requires_grad_(grad),
        hidden=hidden,
        attentions=atts,
        mask=MASK.clone(),
    )


def make(weights, pairs=PAIRS, sw=8, tw=16, regression=False, **kw):
    return DistillLoss(
        weights,
        pairs,
        {i: sw for i in range(3)},
        {i: tw for i in range(5)},
        regression,
        **kw,
    )


def test_total_is_weighted_sum_of_terms():
    w = LossWeights(alpha=0.7, temperature=2.0, beta=0.5, gamma=1.5, delta=0.25, ce=0.3)
    loss = make(w)
    s = outputs(8, 2, 2, torch.randn(B, 3), grad=True)
    t = outputs(16, 4, 4, torch.randn(B, 3))
    total, terms = loss(s, t, torch.tensor([0, 2]))
    assert set(terms) == {
        "kd",
        "cos",
        "mse",
        "attn",
        "ce",
        "cos/s1_t2",
        "cos/s2_t4",
        "mse/s1_t2",
        "mse/s2_t4",
        "attn/s1_t2",
        "attn/s2_t4",
    }
    expected = 0.7 * terms["kd"] + 0.5 * terms["cos"] + 1.5 * terms["mse"] + 0.25 * terms["attn"] + 0.3 * terms["ce"]
    torch.testing.assert_close(total.detach(), expected)
    for name in ("cos", "mse", "attn"):
        torch.testing.assert_close(terms[name], terms[f"{name}/s1_t2"] + 0.5 * terms[f"{name}/s2_t4"])
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    torch.testing.assert_close(terms["kd"], kd_kl(s.logits, t.logits, 2.0))
    torch.testing.assert_close(terms["attn/s2_t4"], attention_loss(s.attentions[2], t.attentions[4], MASK))


def test_feature_tokens_first_compares_position_0_only():
    w = LossWeights(alpha=0.0, beta=1.0, gamma=1.0, delta=1.0, ce=0.0)
    first = make(w, choice=TermChoice(feature_tokens="first"))
    every = make(w)
    every.load_state_dict(first.state_dict())  # the same projections
    s, t = outputs(8, 2, 2, torch.randn(B, 3)), outputs(16, 4, 4, torch.randn(B, 3))
    _, base = first(s, t)
    for i in range(3):  # other positions changed: β and γ do not move; δ (every real token) does
        s.hidden[i] = torch.cat([s.hidden[i][:, :1], torch.randn(B, L - 1, 8)], dim=1)
    s.attentions[1] = attn(B, 2, L)
    _, moved = first(s, t)
    for name in ("cos/s1_t2", "mse/s2_t4"):
        torch.testing.assert_close(moved[name], base[name])
    assert not torch.allclose(moved["attn/s1_t2"], base["attn/s1_t2"])
    projected = first.projections["s1_t2"](s.hidden[1][:, 0])
    expected = (1 - F.cosine_similarity(projected, t.hidden[2][:, 0], dim=-1)).mean()
    torch.testing.assert_close(moved["cos/s1_t2"], expected)
    assert not torch.allclose(every(s, t)[1]["cos/s1_t2"], expected)
    with pytest.raises(ConfigError, match="feature_tokens"):
        LossConfig(feature_tokens="cls")


def test_feature_scale_schedules():
    assert [feature_scale("constant", 0.5, k, 10) for k in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [feature_scale("linear", 0.5, k, 10) for k in (0, 1, 4, 5, 9)] == pytest.approx([1, 0.8, 0.2, 0, 0])
    assert [feature_scale("cosine", 1.0, k, 4) for k in (0, 1, 2, 4)] == pytest.approx([1, 0.8536, 0.5, 0], abs=1e-4)
    assert feature_scale("linear", 1.0, 0, 0) == 1.0  # train.max_steps=0: nothing to schedule
    for bad in ({"feature_schedule": "step"}, {"feature_until": 0.0}, {"feature_until": 1.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LossConfig(**bad)


def test_feature_scale_multiplies_only_feature_terms():
    loss = make(LossWeights(alpha=1.0, beta=0.5, gamma=0.25, delta=2.0, ce=1.0))
    s, t = outputs(8, 2, 2, torch.randn(B, 3), grad=True), outputs(16, 4, 4, torch.randn(B, 3))
    labels = torch.tensor([0, 2])
    total, terms = loss(s, t, labels, feature_scale=0.3)
    features = 0.5 * terms["cos"] + 0.25 * terms["mse"] + 2.0 * terms["attn"]
    torch.testing.assert_close(total, terms["kd"] + terms["ce"] + 0.3 * features)
    # at 0 the terms are still reported (and computed: DDP wants every projection used)
    total, terms = loss(s, t, labels, feature_scale=0.0)
    torch.testing.assert_close(total, terms["kd"] + terms["ce"])
    assert {"cos", "mse", "attn"} <= set(terms)
    total.backward()
    assert all(p.grad is not None and not p.grad.any() for p in loss.projections.parameters())


def test_zero_weight_terms_absent_and_not_computed():
    loss = make(LossWeights(alpha=1.0, ce=0.0))
    s = outputs(8, 2, 2, torch.randn(B, 3))
    t = outputs(16, 4, 4, torch.randn(B, 3))
    s.hidden, s.attentions, t.hidden, t.attentions = (
        {},
        {},
        {},
        {},
    )  # would fail if touched
    total, terms = loss(s, t, None)
    assert set(terms) == {"kd"}
    torch.testing.assert_close(total, terms["kd"])
    assert len(loss.projections) == 0


def test_missing_attention_raises():
    loss = make(LossWeights(delta=1.0))
    s = outputs(8, 2, 2, torch.randn(B, 3))
    t = outputs(16, 4, 4, torch.randn(B, 3))
    s.attentions = {}  # what an SDPA model returns
    with pytest.raises(FadkdError, match="attention maps are missing.*eager"):
        loss(s, t, torch.tensor([0, 1]))
    s = outputs(8, 2, 2, torch.randn(B, 3))
    t.attentions[4] = None
    with pytest.raises(FadkdError, match="attention maps are missing.*eager"):
        loss(s, t, torch.tensor([0, 1]))


def test_formula_string():
    w = LossWeights(alpha=1, temperature=2, beta=0.5, gamma=1, delta=0.5, ce=1)
    assert str(make(w)) == "L = 1.0*KL(τ=2.0) + 0.5*cos + 1.0*mse + 0.5*attn + 1.0*ce [λ: s1→t2=1.0, s2→t4=0.5]"
    assert str(make(LossWeights(), pairs=[LayerPair(2, 4)])) == "L = 1.0*KL(τ=2.0) + 1.0*ce"
    assert str(make(LossWeights(gamma=1, ce=0), pairs=[LayerPair(2, 4)])) == "L = 1.0*KL(τ=2.0) + 1.0*mse"
    assert str(make(LossWeights(ce=0), regression=True)) == "L = 1.0*MSE(logits)"


def test_projection_created_only_when_widths_differ():
    w = LossWeights(beta=1.0)
    assert len(make(w, sw=16, tw=16).projections) == 0
    proj = make(w, sw=8, tw=16).projections
    assert set(proj) == {"s1_t2", "s2_t4"}
    assert proj["s1_t2"].in_features == 8 and proj["s1_t2"].out_features == 16
    assert set(make(w, sw=8, tw=16, shared_projection=True).projections) == {"shared"}
    assert len(make(LossWeights(delta=1.0), sw=8, tw=16).projections) == 0  # attention needs no projection
    with pytest.raises(FadkdError, match="shared_projection"):
        DistillLoss(w, PAIRS, {1: 8, 2: 12}, {2: 16, 4: 16}, False, shared_projection=True)
    # one pair with equal widths, one without: per-pair projection only where needed
    assert set(DistillLoss(w, PAIRS, {1: 8, 2: 16}, {2: 16, 4: 16}, False).projections) == {"s1_t2"}


def test_gradient_flows_to_student_and_projection_not_teacher():
    loss = make(LossWeights(alpha=1.0, beta=1.0, gamma=1.0, delta=1.0, ce=1.0))
    s = outputs(8, 2, 2, torch.randn(B, 3), grad=True)
    t = outputs(16, 4, 4, torch.randn(B, 3))
    total, _ = loss(s, t, torch.tensor([1, 0]))
    total.backward()
    assert s.logits.grad is not None and s.logits.grad.abs().sum() > 0
    for i in (1, 2):
        assert s.hidden[i].grad.abs().sum() > 0
        assert s.attentions[i].grad.abs().sum() > 0
        assert s.hidden[i].grad[1, 3:].abs().sum() == 0  # padding gets no gradient
    for p in loss.projections.values():
        assert p.weight.grad is not None and p.weight.grad.abs().sum() > 0
    assert not any(x.requires_grad for x in [t.logits, *t.hidden.values(), *t.attentions.values()])


def test_regression_kd_is_mse_on_logits():
    loss = make(LossWeights(alpha=1.0, ce=1.0), regression=True)
    s = outputs(8, 2, 2, torch.randn(B, 1))
    t = outputs(16, 4, 4, torch.randn(B, 1))
    y = torch.randn(B)
    _total, terms = loss(s, t, y)
    torch.testing.assert_close(terms["kd"], F.mse_loss(s.logits.squeeze(-1), t.logits.squeeze(-1)))
    torch.testing.assert_close(terms["ce"], F.mse_loss(s.logits.squeeze(-1), y))


def test_causal_lm_kd_uses_token_mask():
    loss = make(LossWeights(alpha=1.0, ce=1.0))
    s = outputs(8, 2, 2, torch.randn(B, L, 9))
    t = outputs(16, 4, 4, torch.randn(B, L, 9))
    ids = torch.randint(0, 9, (B, L))
    _, terms = loss(s, t, ids)
    torch.testing.assert_close(terms["kd"], kd_kl(s.logits, t.logits, 2.0, MASK))
    labels = ids.masked_fill(MASK == 0, -100)
    torch.testing.assert_close(terms["ce"], task_loss(s.logits, labels, False))


def test_embedding_pair_skipped_for_attention_and_zero_lambda_skipped():
    pairs = [LayerPair(0, 0), LayerPair(2, 4), LayerPair(1, 2, 0.0)]
    loss = make(LossWeights(gamma=1.0, delta=1.0, ce=0.0), pairs=pairs)
    s = outputs(8, 2, 2, torch.randn(B, 3))
    t = outputs(16, 4, 4, torch.randn(B, 3))
    _, terms = loss(s, t)
    assert "mse/s0_t0" in terms and "attn/s0_t0" not in terms and "attn/s2_t4" in terms
    assert "mse/s1_t2" not in terms
    with pytest.raises(FadkdError, match="layer 0"):
        make(LossWeights(delta=1.0), pairs=[LayerPair(0, 0)])


def test_invalid_weights_and_missing_labels():
    with pytest.raises(FadkdError, match="temperature"):
        LossWeights(temperature=0)
    with pytest.raises(FadkdError, match="beta"):
        LossWeights(beta=-1)
    with pytest.raises(FadkdError, match="every loss weight is 0"):
        LossWeights(alpha=0, ce=0)
    loss = make(LossWeights())
    s, t = outputs(8, 2, 2, torch.randn(B, 3)), outputs(16, 4, 4, torch.randn(B, 3))
    with pytest.raises(FadkdError, match="no labels"):
        loss(s, t, None)
