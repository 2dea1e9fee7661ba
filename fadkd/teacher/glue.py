"""Set-up of a GLUE run's teacher: alignment checks, the cache key, loading, dev metrics, the cache."""

import hashlib
import json

import torch

from fadkd.config.schema import Config
from fadkd.data.batches import AlignmentError
from fadkd.losses.spec import LossSpec
from fadkd.models import attention
from fadkd.models.capture import Layers
from fadkd.models.load import check_max_length, count_parameters, load_classifier
from fadkd.teacher.base import CachedTeacher, LiveTeacher
from fadkd.teacher.cache import CacheError, build_cache, open_cache, teacher_fingerprint


def _rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def cache_components(cfg: Config, collator, train_rows, dev_rows, layers: Layers) -> dict:
    """Everything that changes the cached teacher outputs (see fadkd/teacher/cache.py)."""
    tok = collator.teacher_tok
    return {
        "teacher": teacher_fingerprint(cfg.teacher),
        "teacher_tokenizer": hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest(),
        "student_tokenizer": hashlib.sha256(collator.student_tok.backend_tokenizer.to_str().encode()).hexdigest(),
        "teacher_input": "shared" if collator.shared else ("translated" if collator.table is not None else "native"),
        "task": cfg.task.name,
        "train_rows": _rows_hash(train_rows),
        "dev_rows": _rows_hash(dev_rows),  # the teacher's dev metrics are stored too
        "max_length": cfg.task.max_length,
        "hidden_layers": sorted(layers.hidden),
        "attention_layers": sorted(layers.attentions),
        "dtype": cfg.cache.dtype,
    }


ALIGNMENT_ROWS = 512  # rows checked before training; later batches are still checked as they come


def tokenizer_name(tok) -> str:
    """How messages name a tokenizer: its folder / Hub id, class and size."""
    return f"'{tok.name_or_path or '?'}' ({type(tok).__name__}, {len(tok)} tokens)"


def check_alignment(collator, rows: list[dict], limit: int = ALIGNMENT_ROWS) -> None:
    """Tokenizers that differ: refuse position-wise terms before training if the first rows do not align.

    The collator checks every batch anyway (a rare word may still split differently later); this
    catches tokenizers that simply split text another way before the teacher is evaluated or cached.
    """
    try:
        for start in range(0, min(len(rows), limit), 64):
            collator(rows[start : min(start + 64, limit)])
    except AlignmentError as err:
        raise AlignmentError(
            f"student tokenizer {tokenizer_name(collator.student_tok)} and teacher tokenizer "
            f"{tokenizer_name(collator.teacher_tok)} differ, and position-wise terms (loss.beta, loss.gamma, "
            f"loss.delta) compare tokens one to one; {err}"
        ) from None


def glue_teacher(cfg: Config, spec: LossSpec, task, shape, collator, train_rows, dev_rows, device, evaluate, log):
    """The teacher of a GLUE run: read from its cache, or loaded, evaluated on dev (and cached when asked).

    `evaluate(model, tokenizer)` gives dev metrics. Raises before any teacher work when the tokenizers
    cannot align the position-wise terms, or when the cache cannot hold what the terms read.
    """
    if collator.table is not None:  # tokenizers that differ: refuse before any teacher work, not at step 1
        check_alignment(collator, train_rows)
    maps = spec.attention  # δ reads maps (or query/key/value)
    if cfg.cache.enabled and maps and spec.choice.attn == "relations":
        raise CacheError(
            "cache.enabled=true with loss.attn=relations: the teacher cache stores hidden states and attention "
            "maps, not the query/key/value that relations compare; set cache.enabled=false (the live teacher) "
            "or loss.attn=maps"
        )
    stored = spec.cached_layers
    if cfg.cache.enabled:
        components = cache_components(cfg, collator, train_rows, dev_rows, stored)
        folder, cache = open_cache(cfg.cache, components)
        if cache is not None:
            log(f"teacher cache: reading {folder}")
            return CachedTeacher(cache, cache.meta["teacher_dev"], device)
    attn = attention.NAME if maps or (cfg.cache.enabled and spec.pairs) else None
    with torch.random.fork_rng():  # loading a teacher (e.g. a fresh head) leaves the run's RNG alone
        model = load_classifier(cfg.teacher, "teacher", task.num_labels, len(collator.teacher_tok), attn)
    model.to(device).eval().requires_grad_(False)
    check_max_length(model, cfg.task.max_length, "teacher")
    metrics = evaluate(model, collator.teacher_tok)
    if not cfg.cache.enabled:
        return LiveTeacher(model, spec.teacher_layers, metrics)
    record = {"teacher_dev": metrics, "teacher_params": count_parameters(model)}
    cache = build_cache(
        folder, components, cfg.cache, model, train_rows, collator, stored, shape,
        task.num_labels, cfg.train.eval_batch_size, device, record, log,
    )  # fmt: skip
    return CachedTeacher(cache, metrics, device)  # the loop reads the cache from here on
