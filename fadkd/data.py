"""Batches for distillation: tokenize each example for the student and the teacher.

Teacher and student may use different tokenizers that still split text into the same
tokens (e.g. all-mpnet-base-v2 ids = all-MiniLM ids + 4). Position-wise terms (hidden
states, attention maps) are only meaningful when positions align, so every batch is
checked when those terms are on; a mismatch stops training with the offending example.
"""

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from fadkd.errors import FadkdError
from fadkd.tasks.glue import GlueTask


class AlignmentError(FadkdError):
    """Teacher and student tokens do not align position by position."""


@dataclass
class Batch:
    student: dict[str, Tensor]
    teacher: dict[str, Tensor] | None  # the same dict as student when tokenizers are equal
    labels: Tensor

    def to(self, device: torch.device) -> "Batch":
        student = {k: v.to(device) for k, v in self.student.items()}
        if self.teacher is self.student:
            teacher = student
        elif self.teacher is not None:
            teacher = {k: v.to(device) for k, v in self.teacher.items()}
        else:
            teacher = None
        return Batch(student=student, teacher=teacher, labels=self.labels.to(device))


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when both produce identical ids for every text (same serialized pipeline)."""
    if a is b:
        return True
    try:
        return a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    except AttributeError:  # slow tokenizers: compare vocabularies
        return type(a) is type(b) and a.get_vocab() == b.get_vocab()


def vocab_translation(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase) -> Tensor:
    """table[student_id] = teacher id of the same token string, or -1 when it has none."""
    teacher_vocab = teacher.get_vocab()
    table = torch.full((len(student),), -1, dtype=torch.long)
    for token, sid in student.get_vocab().items():
        if sid < len(table):
            table[sid] = teacher_vocab.get(token, -1)
    return table


class Collator:
    """Turns a list of task rows into a Batch (dynamic padding to the longest row)."""

    def __init__(
        self,
        task: GlueTask,
        student_tok: PreTrainedTokenizerBase,
        teacher_tok: PreTrainedTokenizerBase | None,
        max_length: int,
        check_alignment: bool,
    ):
        self.task = task
        self.student_tok = student_tok
        self.teacher_tok = teacher_tok
        self.max_length = max_length
        self.shared = teacher_tok is not None and same_tokenizer(student_tok, teacher_tok)
        self.table = None
        if check_alignment and teacher_tok is not None and not self.shared:
            self.table = vocab_translation(student_tok, teacher_tok)

    def encode(self, tok: PreTrainedTokenizerBase, rows: list[dict]) -> dict[str, Tensor]:
        columns = [[row[c] for row in rows] for c in self.task.text_columns]
        return dict(tok(*columns, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"))

    def __call__(self, rows: list[dict]) -> Batch:
        dtype = torch.float32 if self.task.is_regression else torch.long
        labels = torch.tensor([row["label"] for row in rows], dtype=dtype)
        student = self.encode(self.student_tok, rows)
        if self.teacher_tok is None:
            teacher = None
        elif self.shared:
            teacher = student
        else:
            teacher = self.encode(self.teacher_tok, rows)
            if self.table is not None:
                self.check_aligned(student, teacher, rows)
        return Batch(student=student, teacher=teacher, labels=labels)

    def check_aligned(self, student: dict, teacher: dict, rows: list[dict]) -> None:
        s_ids, t_ids = student["input_ids"], teacher["input_ids"]
        row_ok = student["attention_mask"].sum(1) == teacher["attention_mask"].sum(1)
        if s_ids.shape == t_ids.shape:
            s_special = torch.isin(s_ids, torch.tensor(self.student_tok.all_special_ids))
            t_special = torch.isin(t_ids, torch.tensor(self.teacher_tok.all_special_ids))
            # Special tokens may differ ([CLS] vs <s>) but must sit at the same positions;
            # every other position must hold the same token string.
            same = (s_special == t_special) & ((self.table[s_ids] == t_ids) | s_special)
            row_ok &= same.all(1)
        if bool(row_ok.all()):
            return
        bad = int((~row_ok).nonzero()[0, 0])
        raise AlignmentError(
            "teacher and student tokens do not align position by position, so hidden-state "
            "and attention terms cannot compare them.\n"
            f"  example: {rows[bad]}\n"
            f"  student: {self.student_tok.convert_ids_to_tokens(s_ids[bad][student['attention_mask'][bad].bool()])}\n"
            f"  teacher: {self.teacher_tok.convert_ids_to_tokens(t_ids[bad][teacher['attention_mask'][bad].bool()])}\n"
            "Use a student and teacher with the same tokenization, or train with the "
            "logit term only: loss.beta=0 loss.gamma=0 loss.delta=0"
        )


class EpochSampler(Sampler[int]):
    """Row order of one epoch, a function of (seed, epoch) alone.

    Nothing else draws from its generator, so a resumed run replays the same order;
    `start` skips the rows of the epoch already trained on.
    """

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True):
        self.num_rows, self.seed, self.shuffle = num_rows, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_rows, generator=generator).tolist()

    def __iter__(self):
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.num_rows - self.start


def make_loader(rows: list[dict], collator: Collator, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
    """Batches in `sampler`'s order (row order when None).

    The loader gets a generator of its own: otherwise each new iterator draws a seed from
    torch's global RNG, which would shift the dropout masks of a resumed run.
    """
    generator = torch.Generator().manual_seed(0)
    return DataLoader(rows, batch_size=batch_size, sampler=sampler, collate_fn=collator, generator=generator)
