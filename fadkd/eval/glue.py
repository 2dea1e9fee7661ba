"""Dev-set evaluation with the task's official GLUE metrics."""

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fadkd.data.batches import Collator, make_loader
from fadkd.data.glue import GlueTask, compute_metrics


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
