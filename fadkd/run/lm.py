"""The causal-LM builder of a run (the same Setup as GLUE's, fadkd/run/setup.py), and `fadkd eval` of an LM run.

`prepare_lm` loads the texts, the tokenizer(s) and models, packs the blocks and evaluates the
teacher once: its metrics and its greedy continuations (the reference for bleu_vs_teacher /
cer_vs_teacher, saved to <run>/teacher_generations.jsonl). The teacher is loaded whenever it
can be: the loss needs it, a from_teacher student is built from it, or only for that reference
(then it is freed after its evaluation; a tiny-BERT teacher preset is skipped in that case, so
`fadkd finetune model=tiny-llama task=lm_sst2` works). Teacher and student must share one
tokenizer when a teacher term is on: logit KD compares distributions over one vocabulary and
the feature terms compare positions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fadkd.config.schema import Config
from fadkd.data.glue import resolve_data_dir
from fadkd.data.lm_text import LmCollator, encode, generation_prompts, get_lm_task, load_texts, pack_blocks
from fadkd.eval.lm import LmEvaluator, perplexity
from fadkd.losses.spec import LossSpec
from fadkd.models.lm import check_lm_lengths, from_teacher, layers_to_keep, load_causal_lm, prepare_tokenizer
from fadkd.models.load import ModelError, depth, load_tokenizer, width
from fadkd.run.progress import make_console
from fadkd.run.pruning import calibration_batches, check_prune_shape, prune_student
from fadkd.run.setup import Setup
from fadkd.teacher.base import LiveTeacher, Teacher
from fadkd.teacher.lm_cache import cached_lm_teacher, check_lm_cache_config

console = make_console()
TEACHER_GENERATIONS = "teacher_generations.jsonl"


def _shape(m: PreTrainedModel) -> dict[str, int]:
    return {"layers": depth(m), "width": width(m), "heads": m.config.num_attention_heads}


def lm_teacher(cfg: Config, model, tok, train_rows, metrics, kd_vocab, device, spec: LossSpec) -> Teacher | None:
    """The teacher for the loop, reading the layers the spec asks for; None without teacher terms.

    cache.enabled: its top-k cache (built here on first use), and the model is not kept.
    """
    if model is None:
        return None
    if not cfg.cache.enabled:
        return LiveTeacher(model, spec.teacher_layers, metrics)
    vocab = kd_vocab or model.config.vocab_size
    return cached_lm_teacher(
        cfg, model, tok, train_rows, spec.teacher_layers, _shape(model), vocab, metrics, device, console.print
    )


def _data_dir(data_dir: str | None) -> str | None:
    return resolve_data_dir(data_dir) if data_dir is not None else None


def _teacher_loadable(cfg: Config) -> bool:
    return cfg.teacher.path is not None or cfg.teacher.arch == "llama"


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a is b or (a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id)


def build_evaluator(cfg: Config, tok: PreTrainedTokenizerBase, device) -> LmEvaluator:
    task = get_lm_task(cfg.task.name)
    docs = encode(tok, load_texts(task, "dev", cfg.task, _data_dir(cfg.task.data_dir)))
    t = cfg.task
    blocks = pack_blocks(docs, tok.eos_token_id, t.block_size)
    prompts = generation_prompts(
        docs, tok.eos_token_id, t.prompt_fraction, t.max_length, t.max_new_tokens, t.eval_samples
    )
    return LmEvaluator(tok, blocks, prompts, t.max_new_tokens, cfg.train.eval_batch_size, device)


def prepare_lm(cfg: Config, attn: str | None, device, use_teacher: bool, out_dir: Path) -> Setup:
    task = get_lm_task(cfg.task.name)
    check_lm_cache_config(cfg)  # the top-k cache (fadkd/teacher/lm_cache.py): refused terms, before any loading
    if cfg.student.init == "pruned":
        check_prune_shape(cfg)  # a shape the teacher cannot take: refused before any loading
    from_t = cfg.student.init != "random"  # from_teacher or pruned: built from the teacher
    teacher = teacher_tok = None
    if use_teacher or from_t or _teacher_loadable(cfg):
        teacher_tok = prepare_tokenizer(load_tokenizer(cfg.teacher, "teacher"), "teacher")
        with torch.random.fork_rng():  # loading the teacher leaves the run's RNG alone
            teacher = load_causal_lm(cfg.teacher, "teacher", teacher_tok, attn).to(device)
        teacher.eval().requires_grad_(False)
        check_lm_lengths(teacher, cfg.task, "teacher")
    tok_cfg = cfg.student if cfg.student.tokenizer or not from_t else cfg.teacher
    student_tok = prepare_tokenizer(load_tokenizer(tok_cfg, "student"), "student")
    texts = load_texts(task, "train", cfg.task, _data_dir(cfg.task.data_dir))
    train_rows = pack_blocks(encode(student_tok, texts), student_tok.eos_token_id, cfg.task.block_size)
    train_rows = [{**row, "_index": i} for i, row in enumerate(train_rows)]  # for teacher-cache lookups
    evaluator = build_evaluator(cfg, student_tok, device)
    if cfg.student.init == "pruned":  # calibrated on the first training blocks
        plain, b = LmCollator(student_tok.pad_token_id, with_teacher=False), cfg.train.eval_batch_size
        rows = calibration_batches(train_rows, plain, cfg.student.prune.calibration_rows, b, device)
        blocks, pad = evaluator.blocks, student_tok.pad_token_id
        held_out = lambda m: {"perplexity": perplexity(m, blocks, pad, b, device)["perplexity"]}  # noqa: E731
        student = prune_student(cfg, teacher, rows, held_out, student_tok, out_dir)
    elif from_t:
        student = from_teacher(teacher, layers_to_keep(cfg.student, depth(teacher)))
    else:
        student = load_causal_lm(cfg.student, "student", student_tok, attn)
    student = student.to(device).train()
    check_lm_lengths(student, cfg.task, "student")
    kd_vocab = check_vocabularies(cfg, student_tok, teacher_tok, student, teacher) if use_teacher else None
    retokenize = None if not use_teacher or same_vocabulary(student_tok, teacher_tok) else (student_tok, teacher_tok)
    console.print(
        f"{task.name}: {len(texts)} training texts -> {len(train_rows)} blocks of {cfg.task.block_size} tokens; "
        f"{len(evaluator.blocks)} held-out blocks, {len(evaluator.prompts)} generation prompts"
    )
    teacher_metrics = None
    if teacher is not None:
        if same_vocabulary(student_tok, teacher_tok):
            teacher_metrics = evaluator.evaluate(teacher, is_teacher=True)
            evaluator.write_generations(out_dir / TEACHER_GENERATIONS)
        else:  # its own tokens for its perplexity; prompts cut elsewhere: no vs-teacher metrics
            teacher_metrics = build_evaluator(cfg, teacher_tok, device).evaluate(teacher)
            console.print("the teacher tokenizes differently: no bleu_vs_teacher / cer_vs_teacher")
        if not use_teacher:
            teacher = teacher_tok = None  # only the reference was needed
    evaluate, held = evaluator.evaluate, {"teacher": teacher}  # handed over once: a cached run frees the model
    return Setup(
        task=task,
        train_rows=train_rows,
        student=student,
        student_tok=student_tok,
        collator=LmCollator(student_tok.pad_token_id, with_teacher=teacher is not None, retokenize=retokenize),
        evaluate=lambda model, tok: evaluate(model),
        make_teacher=lambda spec, _: lm_teacher(
            cfg, held.pop("teacher"), teacher_tok, train_rows, teacher_metrics, kd_vocab, device, spec
        ),
        teacher_shape=None if teacher is None else _shape(teacher),
        teacher_metrics=teacher_metrics,
        kd_vocab=kd_vocab,
    )


def _tokenizer_name(tok: PreTrainedTokenizerBase) -> str:
    return f"'{tok.name_or_path or '?'}' ({type(tok).__name__}, {len(tok)} tokens)"


def check_vocabularies(cfg: Config, student_tok, teacher_tok, student, teacher) -> int | None:
    """Refuse token-level terms across tokenizers; for padded vocabularies, the kd term's vocabulary size.

    Different tokenizers: only the sequence-level ULD term (loss.kd=uld, no feature terms) can
    compare the models. One tokenizer, output layers of different sizes (vocabularies padded to
    other multiples): the kd term reads the first len(tokenizer) logits of each side, the real
    vocabulary both share (None when the sizes agree: every logit is compared, as before).
    """
    kd_on = cfg.loss.alpha > 0
    if not same_vocabulary(student_tok, teacher_tok):
        if cfg.loss.layerwise or (kd_on and cfg.loss.kd != "uld"):
            raise ModelError(
                f"the teacher's tokenizer {_tokenizer_name(teacher_tok)} and the student's "
                f"{_tokenizer_name(student_tok)} differ; token-level terms need one vocabulary and the same positions, "
                "so on causal-LM tasks teacher and student must share one tokenizer. Opt into the sequence-level "
                "alternative with loss.kd=uld loss.beta=0 loss.gamma=0 loss.delta=0 (Universal Logit Distillation; "
                "README, Loss terms), give the student the teacher's tokenizer (student.tokenizer=...), or train "
                "without the teacher: loss=student_alone"
            )
        return None
    s_vocab, t_vocab, real = student.config.vocab_size, teacher.config.vocab_size, len(student_tok)
    if s_vocab == t_vocab or not kd_on:
        return None
    if real > min(s_vocab, t_vocab):
        raise ModelError(
            f"the student's output layer has {s_vocab} entries and the teacher's {t_vocab}, fewer than the "
            f"{real} tokens of their tokenizer; logit KD needs every real token on both sides (set loss.alpha=0, "
            "or use models built for this tokenizer)"
        )
    console.print(
        f"padded vocabularies: the student's output layer has {s_vocab} entries and the teacher's {t_vocab}, over "
        f"one tokenizer of {real} tokens; the kd term compares the first {real} logits (the shared real vocabulary)"
    )
    return real


def eval_lm_run(run_dir: Path, cfg, device) -> dict[str, float]:
    """`fadkd eval` for an LM run: the saved student on the held-out set; writes generations.jsonl."""
    config: Config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(run_dir / "student"), "student")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "student", dtype=torch.float32).to(device)
    evaluator = build_evaluator(config, tok, device)
    if not evaluator.load_teacher_texts(run_dir / TEACHER_GENERATIONS) and _teacher_loadable(config):
        teacher_tok = prepare_tokenizer(load_tokenizer(config.teacher, "teacher"), "teacher")
        if same_vocabulary(tok, teacher_tok):  # else its prompts differ: no vs-teacher metrics
            teacher = load_causal_lm(config.teacher, "teacher", teacher_tok, None).to(device)
            evaluator.evaluate(teacher, is_teacher=True)
            del teacher
    metrics = evaluator.evaluate(model)
    evaluator.write_generations(run_dir / "generations.jsonl", evaluator.last_texts)
    (run_dir / "eval.json").write_text(
        json.dumps({"task": config.task.name, "split": "dev", **metrics}, indent=2) + "\n"
    )
    return metrics
