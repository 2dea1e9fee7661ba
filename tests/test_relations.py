"""MiniLMv2 attention relations (fadkd/losses/relations.py) and the Q/K/V capture they read."""

import json
import math

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    MPNetConfig,
    MPNetForSequenceClassification,
)

from fadkd.config.schema import ConfigError, LossConfig
from fadkd.errors import FadkdError
from fadkd.losses.distill import DistillLoss, LossWeights
from fadkd.losses.kd import TermChoice
from fadkd.losses.mapping import LayerPair
from fadkd.losses.relations import relation_log_probs, relation_loss
from fadkd.models import attention
from fadkd.models.capture import Layers, layers_to_capture, run_model

IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 11, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
PAIRS = [LayerPair(1, 2), LayerPair(2, 4)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def qkv(b, heads, length, d):
    return tuple(torch.randn(b, heads, length, d) for _ in range(3))


def test_hand_computed_value():
    # one token pair, one relation head of width 1: teacher queries (1, 0), student (0, 0)
    t = (torch.tensor([1.0, 0.0]).view(1, 1, 2, 1),) * 3
    s = (torch.zeros(1, 1, 2, 1),) * 3
    p = math.e / (math.e + 1)  # teacher row 1: softmax(1, 0); row 2 and the student: uniform
    row1 = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    got = relation_loss(s, t, torch.ones(1, 2), heads=1, relations=("qq",))
    assert got.item() == pytest.approx(row1 / 2, abs=1e-6)
    assert relation_loss(s, t, torch.ones(1, 2), heads=1).item() == pytest.approx(3 * row1 / 2, abs=1e-6)  # summed


def test_zero_for_identical_non_negative_and_any_head_counts():
    t = qkv(2, 4, 6, 16)  # 4 heads × 16 = width 64
    assert relation_loss(t, t, MASK, heads=4).abs() < 1e-6
    for _ in range(3):
        s = qkv(2, 2, 6, 16)  # 2 heads × 16 = width 32, no projection needed
        assert relation_loss(s, t, MASK, heads=4) > 0
        assert relation_loss(s, t, MASK, heads=2) > 0


def test_relation_heads_split_the_concatenated_width():
    x = torch.randn(1, 4, 3, 8)  # 4 heads of 8 -> width 32 -> 2 relation heads of 16
    concat = x.transpose(1, 2).reshape(1, 3, 32)
    for r in range(2):
        part = concat[..., r * 16 : (r + 1) * 16]
        want = torch.log_softmax(part @ part.transpose(-1, -2) / 4.0, -1)
        torch.testing.assert_close(relation_log_probs(x, torch.ones(1, 3, dtype=torch.bool), 2)[:, r], want)
    with pytest.raises(FadkdError, match="does not divide"):
        relation_log_probs(x, torch.ones(1, 3, dtype=torch.bool), 3)


def test_padding_changes_neither_value_nor_gradient():
    s, t = qkv(2, 2, 6, 8), qkv(2, 4, 6, 8)
    ref = relation_loss(s, t, MASK, heads=2)
    s_bad = tuple(x.clone() for x in s)
    t_bad = tuple(x.clone() for x in t)
    for x in (*s_bad, *t_bad):
        x[1, :, 4:] = float("nan")
    s_bad = tuple(x.requires_grad_() for x in s_bad)
    got = relation_loss(s_bad, t_bad, MASK, heads=2)
    torch.testing.assert_close(got, ref)
    got.backward()
    assert all(torch.isfinite(x.grad).all() and x.grad[1, :, 4:].abs().sum() == 0 for x in s_bad)


def bert(heads, width, layers, **kw):
    config = BertConfig(vocab_size=50, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * width, attn_implementation=attention.NAME, **kw)  # fmt: skip
    return BertForSequenceClassification(config)


def test_bert_query_key_value_are_the_layer_projections():
    model = bert(4, 64, 2).eval()
    out = run_model(model, {"input_ids": IDS, "attention_mask": MASK}, Layers(frozenset({1}), qkv=frozenset({2})))
    assert sorted(out.qkv) == [2] and not out.attentions
    assert all(getattr(m, "fadkd_qkv", None) is None for m in attention.attention_modules(model).values())
    self_attn = model.bert.encoder.layer[1].attention.self
    h = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True).hidden_states[1]
    for got, proj in zip(out.qkv[2], (self_attn.query, self_attn.key, self_attn.value), strict=True):
        want = proj(h).view(2, 6, 4, 16).transpose(1, 2)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_llama_grouped_query_keys_and_values_are_repeated_to_the_query_heads():
    config = LlamaConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, attn_implementation=attention.NAME)  # fmt: skip
    out = run_model(LlamaForCausalLM(config).eval(), {"input_ids": IDS, "attention_mask": MASK},
                    Layers(qkv=frozenset({1})))  # fmt: skip
    q, k, v = out.qkv[1]
    assert q.shape == k.shape == v.shape == (2, 4, 6, 16)
    torch.testing.assert_close(k[:, 0], k[:, 1])  # query heads 0 and 1 share key/value head 0
    torch.testing.assert_close(v[:, 2], v[:, 3])


def test_relations_between_tiny_models_with_different_head_counts():
    teacher, student = bert(4, 64, 4).eval(), bert(2, 32, 2).train()
    s_layers, t_layers = layers_to_capture(PAIRS, False, True, relations=True)
    assert s_layers.qkv == {1, 2} and t_layers.qkv == {2, 4} and not s_layers.attentions
    inputs = {"input_ids": IDS, "attention_mask": MASK}
    with torch.no_grad():
        t_out = run_model(teacher, inputs, t_layers)
    s_out = run_model(student, inputs, s_layers)
    choice = TermChoice.from_config(LossConfig(attn="relations"), teacher_heads=4)
    loss = DistillLoss(LossWeights(alpha=0.0, delta=1.0, ce=0.0), PAIRS, {1: 32, 2: 32}, {2: 64, 4: 64}, False,
                       choice=choice)  # fmt: skip
    assert str(loss) == "L = 1.0*rel(qq,kk,vv; 4 heads)"
    total, terms = loss(s_out, t_out)
    assert torch.isfinite(total) and total > 0 and set(terms) == {"attn", "attn/s1_t2", "attn/s2_t4"}
    total.backward()
    for proj in ("query", "key", "value"):
        assert getattr(student.bert.encoder.layer[0].attention.self, proj).weight.grad.abs().sum() > 0
    same = run_model(teacher, inputs, Layers(qkv=frozenset({2, 4})))
    assert loss(_as_student_layers(same), t_out)[0].abs() < 1e-5  # the teacher against itself


def _as_student_layers(out):  # the teacher's layers 2 and 4 under the student's indices 1 and 2
    out.qkv = {1: out.qkv[2], 2: out.qkv[4]}
    return out


def test_relation_heads_that_do_not_divide_the_widths_are_refused_before_training():
    choice = TermChoice(attn="relations", relation_heads=3)
    with pytest.raises(FadkdError, match=r"relation_heads=3 does not divide .*student layer 1 width 32"):
        DistillLoss(LossWeights(delta=1.0), PAIRS, {1: 32, 2: 32}, {2: 64, 4: 64}, False, choice=choice)


def test_models_without_the_attention_interface_give_their_projections_through_hooks():
    torch.manual_seed(3)
    mine = bert(2, 32, 2).eval()
    torch.manual_seed(3)
    plain = bert(2, 32, 2).eval()
    plain.config._attn_implementation = "sdpa"  # as a model without the interface: hooks on query/key/value
    inputs, layers = {"input_ids": IDS, "attention_mask": MASK}, Layers(qkv=frozenset({1, 2}))
    a, b = run_model(mine, inputs, layers).qkv, run_model(plain, inputs, layers).qkv
    for layer in (1, 2):
        for x, y in zip(a[layer], b[layer], strict=True):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    mpnet = MPNetForSequenceClassification(MPNetConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=2, intermediate_size=64)).eval()  # fmt: skip
    out = run_model(mpnet, inputs, Layers(frozenset({1}), qkv=frozenset({2})))
    h, attn = out.hidden[1], mpnet.mpnet.encoder.layer[1].attention.attn
    torch.testing.assert_close(out.qkv[2][1], attn.k(h).view(2, 6, 2, 16).transpose(1, 2))
    assert not any(m._forward_hooks for m in mpnet.modules())  # hooks removed after the forward


def test_models_without_interface_or_projections_are_refused():
    config = LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, attn_implementation="sdpa")  # fmt: skip
    with pytest.raises(FadkdError, match="loss.attn=relations"):
        run_model(LlamaForCausalLM(config), {"input_ids": IDS, "attention_mask": MASK}, Layers(qkv=frozenset({1})))


def test_config_checks():
    assert LossConfig().attn == "maps" and LossConfig().kd == "forward_kl"  # the defaults stay the paper's
    for bad, match in (({"attn": "heads"}, "loss.attn"), ({"relations": ["qk"]}, "qq, kk, vv"),
                       ({"relation_heads": 0}, "positive"), ({"relations": []}, "qq, kk, vv")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            LossConfig(**bad)


def test_glue_run_with_relations_and_jsd(tmp_path):
    from fadkd.config.schema import Config, TaskConfig, TrainConfig
    from fadkd.run.train import train

    cfg = Config(
        task=TaskConfig(data_dir="sample", max_train_samples=16, max_eval_samples=8),
        train=TrainConfig(max_steps=2, batch_size=8, log_every=1),
        loss=LossConfig(attn="relations", relations=["qq", "vv"], kd="jsd", jsd_beta=0.3),
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["loss_formula"] == "L = 1.0*JSD(β=0.3, τ=2.0) + 1.0*cos + 1.0*mse + 1.0*rel(qq,vv; 4 heads) + 1.0*ce"
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert all(s["attn"] > 0 and s["kd"] >= 0 for s in steps) and "attn/s2_t4" in steps[0]
