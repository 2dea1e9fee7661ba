"""What a GLUE run's teacher set-up (fadkd/teacher/setup.py) needs from the task family: the alignment check,
the cache key, loading the classifier, its dev metrics and its cache."""

import hashlib
import json

import torch

from fadkd.config.schema import Config
from fadkd.data.batches import AlignmentError
from fadkd.losses.spec import LossSpec
from fadkd.models import attention
from fadkd.models.capture import Layers
from fadkd.models.load import check_max_length, count_parameters, load_classifier
from fadkd.teacher.cache import CacheError, build_cache, join_cache_build, open_cache, teacher_fingerprint


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


class GlueTeacher:
    """A GLUE run's teacher for fadkd/teacher/setup.py: a classifier, its dev metrics, the classifier cache.

    `evaluate(model, tokenizer)` gives dev metrics (fadkd/eval/glue.py on the run's dev rows).
    """

    trains, scored_first = True, False  # loaded once the loss spec says how (attention maps, the cache key)

    def __init__(self, cfg: Config, task, shape: dict, collator, train_rows, dev_rows, evaluate, device, log):
        self.cfg, self.task, self.shape, self.collator = cfg, task, shape, collator
        self.train_rows, self.dev_rows, self._evaluate = train_rows, dev_rows, evaluate
        self.device, self.log = device, log
        self.cached, self._key = cfg.cache.enabled, None
        self.model = self.metrics = None

    def check(self, spec: LossSpec) -> None:
        """Tokenizers that cannot align the position-wise terms; a cache asked for what it does not store."""
        if self.collator.table is not None:  # tokenizers that differ: refused before any teacher work, not at step 1
            check_alignment(self.collator, self.train_rows)
        if self.cached and spec.attention and spec.choice.attn == "relations":
            raise CacheError(
                "cache.enabled=true with loss.attn=relations: the teacher cache stores hidden states and attention "
                "maps, not the query/key/value that relations compare; set cache.enabled=false (the live teacher) "
                "or loss.attn=maps"
            )

    def load(self, spec: LossSpec):
        attn = attention.NAME if spec.attention or (self.cached and spec.pairs) else None
        with torch.random.fork_rng():  # loading a teacher (e.g. a fresh head) leaves the run's RNG alone
            vocab = len(self.collator.teacher_tok)
            model = load_classifier(self.cfg.teacher, "teacher", self.task.num_labels, vocab, attn)
        model.to(self.device)
        check_max_length(model, self.cfg.task.max_length, "teacher")
        return model

    def evaluate(self, model) -> dict[str, float]:
        return self._evaluate(model, self.collator.teacher_tok)

    def record(self, out_dir) -> None:
        """Nothing beyond metrics.json."""

    def _components(self, spec: LossSpec) -> dict:
        if self._key is None:  # once, before the teacher runs: a tokenizer's serialised state changes with use
            self._key = cache_components(self.cfg, self.collator, self.train_rows, self.dev_rows, spec.cached_layers)
        return self._key

    def open_cache(self, spec: LossSpec):
        return open_cache(self.cfg.cache, self._components(spec))

    def stored_metrics(self, cache) -> dict:
        return cache.meta["teacher_dev"]  # measured when the cache was built

    def build_cache(self, folder, model, spec: LossSpec, metrics):
        record = {"teacher_dev": metrics, "teacher_params": count_parameters(model)}
        return build_cache(
            folder, self._components(spec), self.cfg.cache, model, self.train_rows, self.collator, spec.cached_layers,
            self.shape, self.task.num_labels, self.cfg.train.eval_batch_size, self.device, record, self.log,
        )  # fmt: skip

    def join_cache_build(self, model, spec: LossSpec) -> None:
        b = self.cfg.train.eval_batch_size
        join_cache_build(model, self.train_rows, self.collator, spec.cached_layers, b, self.device)
