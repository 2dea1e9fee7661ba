"""The teacher's side of a step: a live frozen model, or its outputs read from the cache."""

import hashlib
import json

import torch

from fadkd.config.schema import Config
from fadkd.data.batches import AlignmentError
from fadkd.models import attention
from fadkd.models.capture import Layers, layers_to_capture, run_model
from fadkd.models.load import check_max_length, count_parameters, load_classifier
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


class Teacher:
    """`outputs(batch)` gives the teacher's Outputs for a training batch, from the model or the cache."""

    def __init__(self, cfg: Config, task, shape, collator, train_rows, dev_rows, pairs, device, dev_metrics, log):
        self.model = self.cache = None
        self.device = device
        features, maps = cfg.loss.beta > 0 or cfg.loss.gamma > 0, cfg.loss.delta > 0
        relations = cfg.loss.attn == "relations"
        self.layers = layers_to_capture(pairs, features, maps, relations)[1]
        if collator.table is not None:  # tokenizers that differ: refuse before any teacher work, not at step 1
            check_alignment(collator, train_rows)
        if cfg.cache.enabled and maps and relations:
            raise CacheError(
                "cache.enabled=true with loss.attn=relations: the teacher cache stores hidden states and attention "
                "maps, not the query/key/value that relations compare; set cache.enabled=false (the live teacher) "
                "or loss.attn=maps"
            )
        if cfg.cache.enabled:
            # Store every mapped layer's states and maps, so runs that differ only in loss
            # weights share one cache.
            stored = layers_to_capture(pairs, True, True)[1] if pairs else Layers()
            components = cache_components(cfg, collator, train_rows, dev_rows, stored)
            folder, self.cache = open_cache(cfg.cache, components)
            if self.cache is not None:
                log(f"teacher cache: reading {folder}")
                self.metrics = self.cache.meta["teacher_dev"]
                return
        attn = attention.NAME if maps or (cfg.cache.enabled and pairs) else None
        with torch.random.fork_rng():  # loading a teacher (e.g. a fresh head) leaves the run's RNG alone
            self.model = load_classifier(cfg.teacher, "teacher", task.num_labels, len(collator.teacher_tok), attn)
        self.model.to(device).eval().requires_grad_(False)
        check_max_length(self.model, cfg.task.max_length, "teacher")
        self.metrics = dev_metrics(self.model, collator.teacher_tok)
        if cfg.cache.enabled:
            record = {"teacher_dev": self.metrics, "teacher_params": count_parameters(self.model)}
            self.cache = build_cache(
                folder, components, cfg.cache, self.model, train_rows, collator, stored, shape,
                task.num_labels, cfg.train.eval_batch_size, device, record, log,
            )  # fmt: skip
            self.model = None  # the loop reads the cache from here on

    def outputs(self, batch):
        if self.cache is not None:
            return self.cache.outputs(batch.indices, batch.student["attention_mask"], self.device)
        with torch.no_grad():  # not inference_mode: its tensors cannot be saved for backward
            return run_model(self.model, batch.teacher, self.layers)
