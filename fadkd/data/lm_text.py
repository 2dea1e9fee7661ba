"""Causal-LM tasks: text corpora packed into fixed blocks, and held-out prompts for generation.

Two kinds of task, both selected by `task.name`:
- `lm_<GLUE task>` (lm_sst2, lm_cola, lm_qnli, ...): the sentences of a GLUE task as plain text,
  the train split for training and the dev split held out, read by fadkd.data.glue.load_split
  (so `task.data_dir` works as for GLUE: a GLUE folder, `sample`, or `hub`). Pair tasks give
  each sentence as its own text; texts repeated within a split (MNLI premises) are kept once.
- `lm_text`: `task.train_file` / `task.eval_file`, each a .txt file (one text per non-empty
  line, the way the `datasets` "text" builder reads it), a .jsonl file (field
  `task.text_column`) or a folder written by `datasets.Dataset.save_to_disk`.

Layout of the data (the same for the teacher, the student, training and perplexity):
texts are tokenized without special tokens, each followed by the end-of-text token (eos), and
the stream starts with eos too, so every text is preceded by eos: `eos t1 eos t2 eos ...`. The
stream is cut into blocks of `task.block_size` tokens; the last block may be shorter and is
padded in its batch, with attention mask 0 and label -100 there, so padding never counts.

Generation prompts: each held-out text (its first `task.max_length` tokens) is split after
`prompt_fraction` of its tokens (at least one token on each side); the prompt is `eos` + that
first part, the reference continuation is the rest, cut to `task.max_new_tokens` tokens.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from fadkd.data.batches import Batch
from fadkd.data.glue import load_split
from fadkd.data.glue_tasks import TASKS, TaskError, get_task
from fadkd.errors import FadkdError

LOWER_IS_BETTER = frozenset({"perplexity", "cer", "cer_vs_teacher"})


class LmDataError(FadkdError):
    """A causal-LM corpus cannot be read or used as configured."""


@dataclass(frozen=True)
class LmTask:
    """What the training loop needs to know about a causal-LM task."""

    name: str
    glue_task: str | None  # the GLUE task whose sentences are the texts; None = lm_text files
    main_metric: str = "perplexity"
    is_regression: bool = False
    lower_is_better: bool = True  # for main_metric: the best student has the lowest perplexity


LM_TASKS: dict[str, LmTask] = {
    "lm_text": LmTask("lm_text", None),
    **{f"lm_{name}": LmTask(f"lm_{name}", name) for name in TASKS},
}


def is_lm_task(name: str) -> bool:
    return name.strip().lower().startswith("lm_")


def get_lm_task(name: str) -> LmTask:
    task = LM_TASKS.get(name.strip().lower())
    if task is None:
        raise TaskError(f"unknown LM task {name!r}; known LM tasks: {', '.join(LM_TASKS)}")
    return task


def load_texts(task: LmTask, split: str, cfg, data_dir: str | None) -> list[str]:
    """The texts of `split` ("train" or "dev"); cfg is the TaskConfig. At most max_*_samples."""
    limit = cfg.max_train_samples if split == "train" else cfg.max_eval_samples
    if task.glue_task is not None:
        glue = get_task(task.glue_task)
        data = load_split(glue, split, data_dir, limit)
        texts = [t for column in zip(*(data[c] for c in glue.text_columns)) for t in column]
        where = f"the {split} split of GLUE {glue.name}"
    else:
        path = cfg.train_file if split == "train" else cfg.eval_file
        key = "task.train_file" if split == "train" else "task.eval_file"
        texts = _read_text_source(Path(path).expanduser(), key, cfg.text_column, split)
        where = f"{key}={path}"
    texts = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))  # ordered, once each
    if limit is not None and task.glue_task is None:
        texts = texts[:limit]
    if not texts:
        raise LmDataError(f"{where} holds no text; give a file with at least one non-empty text")
    return texts


TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".arrow", ".xlsx", ".gz", ".zip", ".bz2", ".xz", ".zst")


def _read_text_source(path: Path, key: str, column: str, split: str) -> list[str]:
    if not path.exists():
        raise LmDataError(
            f"{key}={path}: the file does not exist; give a .txt file (one text per line), a .jsonl file "
            f"with a '{column}' field, or a folder written by datasets' save_to_disk"
        )
    if path.is_dir():
        return _read_datasets_folder(path, key, column, split)
    if path.suffix.lower() in TABLE_SUFFIXES:
        raise LmDataError(
            f"{key}={path}: a {path.suffix} file would be read as raw lines (header, ids and quotes included); give "
            f"a .txt file (one text per line), a .jsonl file with a '{column}' field, or a datasets folder "
            "(e.g. datasets.load_dataset('csv', data_files=...).save_to_disk(dir))"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise LmDataError(f"{key}={path}: not valid UTF-8 ({err.reason}); re-encode it as UTF-8") from None
    if path.suffix not in (".jsonl", ".json"):
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LmDataError(f"{path}:{number}: not a JSON object ({err.msg}); write one object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get(column), str):
            raise LmDataError(
                f"{path}:{number}: has no text field '{column}'; set task.text_column to the field holding the text"
            )
        texts.append(row[column])
    return texts


def _read_datasets_folder(path: Path, key: str, column: str, split: str) -> list[str]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise LmDataError(f"{key}={path}: not a folder written by datasets' save_to_disk ({err})") from None
    if isinstance(data, datasets.DatasetDict):
        names = ("train",) if split == "train" else ("validation", "test", "dev")
        found = next((n for n in names if n in data), None)
        if found is None:
            raise LmDataError(f"{key}={path} holds splits {list(data)}; expected one of {list(names)}")
        data = data[found]
    if column not in data.column_names:
        raise LmDataError(
            f"{key}={path} has no text field '{column}' (columns: {data.column_names}); set task.text_column"
        )
    return [t for t in data[column] if isinstance(t, str)]


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def pack_blocks(docs: list[list[int]], eos_id: int, block_size: int) -> list[dict]:
    """`eos d1 eos d2 eos ...` cut into blocks of block_size tokens (the last may be shorter)."""
    stream = [eos_id]
    for ids in docs:
        stream += ids
        stream.append(eos_id)
    return [
        {"input_ids": stream[i : i + block_size], "attention_mask": [1] * len(stream[i : i + block_size])}
        for i in range(0, len(stream), block_size)
    ]


def generation_prompts(
    docs: list[list[int]], eos_id: int, prompt_fraction: float, max_length: int, max_new_tokens: int, limit: int | None
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reference ids) for the first `limit` held-out texts of two tokens or more."""
    pairs = []
    for ids in docs:
        ids = ids[:max_length]
        if len(ids) < 2:
            continue
        cut = min(max(1, math.floor(len(ids) * prompt_fraction)), len(ids) - 1)
        pairs.append(([eos_id, *ids[:cut]], ids[cut : cut + max_new_tokens]))
        if limit is not None and len(pairs) == limit:
            break
    return pairs


class LmCollator:
    """Blocks -> Batch: right padding with pad_id, attention mask 0 and label -100 on padding.

    Teacher and student usually share one tokenizer (token-level terms need it), so the teacher
    gets the very same tensors. With `retokenize=(student_tok, teacher_tok)` (loss.kd=uld, tokenizers
    that differ) the teacher gets the same text in its own tokens instead: see `retokenize`.
    """

    def __init__(self, pad_id: int, with_teacher: bool, retokenize: tuple | None = None):
        self.pad_id, self.with_teacher, self.retokenize = pad_id, with_teacher, retokenize

    def __call__(self, rows: list[dict]) -> Batch:
        inputs = pad_blocks([r["input_ids"] for r in rows], self.pad_id)
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        teacher = inputs if self.with_teacher else None
        if self.with_teacher and self.retokenize is not None:
            student_tok, teacher_tok = self.retokenize
            ids = [retokenize(r["input_ids"], student_tok, teacher_tok) for r in rows]
            teacher = pad_blocks(ids, teacher_tok.pad_token_id)
        indices = torch.tensor([r["_index"] for r in rows]) if "_index" in rows[0] else None  # cache lookups
        return Batch(student=inputs, teacher=teacher, labels=labels, indices=indices)


def pad_blocks(blocks: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [B, longest], right-padded with pad_id (mask 0)."""
    length = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(blocks), length), dtype=torch.long)
    for i, block in enumerate(blocks):
        ids[i, : len(block)] = torch.tensor(block, dtype=torch.long)
        mask[i, : len(block)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def retokenize(ids: list[int], student_tok: PreTrainedTokenizerBase, teacher_tok: PreTrainedTokenizerBase) -> list[int]:
    """A student block in the teacher's tokens: the same texts, each eos replaced by the teacher's.

    The block is split at the student's eos; each piece is decoded to text and encoded by the
    teacher without special tokens. The result is cut to the block's length: sequence-level ULD
    pairs positions by truncation to the shorter side, so later teacher tokens would never count.
    """
    out, piece = [], []

    def flush() -> None:
        if piece:
            text = student_tok.decode(piece, skip_special_tokens=True)
            out.extend(teacher_tok(text, add_special_tokens=False)["input_ids"])
            piece.clear()

    for token in ids:
        if token == student_tok.eos_token_id:
            flush()
            out.append(teacher_tok.eos_token_id)
        else:
            piece.append(token)
    flush()
    return out[: len(ids)] or [teacher_tok.eos_token_id]
