"""The causal-LM top-k teacher cache and the sparse α terms, on tiny Llamas built from config.

Stated bound (fadkd/losses/kd.py, sparse_kd_term): the sparse term never exceeds the live one, equals
it when k covers the vocabulary, and for forward KL falls short of it by exactly
τ²·mean over positions of p_t(T)·KL(p_t(·|T) ‖ p_s(·|T)), T the tokens outside the teacher's top k.
"""

import json

import pytest
import torch
import torch.nn.functional as F

import fadkd.run.guards
import fadkd.teacher.lm_cache
from fadkd.config.schema import CacheConfig, Config, LossConfig, ModelConfig, TaskConfig, TrainConfig
from fadkd.data.glue import resolve_data_dir
from fadkd.data.lm_text import LmCollator, encode, get_lm_task, load_texts, pack_blocks
from fadkd.losses.kd import KL_FAMILY, TopK, kd_term, sparse_kd_term
from fadkd.models.capture import Layers, run_model
from fadkd.models.lm import prepare_tokenizer, tiny_llama
from fadkd.models.load import load_tokenizer
from fadkd.run.train import train
from fadkd.teacher.cache import CacheError
from fadkd.teacher.lm_cache import build_lm_cache, lm_cache_components, topk_of

TEACHER = ModelConfig("tiny-llama", arch="llama", num_layers=4, hidden_size=64, num_heads=4, num_kv_heads=2,
                      intermediate_size=128, init_seed=1)  # fmt: skip
STUDENT = ModelConfig("tiny-llama-half", arch="llama", num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1,
                      intermediate_size=64, init_seed=2)  # fmt: skip
TAU = 2.0


@pytest.fixture(scope="module")
def tok():
    return prepare_tokenizer(load_tokenizer(ModelConfig(), "student"), "student")


def _logits(seed: int, shape=(2, 5, 40), scale=3.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _topk(teacher_logits: torch.Tensor, k: int) -> TopK:
    return TopK(*topk_of(teacher_logits, k, TAU))


# --- the sparse terms, pure --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KL_FAMILY)
def test_whole_vocabulary_topk_equals_the_live_term(kind):
    s, t = _logits(0), _logits(1)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    s_garbage = s.clone()
    s_garbage[1, 3:] = float("nan")  # padding garbage never counts
    s_garbage.requires_grad_(True)
    live = kd_term(kind, s, t, TAU, mask)
    sparse = sparse_kd_term(kind, s_garbage, _topk(t, t.shape[-1]), TAU, mask)
    assert sparse.item() == pytest.approx(live.item(), rel=1e-5, abs=1e-6)
    sparse.backward()
    assert torch.isfinite(s_garbage.grad).all() and (s_garbage.grad[1, 3:] == 0).all()


def test_forward_kl_gap_is_the_teachers_tail_mass_times_the_divergence_inside_the_tail():
    s, t, k = _logits(2), _logits(3), 5
    top = _topk(t, k)
    gap = kd_term("forward_kl", s, t, TAU) - sparse_kd_term("forward_kl", s, top, TAU)
    log_s, log_t = F.log_softmax(s / TAU, -1), F.log_softmax(t / TAU, -1)
    in_tail = torch.ones_like(t, dtype=torch.bool).scatter(-1, top.ids, False)
    cond_t = torch.where(in_tail, log_t, -torch.inf).log_softmax(-1)  # p_t(·|T)
    cond_s = torch.where(in_tail, log_s, -torch.inf).log_softmax(-1)
    inner = torch.where(in_tail, cond_t.exp() * (cond_t - cond_s), 0.0).sum(-1)
    expected = TAU**2 * (top.tail.exp() * inner).mean()
    assert gap.item() >= 0
    assert gap.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("kind", KL_FAMILY)
@pytest.mark.parametrize("k", [1, 4, 20])
def test_sparse_terms_never_exceed_the_live_ones(kind, k):
    s, t = _logits(4), _logits(5)
    assert sparse_kd_term(kind, s, _topk(t, k), TAU).item() <= kd_term(kind, s, t, TAU).item() + 1e-5


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "symmetric_kl", "jsd"])
def test_sparse_terms_vanish_for_the_teacher_itself(kind):
    t = _logits(6)
    assert sparse_kd_term(kind, t, _topk(t, 7), TAU).item() == pytest.approx(0.0, abs=1e-5)


def test_uld_is_refused_against_a_sparse_teacher():
    t = _logits(7)
    with pytest.raises(ValueError, match="cannot be computed from a top-k teacher"):
        sparse_kd_term("uld", t, _topk(t, 3), TAU)


# --- the cache on tiny Llamas -------------------------------------------------------------------


def _blocks(tok, n=6, block=32) -> list[dict]:
    task = get_lm_task("lm_sst2")
    texts = load_texts(task, "train", TaskConfig(name="lm_sst2", data_dir="sample"), resolve_data_dir("sample"))
    rows = pack_blocks(encode(tok, texts), tok.eos_token_id, block)[:n]
    return [{**r, "_index": i} for i, r in enumerate(rows)]


def _cache_cfg(tmp_path, top_k: int, **cache) -> Config:
    return Config(
        teacher=TEACHER, student=STUDENT, task=TaskConfig(name="lm_sst2", data_dir="sample", block_size=32),
        cache=CacheConfig(enabled=True, dir=str(tmp_path / "cache"), top_k=top_k, **cache),
        loss=LossConfig(temperature=TAU),
    )  # fmt: skip


def _read_back(tmp_path, tok, top_k: int, layers: Layers | None = None, dtype="float16"):
    """(teacher, student, batch, cached teacher Outputs) for 6 blocks of 32 tokens."""
    teacher, student = tiny_llama(TEACHER, tok, "fadkd").eval(), tiny_llama(STUDENT, tok, None).eval()
    rows, cfg, layers = _blocks(tok), _cache_cfg(tmp_path, top_k, dtype=dtype), layers or Layers()
    vocab = teacher.config.vocab_size
    shape = {"layers": 4, "width": 64, "heads": 4}
    comps = lm_cache_components(cfg, tok, rows, layers, vocab)
    cache = build_lm_cache(tmp_path / "c", comps, cfg, teacher, rows, tok.pad_token_id, layers, shape, 4,
                           torch.device("cpu"), log=lambda *_: None)  # fmt: skip
    batch = LmCollator(tok.pad_token_id, with_teacher=True)([rows[5], rows[1], rows[3]])
    return teacher, student, batch, cache.outputs(batch.indices, batch.student["attention_mask"], torch.device("cpu"))


def test_cache_with_k_the_whole_vocabulary_gives_the_live_kd_within_fp16(tmp_path, tok):
    layers = Layers(hidden=frozenset({0, 2}), attentions=frozenset({2}))
    teacher, student, batch, cached = _read_back(tmp_path, tok, 10**6, layers)
    live = run_model(teacher, batch.teacher, layers)
    s_logits, mask = student(**batch.student).logits, batch.student["attention_mask"]
    for kind in KL_FAMILY:
        want = kd_term(kind, s_logits, live.logits, TAU, mask)
        got = sparse_kd_term(kind, s_logits, cached.topk, TAU, mask)
        assert got.item() == pytest.approx(want.item(), rel=2e-3), kind
    real = mask.bool()
    for layer in (0, 2):  # stored states: fp16 rounding
        torch.testing.assert_close(cached.hidden[layer][real], live.hidden[layer][real], rtol=1e-3, atol=1e-3)
    assert real.all()  # full blocks: every stored map entry is real
    torch.testing.assert_close(cached.attentions[2], live.attentions[2], rtol=1e-3, atol=1e-3)


def test_cache_with_small_k_is_short_of_live_kd_by_the_stated_gap(tmp_path, tok):
    teacher, student, batch, cached = _read_back(tmp_path, tok, 8)
    mask = batch.student["attention_mask"]
    live_t, s_logits = teacher(**batch.teacher).logits, student(**batch.student).logits
    live = kd_term("forward_kl", s_logits, live_t, TAU, mask).item()
    got = sparse_kd_term("forward_kl", s_logits, cached.topk, TAU, mask).item()
    exact = sparse_kd_term("forward_kl", s_logits, TopK(*topk_of(live_t, 8, TAU)), TAU, mask).item()
    assert got == pytest.approx(exact, rel=2e-3)  # the cache stores that top k, up to fp16
    assert 0 <= live - got
    # On a random-init tiny teacher the top 8 of ~4,000 tokens hold little of the mass at τ = 2, so
    # nearly all of the live term sits in the tail: the sparse term keeps only the coarse part.
    tail_mass = cached.topk.tail.exp()[mask.bool()].mean().item()
    assert tail_mass > 0.5 and got < live


def _run_cfg(tmp_path, top_k: int, enabled=True, **train_kw) -> Config:
    return Config(
        teacher=TEACHER, student=STUDENT,
        task=TaskConfig(name="lm_sst2", data_dir="sample", max_train_samples=48, max_eval_samples=8, eval_samples=3,
                        max_new_tokens=4, block_size=32),
        train=TrainConfig(**{"max_steps": 4, "batch_size": 4, "log_every": 1, **train_kw}),
        cache=CacheConfig(enabled=enabled, dir=str(tmp_path / "cache"), top_k=top_k),
    )  # fmt: skip


def _steps(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def test_training_through_a_whole_vocabulary_cache_matches_the_live_teacher(tmp_path):
    live = train(_run_cfg(tmp_path, 10**6, enabled=False), tmp_path / "live")
    cached = train(_run_cfg(tmp_path, 10**6), tmp_path / "cached")
    quality = ("perplexity", "bleu", "rouge_l", "cer", "bleu_vs_teacher")  # not the throughputs
    assert {k: cached["teacher"][k] for k in quality} == {k: live["teacher"][k] for k in quality}
    assert cached["params"]["teacher"] == live["params"]["teacher"]
    for a, b in zip(_steps(tmp_path / "live"), _steps(tmp_path / "cached"), strict=True):
        for term in ("loss", "kd", "cos", "mse", "attn", "ce"):
            assert b[term] == pytest.approx(a[term], rel=2e-3, abs=1e-5), (term, a["step"])


def test_a_resumed_run_reads_the_same_cache(tmp_path, monkeypatch):
    straight = train(_run_cfg(tmp_path, 16, checkpoint_every=2), tmp_path / "straight")
    monkeypatch.setattr(fadkd.run.guards, "_RAISE_AT_STEP", 3)
    with pytest.raises(RuntimeError, match="injected fault"):
        train(_run_cfg(tmp_path, 16, checkpoint_every=2), tmp_path / "broken")
    monkeypatch.setattr(fadkd.run.guards, "_RAISE_AT_STEP", None)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache was built again")

    monkeypatch.setattr(fadkd.teacher.lm_cache, "build_lm_cache", no_rebuild)
    resumed = train(_run_cfg(tmp_path, 16, checkpoint_every=2, resume=True), tmp_path / "broken")
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert [r["loss"] for r in _steps(tmp_path / "broken")] == [r["loss"] for r in _steps(tmp_path / "straight")]
    assert resumed["student"]["perplexity"] == straight["student"]["perplexity"]


def test_a_cache_built_for_another_key_is_refused(tmp_path):
    train(_run_cfg(tmp_path, 16, max_steps=1), tmp_path / "a")
    folder = next((tmp_path / "cache").iterdir())
    cfg = _run_cfg(tmp_path, 8, max_steps=1)
    cfg.cache.path = str(folder)
    with pytest.raises(CacheError, match="top_k differ"):
        train(cfg, tmp_path / "b")
    cfg = _run_cfg(tmp_path, 16, max_steps=1)
    cfg.cache.path, cfg.loss.temperature = str(folder), 1.0
    with pytest.raises(CacheError, match="temperature differ"):
        train(cfg, tmp_path / "c")


def test_a_cache_over_its_size_limit_is_refused_before_writing(tmp_path):
    cfg = _run_cfg(tmp_path, 16)
    cfg.cache.max_gb = 1e-6
    with pytest.raises(CacheError, match=r"over cache.max_gb=1e-06; raise cache.max_gb, lower cache.top_k"):
        train(cfg, tmp_path / "a")
    assert not any((tmp_path / "cache").glob("*/meta.json"))


def test_size_estimate_counts_each_part():
    layers = Layers(hidden=frozenset({0, 5}), attentions=frozenset({5}))
    parts = fadkd.teacher.lm_cache.estimate_parts([128, 128, 64], 64, 49152, layers, {"width": 576, "heads": 9})
    assert parts == {
        "top-k": 320 * (64 * 4 + 4),  # uint16 ids + 16-bit log-probs, a float32 tail
        "hidden states": 2 * 320 * 576 * 2,
        "attention maps": (128 * 128 * 2 + 64 * 64) * 9 * 2,
    }


def test_minitron_recipe_trains_through_the_cache(tmp_path):
    """experiment=lm_minitron's terms (KL + cosine on a late layer and the embeddings, no LM loss)."""
    from fadkd.config.schema import MappingConfig

    cfg = _run_cfg(tmp_path, 16, max_steps=2)
    cfg.loss = LossConfig(alpha=1.0, beta=1.0, gamma=0.0, delta=0.0, ce=0.0)
    cfg.mapping = MappingConfig(strategy="explicit", pairs=[[0, 0], [2, 4]])
    metrics = train(cfg, tmp_path / "minitron")
    assert metrics["loss_formula"] == "L = 1.0*KL(τ=2.0) + 1.0*cos"
    meta = json.loads(next((tmp_path / "cache").glob("*/meta.json")).read_text())
    assert meta["layers"] == {"hidden": [0, 4], "attentions": []} and meta["top_k"] == 16
    assert all(r["cos/s0_t0"] >= 0 for r in _steps(tmp_path / "minitron"))
