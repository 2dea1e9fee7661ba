"""What a task family's builder hands the run: the same shape for GLUE (fadkd/run/glue.py) and causal LMs
(fadkd/run/lm.py), so fadkd/run/train.py has one path."""

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fadkd.losses.spec import LossSpec
from fadkd.teacher.base import Teacher

Evaluate = Callable[[PreTrainedModel, PreTrainedTokenizerBase], dict | None]  # a model's dev metrics


@dataclass
class Setup:
    task: object  # GlueTask or LmTask: name, main_metric, is_regression
    train_rows: list[dict]  # each with "_index" (its row in the teacher cache)
    student: PreTrainedModel
    student_tok: PreTrainedTokenizerBase
    collator: Callable  # rows -> Batch
    evaluate: Evaluate
    # The teacher for the loss spec (None without teacher terms), given the rank-aware evaluate;
    # loading, dev metrics and the cache happen here. Rank 0 runs it first: it may write the cache.
    make_teacher: Callable[[LossSpec, Evaluate], Teacher | None]
    teacher_shape: dict | None = None  # layers, width, heads: what the mapping needs before the teacher loads
    teacher_metrics: dict | None = None  # known at set-up (causal LMs evaluate the teacher as a reference)
    kd_vocab: int | None = None  # padded vocabularies: the kd term reads the first kd_vocab logits
