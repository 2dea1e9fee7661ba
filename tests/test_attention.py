"""fadkd's attention function equals eager attention, and keeps maps for flagged layers only."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from fadkd.models import attention
from fadkd.models.capture import Layers, run_model

IDS = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _pair(make, **cfg):
    torch.manual_seed(0)
    eager = make(attn_implementation="eager", **cfg).eval()
    mine = make(attn_implementation=attention.NAME, **cfg).eval()
    mine.load_state_dict(eager.state_dict())
    return eager, mine


MODELS = {
    "bert": lambda **k: BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=32, **k)
    ),
    "llama-gqa": lambda **k: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=32,
            **k,
        )
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recorded_maps_and_outputs_equal_eager(name):
    eager, mine = _pair(MODELS[name])
    want = eager(input_ids=IDS, attention_mask=MASK, output_attentions=True)
    got = run_model(mine, {"input_ids": IDS, "attention_mask": MASK}, Layers(attentions=frozenset({1, 3})))
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-5)
    assert sorted(got.attentions) == [1, 3]
    real = MASK.bool()
    for layer in (1, 3):
        a, b = got.attentions[layer], want.attentions[layer - 1]
        assert a.shape == b.shape == (2, 4, 5, 5)  # per query head, also under grouped-query attention
        torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=1e-5)  # unpadded row: every entry
        keep = real[1][None, :, None] & real[1][None, None, :]  # padded row: real query and key only
        torch.testing.assert_close(a[1][keep.expand_as(a[1])], b[1][keep.expand_as(b[1])], atol=1e-6, rtol=1e-5)


def test_unflagged_layers_keep_no_maps_and_gradients_flow():
    _, mine = _pair(MODELS["bert"])
    mine.train()
    out = run_model(mine, {"input_ids": IDS, "attention_mask": MASK}, Layers(attentions=frozenset({2})))
    assert list(out.attentions) == [2]
    assert all(getattr(m, "fadkd_probs", None) is None for m in attention.attention_modules(mine).values())
    out.attentions[2].sum().backward()
    assert mine.bert.encoder.layer[1].attention.self.query.weight.grad.abs().sum() > 0
