"""What a causal-LM run's teacher set-up (fadkd/teacher/setup.py) needs from the task family: the vocabulary
check, the model (loaded by fadkd/run/lm.py, which may cut the student from it), its held-out metrics and
the top-k cache (fadkd/teacher/lm_cache.py).

Teacher and student must share one tokenizer when a token-level teacher term is on: logit KD compares
distributions over one vocabulary and the feature terms compare positions. The causal-LM cache holds no
dev metrics, so a cached run still loads the teacher once, to score it (the reference of bleu_vs_teacher
and cer_vs_teacher), and frees it before training.
"""

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from fadkd.config.schema import Config
from fadkd.eval.lm import LmEvaluator
from fadkd.losses.spec import LossSpec
from fadkd.models.load import ModelError, depth, width
from fadkd.teacher.cache import open_cache
from fadkd.teacher.glue import tokenizer_name
from fadkd.teacher.lm_cache import LmTeacherCache, build_lm_cache, join_lm_cache_build, lm_cache_components

TEACHER_GENERATIONS = "teacher_generations.jsonl"


def shape_of(model) -> dict[str, int]:
    return {"layers": depth(model), "width": width(model), "heads": model.config.num_attention_heads}


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a is b or (a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id)


class LmTeacher:
    """A causal-LM run's teacher, loaded already: a from_teacher or pruned student is cut from it first.

    `evaluator` scores it on the held-out set: the student's own (one tokenizer: its continuations are
    the reference of the student's vs-teacher metrics) or one over the teacher's tokens. `trains`: the
    loss has teacher terms; otherwise the teacher is only scored, then freed.
    """

    def __init__(self, cfg: Config, model, tok, train_rows, evaluator: LmEvaluator, reference: bool, kd_vocab, trains,
                 device, log):  # fmt: skip
        self.cfg, self.tok, self.train_rows, self.device, self.log = cfg, tok, train_rows, device, log
        self.model, self.metrics = model, None
        self.evaluator, self.reference, self.trains = evaluator, reference, trains
        self.scored_first = True  # loaded with the student, scored before the loss spec
        self.cached, self._key = cfg.cache.enabled and trains, None
        self.shape, self.vocab = shape_of(model), kd_vocab or model.config.vocab_size

    def check(self, spec: LossSpec) -> None:
        """Checked in fadkd/run/lm.py before the loss spec: its kd vocabulary comes from check_vocabularies."""

    def load(self, spec: LossSpec):
        return self.model  # loaded by fadkd/run/lm.py

    def evaluate(self, model) -> dict[str, float]:
        if not self.reference:
            self.log("the teacher tokenizes differently: no bleu_vs_teacher / cer_vs_teacher")
        return self.evaluator.evaluate(model, is_teacher=self.reference)

    def record(self, out_dir: Path) -> None:
        """The teacher's continuations, the reference of the student's vs-teacher metrics."""
        if self.reference:
            self.evaluator.write_generations(out_dir / TEACHER_GENERATIONS)

    def _components(self, spec: LossSpec) -> dict:
        if self._key is None:  # once, before the teacher runs: a tokenizer's serialised state changes with use
            self._key = lm_cache_components(self.cfg, self.tok, self.train_rows, spec.teacher_layers, self.vocab)
        return self._key

    def open_cache(self, spec: LossSpec):
        return open_cache(self.cfg.cache, self._components(spec), reader=LmTeacherCache)

    def stored_metrics(self, cache) -> None:
        return None  # the top-k cache holds none: the teacher is scored on every run

    def build_cache(self, folder, model, spec: LossSpec, metrics) -> LmTeacherCache:
        cache = build_lm_cache(
            folder, self._components(spec), self.cfg, model, self.train_rows, self.tok.pad_token_id,
            spec.teacher_layers, self.shape, self.cfg.train.eval_batch_size, self.device, self.log,
        )  # fmt: skip
        self.log(f"teacher cache: built in {cache.meta['build_seconds']:.0f} s")
        return cache

    def join_cache_build(self, model, spec: LossSpec) -> None:
        b = self.cfg.train.eval_batch_size
        join_lm_cache_build(model, self.train_rows, self.tok.pad_token_id, spec.teacher_layers, b, self.device)


def check_vocabularies(cfg: Config, student_tok, teacher_tok, student, teacher, log) -> int | None:
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
                f"the teacher's tokenizer {tokenizer_name(teacher_tok)} and the student's "
                f"{tokenizer_name(student_tok)} differ; token-level terms need one vocabulary and the same positions, "
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
    log(
        f"padded vocabularies: the student's output layer has {s_vocab} entries and the teacher's {t_vocab}, over "
        f"one tokenizer of {real} tokens; the kd term compares the first {real} logits (the shared real vocabulary)"
    )
    return real
