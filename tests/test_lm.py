"""Causal-LM distillation on tiny Llama configs: data layout, loss terms, from_teacher students,
perplexity and generation metrics (the CLI end to end is in test_lm_cli.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from fadkd.config.schema import Config, ConfigError, ModelConfig, TaskConfig
from fadkd.data.lm_text import LmCollator, generation_prompts, get_lm_task, load_texts, pack_blocks
from fadkd.eval.lm import LmEvaluator, greedy, perplexity, text_metrics
from fadkd.losses.distill import DistillLoss, LossWeights
from fadkd.losses.mapping import build_mapping
from fadkd.models.capture import Layers, run_model
from fadkd.models.lm import from_teacher, layers_to_keep, prepare_tokenizer, tiny_llama
from fadkd.models.load import TINY_TOKENIZER, ModelError, load_tokenizer

TEACHER = ModelConfig("t", arch="llama", num_layers=4, hidden_size=64, num_heads=4, num_kv_heads=2,
                      intermediate_size=128, init_seed=1)  # fmt: skip
STUDENT = ModelConfig("s", arch="llama", num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1,
                      intermediate_size=64, init_seed=2)  # fmt: skip


@pytest.fixture(scope="module")
def tok():
    return prepare_tokenizer(load_tokenizer(ModelConfig(), "student"), "student")


@pytest.fixture(scope="module")
def teacher(tok):
    return tiny_llama(TEACHER, tok, "eager").eval()


def _batch(ids: list[list[int]], pad: int):
    return LmCollator(pad, with_teacher=True)([{"input_ids": x} for x in ids])


# --- data layout -----------------------------------------------------------------------------


def test_packing_puts_eos_before_every_text_and_cuts_fixed_blocks():
    blocks = pack_blocks([[5, 6], [7, 8, 9]], eos_id=2, block_size=3)
    assert [b["input_ids"] for b in blocks] == [[2, 5, 6], [2, 7, 8], [9, 2]]
    batch = LmCollator(pad_id=0, with_teacher=True)(blocks)
    assert batch.student["input_ids"].tolist() == [[2, 5, 6], [2, 7, 8], [9, 2, 0]]
    assert batch.student["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert batch.labels.tolist()[2] == [9, 2, -100]  # no loss on padding
    assert batch.teacher is batch.student  # one tokenizer: the teacher reads the same tensors


def test_generation_prompts_split_each_text():
    docs = [list(range(10, 20)), [7], list(range(30, 33))]
    pairs = generation_prompts(docs, eos_id=2, prompt_fraction=0.5, max_length=8, max_new_tokens=3, limit=None)
    # first text cut to 8 tokens: prompt eos + 4, reference the next 3; [7] is too short
    assert pairs[0] == ([2, 10, 11, 12, 13], [14, 15, 16])
    assert pairs[1] == ([2, 30], [31, 32])  # at least one token on each side
    assert len(generation_prompts(docs, 2, 0.5, 8, 3, limit=1)) == 1


def test_lm_sst2_reads_the_glue_sentences():
    task = get_lm_task("lm_sst2")
    cfg = TaskConfig(name="lm_sst2", data_dir="sample", max_eval_samples=5)
    from fadkd.data.glue import resolve_data_dir

    texts = load_texts(task, "dev", cfg, resolve_data_dir("sample"))
    assert len(texts) == 5 and texts[0] == "it 's a charming and often affecting journey ."


def test_lm_text_reads_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first text\n\n second text \nfirst text\n")
    (tmp_path / "b.jsonl").write_text('{"body": "one"}\n{"body": "two"}\n')
    cfg = TaskConfig(name="lm_text", train_file=str(tmp_path / "a.txt"), eval_file=str(tmp_path / "b.jsonl"),
                     text_column="body")  # fmt: skip
    task = get_lm_task("lm_text")
    assert load_texts(task, "train", cfg, None) == ["first text", "second text"]  # blank lines out, once each
    assert load_texts(task, "dev", cfg, None) == ["one", "two"]


# --- the loss on causal LMs ------------------------------------------------------------------


def _terms(student, teacher, batch, weights, pairs):
    loss_fn = DistillLoss(weights, pairs, {p.student: 64 for p in pairs}, {p.teacher: 64 for p in pairs}, False)
    layers = Layers(frozenset(p.student for p in pairs), frozenset(p.student for p in pairs))
    s_out = run_model(student, batch.student, layers)
    t_out = run_model(teacher, batch.teacher, layers)
    return loss_fn(s_out, t_out, batch.labels)[1]


def test_loss_terms_are_zero_for_identical_models(teacher, tok):
    batch = _batch([[2, 11, 12, 13, 14], [2, 15, 16]], tok.pad_token_id)
    pairs = build_mapping("uniform", 4, 4, None, None, False)
    terms = _terms(teacher, teacher, batch, LossWeights(1.0, 2.0, 1.0, 1.0, 1.0, 0.0), pairs)
    for name in ("kd", "cos", "mse", "attn"):
        assert terms[name].item() == pytest.approx(0.0, abs=1e-6), name


def test_padding_never_counts(teacher, tok):
    student = tiny_llama(STUDENT, tok, "eager").eval()
    pairs = build_mapping("uniform", 2, 4, None, None, False)
    weights = LossWeights(1.0, 2.0, 1.0, 1.0, 1.0, 1.0)
    loss_fn = DistillLoss(weights, pairs, {1: 32, 2: 32}, {2: 64, 4: 64}, False)
    layers_s = Layers(frozenset({1, 2}), frozenset({1, 2}))
    layers_t = Layers(frozenset({2, 4}), frozenset({2, 4}))

    def terms(rows):
        batch = _batch(rows, tok.pad_token_id)
        return loss_fn(run_model(student, batch.student, layers_s), run_model(teacher, batch.teacher, layers_t),
                       batch.labels)[1]  # fmt: skip

    short = terms([[2, 11, 12, 13]])
    padded = terms([[2, 11, 12, 13], [2, 20, 21, 22, 23, 24, 25]])  # the short row now padded by 3
    alone = terms([[2, 20, 21, 22, 23, 24, 25]])
    for name in ("kd", "cos", "mse", "attn", "ce"):  # token-weighted mean of the two rows' real tokens
        n_short, n_long = (3, 6) if name == "ce" else (4, 7)
        if name == "attn":  # query-key pairs of real tokens
            n_short, n_long = 16, 49
        expected = (short[name] * n_short + alone[name] * n_long) / (n_short + n_long)
        assert padded[name].item() == pytest.approx(expected.item(), rel=1e-4), name


# --- from_teacher students -------------------------------------------------------------------


def test_from_teacher_keeping_every_layer_is_the_teacher(teacher, tok, tmp_path):
    student = from_teacher(teacher, [0, 1, 2, 3]).eval()
    ids = torch.tensor([[2, 11, 12, 13, 14, 15]])
    assert torch.equal(student(input_ids=ids).logits, teacher(input_ids=ids).logits)
    assert student.training is False and next(student.parameters()).requires_grad


def test_from_teacher_subset_saves_as_a_normal_hf_folder(teacher, tmp_path):
    keep = layers_to_keep(ModelConfig("s", init="from_teacher", every_k=2), 4)
    assert keep == [0, 2]
    student = from_teacher(teacher, keep).eval()
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    ids = torch.tensor([[2, 11, 12, 13]])
    assert torch.allclose(reloaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-6)
    # the KV cache indexes layers by layer_idx: cached and uncached decoding agree
    out = [student.generate(input_ids=ids, max_new_tokens=5, do_sample=False, use_cache=c, pad_token_id=0)
           for c in (True, False)]  # fmt: skip
    assert torch.equal(out[0], out[1])


def test_keep_layers_out_of_range(teacher):
    with pytest.raises(ModelError, match="out of range"):
        layers_to_keep(ModelConfig("s", init="from_teacher", keep_layers=[0, 4]), 4)


def test_config_checks_for_lm_fields():
    with pytest.raises(ConfigError, match="exactly one of"):
        ModelConfig("s", init="from_teacher", keep_layers=[0], every_k=2)
    with pytest.raises(ConfigError, match="init=random"):
        ModelConfig("s", every_k=2)
    with pytest.raises(ConfigError, match="divide"):
        ModelConfig("s", arch="llama", num_heads=4, num_kv_heads=3)
    Config(student=ModelConfig("s", init="from_teacher", every_k=2))  # GLUE students too (fadkd/models/shrink.py)
    with pytest.raises(ConfigError, match="prompt_fraction"):
        TaskConfig(name="lm_sst2", data_dir="sample", prompt_fraction=1.0)


# --- metrics ---------------------------------------------------------------------------------


def test_text_metrics_on_identical_strings():
    m = text_metrics(["the cat sat on the mat today"], ["the cat sat on the mat today"])
    assert m["bleu"] == pytest.approx(100.0) and m["cer"] == 0.0 and m["rouge_l"] == pytest.approx(100.0)


def test_text_metrics_known_values():
    hyp, ref = "the quick brown fox jumps over the dog", "the quick brown fox jumps over the lazy dog"
    # n-gram precisions 8/8, 6/7, 5/6, 4/5; brevity penalty exp(1 - 9/8)
    bleu = 100 * math.exp(1 - 9 / 8) * (1 * 6 / 7 * 5 / 6 * 4 / 5) ** 0.25
    assert text_metrics([hyp], [ref])["bleu"] == pytest.approx(bleu, abs=1e-6)
    m = text_metrics(["the cat sat", "abed"], ["the cat sat on", "abcd"])
    # ROUGE-1 F: (2·1·0.75/1.75 + 0) / 2; CER: (3 "on" edits + 1) / (14 + 4) reference characters
    assert m["rouge_1"] == pytest.approx(100 * (2 * 0.75 / 1.75 + 0) / 2)
    assert m["cer"] == pytest.approx((3 + 1) / (14 + 4))


def test_perplexity_is_total_nll_over_total_tokens(teacher, tok):
    blocks = pack_blocks([[11, 12, 13, 14, 15, 16, 17], [20, 21], [30, 31, 32, 33]], 2, block_size=5)
    nll, count = 0.0, 0
    for block in blocks:  # one block at a time, by hand
        ids = torch.tensor([block["input_ids"]])
        logits = teacher(input_ids=ids).logits[0, :-1]
        nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    expected = math.exp(nll / count)
    for batch_size in (1, 2, 8):  # uneven last block: a mean of batch perplexities would differ
        assert perplexity(teacher, blocks, tok.pad_token_id, batch_size, "cpu")["perplexity"] == pytest.approx(
            expected, rel=1e-5
        )


def test_batched_left_padded_greedy_equals_one_by_one(teacher, tok):
    prompts = [[2, 11, 12, 13, 14, 15], [2, 20], [2, 30, 31, 32]]
    batched, _ = greedy(teacher, prompts, tok.pad_token_id, tok.eos_token_id, 6, batch_size=3, device="cpu")
    single = [greedy(teacher, [p], tok.pad_token_id, tok.eos_token_id, 6, 1, "cpu")[0][0] for p in prompts]
    assert batched == single and all(len(x) <= 6 for x in batched)


def test_evaluator_scores_the_teacher_against_itself(teacher, tok):
    docs = [[11, 12, 13, 14, 15, 16], [20, 21, 22, 23]]
    evaluator = LmEvaluator(tok, pack_blocks(docs, 2, 8), generation_prompts(docs, 2, 0.5, 64, 4, None), 4, 2, "cpu")
    m = evaluator.evaluate(teacher, is_teacher=True)
    assert m["cer_vs_teacher"] == 0.0 and m["params"] == sum(p.numel() for p in teacher.parameters())
    for key in ("perplexity", "bleu", "rouge_1", "rouge_2", "rouge_l", "cer", "bleu_vs_teacher", "tokens_per_s"):
        assert math.isfinite(m[key]), key


def test_tiny_tokenizer_gets_eos_and_pad():
    from transformers import AutoTokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(TINY_TOKENIZER), "student")
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("[SEP]", "[CLS]", "[PAD]")


def test_causal_lm_from_a_folder_with_attention_maps(teacher, tok, tmp_path):
    from fadkd.models import attention
    from fadkd.models.lm import load_causal_lm

    teacher.save_pretrained(tmp_path / "t")
    loaded = load_causal_lm(ModelConfig("t", path=str(tmp_path / "t")), "teacher", tok, attention.NAME).eval()
    assert loaded.config._attn_implementation == attention.NAME
    batch = _batch([[2, 11, 12, 13]], tok.pad_token_id)
    out = run_model(loaded, batch.student, Layers(frozenset({2}), frozenset({2})))
    assert out.attentions[2].shape == (1, 4, 4, 4)  # per query head, though only 2 key/value heads
    assert torch.allclose(out.logits, teacher(**batch.student).logits, atol=1e-5)
