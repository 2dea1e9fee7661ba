"""Batches for distillation: tokenize each example for the student and the teacher.

Position-wise terms (hidden states, attention maps) compare teacher and student token by
token, so when they are on, the teacher must see exactly the student's positions. Teachers
whose tokenizer splits text into the same tokens under other ids (all-mpnet-base-v2 ids =
all-MiniLM ids + 4) get the student's encoding translated into their ids, special tokens
mapped by role ([CLS] -> <s>, [SEP] -> </s>, ...): a pair is then fed BERT-style to both.
Every batch is also tokenized by the teacher's own tokenizer to check that it would split
the text the same way; any difference stops training with the example and both token lists.
Without position-wise terms each model simply gets its own tokenization.
"""

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from fadkd.data.glue_tasks import GlueTask
from fadkd.errors import FadkdError


class AlignmentError(FadkdError):
    """Teacher and student tokens do not align position by position."""


@dataclass
class Batch:
    student: dict[str, Tensor]
    teacher: dict[str, Tensor] | None  # the same dict as student when tokenizers are equal
    labels: Tensor
    indices: Tensor | None = None  # positions of the rows in the training set (teacher cache lookup)

    def to(self, device: torch.device) -> "Batch":
        student = {k: v.to(device) for k, v in self.student.items()}
        if self.teacher is self.student:
            teacher = student
        elif self.teacher is not None:
            teacher = {k: v.to(device) for k, v in self.teacher.items()}
        else:
            teacher = None
        return Batch(student=student, teacher=teacher, labels=self.labels.to(device), indices=self.indices)


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when both produce identical ids for every text (same serialized pipeline)."""
    if a is b:
        return True
    try:
        return a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    except AttributeError:  # slow tokenizers: compare vocabularies
        return type(a) is type(b) and a.get_vocab() == b.get_vocab()


SPECIAL_ROLES = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token")


def vocab_translation(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase) -> Tensor:
    """table[student_id] = teacher id of the same token string (special tokens: same role), or -1."""
    teacher_vocab = teacher.get_vocab()
    table = torch.full((len(student),), -1, dtype=torch.long)
    for token, sid in student.get_vocab().items():
        if sid < len(table):
            table[sid] = teacher_vocab.get(token, -1)
    for role in SPECIAL_ROLES:
        s_tok, t_tok = getattr(student, role, None), getattr(teacher, role, None)
        if s_tok is not None and t_tok is not None:
            table[student.convert_tokens_to_ids(s_tok)] = teacher.convert_tokens_to_ids(t_tok)
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

    def encode(self, tok: PreTrainedTokenizerBase, rows: list[dict], **kwargs) -> dict:
        columns = [[row[c] for row in rows] for c in self.task.text_columns]
        return tok(*columns, truncation=True, max_length=self.max_length, **kwargs)

    def __call__(self, rows: list[dict]) -> Batch:
        dtype = torch.float32 if self.task.is_regression else torch.long
        labels = torch.tensor([row["label"] for row in rows], dtype=dtype)
        student = dict(self.encode(self.student_tok, rows, padding=True, return_tensors="pt"))
        if self.teacher_tok is None:
            teacher = None
        elif self.shared:
            teacher = student
        elif self.table is not None:
            teacher = self.translate(student, rows)
        else:
            teacher = dict(self.encode(self.teacher_tok, rows, padding=True, return_tensors="pt"))
        indices = torch.tensor([row.get("_index", -1) for row in rows])
        return Batch(student=student, teacher=teacher, labels=labels, indices=indices)

    def translate(self, student: dict[str, Tensor], rows: list[dict]) -> dict[str, Tensor]:
        """The student's positions in the teacher's ids, after checking the teacher agrees."""
        ids = self.table[student["input_ids"]]
        native = self.encode(self.teacher_tok, rows)["input_ids"]
        t_special = set(self.teacher_tok.all_special_ids)
        mask = student["attention_mask"].bool()
        for i, row_ids in enumerate(ids):
            mine = [t for t in row_ids[mask[i]].tolist() if t not in t_special]
            theirs = [t for t in native[i] if t not in t_special]
            truncated = len(native[i]) >= self.max_length or int(mask[i].sum()) >= self.max_length
            if -1 in mine or (mine != theirs and not truncated):  # truncation may cut other tokens
                raise AlignmentError(
                    "teacher and student tokenize this example differently, so hidden-state and attention "
                    "terms cannot compare their positions.\n"
                    f"  example: {rows[i]}\n"
                    f"  student: {self.student_tok.convert_ids_to_tokens(student['input_ids'][i][mask[i]])}\n"
                    f"  teacher: {self.teacher_tok.convert_ids_to_tokens(native[i])}\n"
                    "Use a student and teacher with the same tokenization, or train with the logit term "
                    "only: loss.beta=0 loss.gamma=0 loss.delta=0"
                )
        teacher = {"input_ids": ids, "attention_mask": student["attention_mask"]}
        if "token_type_ids" in self.teacher_tok.model_input_names and "token_type_ids" in student:
            teacher["token_type_ids"] = student["token_type_ids"]
        return teacher


class EpochSampler(Sampler[int]):
    """Row order of one epoch, a function of (seed, epoch) alone.

    Nothing else draws from its generator, so a resumed run replays the same order;
    `start` skips the rows of the epoch already trained on. With `lengths` and a batch size,
    rows are grouped by length: the shuffled order is cut into chunks of 50 batches, each
    sorted longest first, so a batch pads little while the epoch stays shuffled.

    Several processes (fadkd/run/distributed.py): each draws the same order and takes every
    `world_size`-th row from `rank`, so with a global batch divisible by `world_size` the ranks'
    k-th batches together are the global order's k-th batch. The order is first padded with its
    own first rows to a multiple of `world_size` (as torch's DistributedSampler does), so every
    rank gets as many rows, and as many batches, as the others.
    """

    def __init__(
        self,
        num_rows: int,
        seed: int,
        shuffle: bool = True,
        lengths=None,
        batch_size: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.num_rows, self.seed, self.shuffle = num_rows, seed, shuffle
        self.lengths, self.batch_size = lengths, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_rows, generator=generator).tolist()
        if self.lengths is None or self.batch_size <= 0:
            return order
        chunk = 50 * self.batch_size
        return [
            i for c in range(0, len(order), chunk) for i in sorted(order[c : c + chunk], key=lambda i: -self.lengths[i])
        ]

    def __iter__(self):
        order = self.order()
        order += order[: -len(order) % self.world_size]  # padded to a multiple of world_size
        return iter(order[self.start + self.rank :: self.world_size])  # start: global rows already done

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.num_rows + -self.num_rows % self.world_size, self.world_size))


def make_loader(rows: list[dict], collator: Collator, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
    """Batches in `sampler`'s order (row order when None).

    The loader gets a generator of its own: otherwise each new iterator draws a seed from
    torch's global RNG, which would shift the dropout masks of a resumed run.
    """
    generator = torch.Generator().manual_seed(0)
    return DataLoader(rows, batch_size=batch_size, sampler=sampler, collate_fn=collator, generator=generator)
