"""What a task family's builder hands the run: the same shape for GLUE (fadkd/run/glue.py) and causal LMs
(fadkd/run/lm.py), so fadkd/run/train.py has one path."""

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fadkd.teacher.setup import TeacherFamily

Evaluate = Callable[[PreTrainedModel, PreTrainedTokenizerBase], dict | None]  # a model's dev metrics


@dataclass
class Setup:
    task: object  # GlueTask or LmTask: name, main_metric, is_regression
    train_rows: list[dict]  # each with "_index" (its row in the teacher cache)
    student: PreTrainedModel
    student_tok: PreTrainedTokenizerBase
    collator: Callable  # rows -> Batch
    evaluate: Evaluate
    # What the teacher's set-up (fadkd/teacher/setup.py) loads, evaluates and caches: GlueTeacher or LmTeacher;
    # None without teacher terms (a causal LM's teacher may still come, only to be scored).
    teacher: TeacherFamily | None
    teacher_shape: dict | None = None  # layers, width, heads: what the mapping needs before the teacher loads
    kd_vocab: int | None = None  # padded vocabularies: the kd term reads the first kd_vocab logits
