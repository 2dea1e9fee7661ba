"""The causal-LM builder of a run (the same Setup as GLUE's, fadkd/run/setup.py), and `fadkd eval` of an LM run.

`prepare_lm` loads the texts, the tokenizer(s) and models and packs the blocks. The teacher is loaded
whenever it can be: the loss needs it, a from_teacher student is built from it, or only to score it
as a reference (then it is freed after its evaluation; a tiny-BERT teacher preset is skipped in that
case, so `fadkd finetune model=tiny-llama task=lm_sst2` works). Its evaluation (metrics and greedy
continuations, the reference for bleu_vs_teacher / cer_vs_teacher, saved to
<run>/teacher_generations.jsonl), sharding and cache happen in the teacher's set-up
(fadkd/teacher/setup.py, with fadkd/teacher/lm.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from fadkd.config.schema import Config
from fadkd.data.glue import resolve_data_dir
from fadkd.data.lm_text import LmCollator, encode, generation_prompts, get_lm_task, load_texts, pack_blocks
from fadkd.eval.lm import LmEvaluator, perplexity
from fadkd.models.lm import check_lm_lengths, from_teacher, layers_to_keep, load_causal_lm, prepare_tokenizer
from fadkd.models.load import depth, load_tokenizer
from fadkd.run.progress import make_console
from fadkd.run.pruning import calibration_batches, check_prune_shape, prune_student
from fadkd.run.setup import Setup
from fadkd.teacher.lm import TEACHER_GENERATIONS, LmTeacher, check_vocabularies, same_vocabulary
from fadkd.teacher.lm_cache import check_lm_cache_config

console = make_console()


def _data_dir(data_dir: str | None) -> str | None:
    return resolve_data_dir(data_dir) if data_dir is not None else None


def _teacher_loadable(cfg: Config) -> bool:
    return cfg.teacher.path is not None or cfg.teacher.arch == "llama"


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
    kd_vocab = None
    if use_teacher:  # one vocabulary for token-level terms; padded output layers: the kd vocabulary
        kd_vocab = check_vocabularies(cfg, student_tok, teacher_tok, student, teacher, console.print)
    one_vocabulary = teacher is not None and same_vocabulary(student_tok, teacher_tok)
    retokenize = None if not use_teacher or one_vocabulary else (student_tok, teacher_tok)
    console.print(
        f"{task.name}: {len(texts)} training texts -> {len(train_rows)} blocks of {cfg.task.block_size} tokens; "
        f"{len(evaluator.blocks)} held-out blocks, {len(evaluator.prompts)} generation prompts"
    )
    family = None
    if teacher is not None:  # its own tokens for its perplexity when it tokenizes differently (no vs-teacher metrics)
        reference = evaluator if one_vocabulary else build_evaluator(cfg, teacher_tok, device)
        family = LmTeacher(
            cfg, teacher, teacher_tok, train_rows, reference, one_vocabulary, kd_vocab, use_teacher, device,
            console.print,
        )  # fmt: skip
    return Setup(
        task=task,
        train_rows=train_rows,
        student=student,
        student_tok=student_tok,
        collator=LmCollator(student_tok.pad_token_id, with_teacher=use_teacher, retokenize=retokenize),
        evaluate=lambda model, tok: evaluator.evaluate(model),
        teacher=family,
        teacher_shape=family.shape if use_teacher else None,  # what the loss's mapping reads
        kd_vocab=kd_vocab,
    )


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
