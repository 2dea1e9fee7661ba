"""Dev-set evaluation with the task's official GLUE metrics, in the loop and for `fadkd eval`."""

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from fadkd.data.batches import Collator, make_loader
from fadkd.data.glue import compute_metrics, load_split, resolve_data_dir
from fadkd.data.glue_tasks import GlueTask, get_task


@torch.no_grad()
def predict(
    model: PreTrainedModel,
    rows: list[dict],
    tokenizer: PreTrainedTokenizerBase,
    task: GlueTask,
    max_length: int,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Class indices (or scores for regression) for every row, in order."""
    collator = Collator(task, tokenizer, None, max_length, check_alignment=False)
    loader = make_loader(rows, collator, batch_size)
    was_training = model.training
    model.eval()
    outputs = []
    for batch in loader:
        logits = model(**batch.to(device).student).logits.float()
        outputs.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))
    model.train(was_training)
    return torch.cat(outputs).cpu().numpy()


def evaluate(
    model: PreTrainedModel,
    rows: list[dict],
    tokenizer: PreTrainedTokenizerBase,
    task: GlueTask,
    max_length: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """The task's metrics of `model` on `rows` (which carry gold labels)."""
    predictions = predict(model, rows, tokenizer, task, max_length, batch_size, device)
    labels = np.array([row["label"] for row in rows])
    return compute_metrics(task, predictions, labels)


def eval_glue_run(run_dir: Path, cfg, device: torch.device) -> dict[str, float]:
    """`fadkd eval` for a GLUE run: the saved student on the task's dev split; writes eval.json."""
    task = get_task(cfg.task.name)
    rows = load_split(task, "dev", resolve_data_dir(cfg.task.data_dir), cfg.task.max_eval_samples).to_list()
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").to(device)
    tok = AutoTokenizer.from_pretrained(run_dir / "student")
    metrics = evaluate(model, rows, tok, task, cfg.task.max_length, cfg.train.eval_batch_size, device)
    (run_dir / "eval.json").write_text(json.dumps({"task": task.name, "split": "dev", **metrics}, indent=2) + "\n")
    return metrics
