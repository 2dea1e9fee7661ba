"""Held-out evaluation of causal LMs: perplexity, and greedy continuations scored as text.

- perplexity = exp(total NLL / total predicted tokens) over the held-out blocks (packed like
  the training data, fadkd/data/lm_text.py): every real token with a predecessor in its block is
  predicted once; padding never counts. Not a mean of per-batch perplexities.
- generation: for each prompt (eos + the first prompt_fraction of a held-out text), a greedy
  continuation of at most max_new_tokens, stopped at eos, batched with LEFT padding (prompts
  sorted by length, results put back in order). Text = the new tokens decoded without special
  tokens. Scored against the reference continuation (the rest of the text, cut to
  max_new_tokens tokens) and, separately, against the teacher's own continuation:
    bleu       sacrebleu corpus_bleu, 0-100 (default 13a tokenisation)
    rouge_1/2/l  rouge-score F-measure, mean over prompts, 0-100 (its tokeniser keeps [a-z0-9])
    cer        jiwer.cer over all prompts: total character edits / total reference characters
    bleu_vs_teacher, rouge_l_vs_teacher, cer_vs_teacher   the same against the teacher's continuations
- tokens_per_s: new tokens generated per second of greedy decoding (batched, KV cache, after a
  two-token warm-up on the first batch; a sequence's tokens count up to and including its eos);
  score_tokens_per_s: tokens per second of the perplexity pass; params: the model's parameters.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import jiwer
import sacrebleu
import torch
import torch.nn.functional as F
from absl import logging as absl_logging
from rouge_score import rouge_scorer
from torch.utils.data import DataLoader
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from fadkd.data.lm_text import LmCollator

logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score logs each scorer it builds
# rouge-score imports absl, whose handler keeps the sys.stderr of that moment; when logging is
# reconfigured (Hydra does so in-process) it closes that stream unless it is the process's own
# stderr, which would close a stream someone else redirected (pytest's capture) under them.
absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


def _no_recording(model: torch.nn.Module) -> None:
    """Evaluation reads no attention maps: fadkd's attention function then runs SDPA throughout."""
    for module in model.modules():
        if getattr(module, "fadkd_record", False):
            module.fadkd_record, module.fadkd_probs = False, None


@torch.no_grad()
def perplexity(model: PreTrainedModel, blocks: list[dict], pad_id: int, batch_size: int, device) -> dict[str, float]:
    """exp(Σ NLL / Σ predicted tokens) over `blocks`, with the tokens and time it took."""
    loader = DataLoader(blocks, batch_size=batch_size, collate_fn=LmCollator(pad_id, with_teacher=False))
    nll, count, seen = 0.0, 0, 0
    started = time.perf_counter()
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.student.items()}
        logits = model(**inputs).logits.float()
        labels = batch.labels.to(device)[:, 1:]
        nll += F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100, reduction="sum").item()
        count += int((labels != -100).sum())
        seen += int(inputs["attention_mask"].sum())
    elapsed = time.perf_counter() - started
    return {
        "perplexity": math.exp(nll / max(count, 1)),
        "nll": nll / max(count, 1),
        "eval_tokens": float(count),
        "score_tokens_per_s": seen / max(elapsed, 1e-9),
    }


@torch.no_grad()
def greedy(
    model: PreTrainedModel,
    prompts: list[list[int]],
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    batch_size: int,
    device,
) -> tuple[list[list[int]], float]:
    """Greedy continuations (new tokens up to, not including, eos) and tokens per second."""
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos_id, pad_token_id=pad_id
    )
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]

    def left_padded(chunk: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):  # every prompt ends at the last column
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        return ids.to(device), mask.to(device)

    if prompts:  # warm-up on the first batch, so first-call costs do not count in tokens/s
        warm = GenerationConfig(max_new_tokens=2, do_sample=False, eos_token_id=eos_id, pad_token_id=pad_id)
        ids, mask = left_padded(order[:batch_size])
        model.generate(input_ids=ids, attention_mask=mask, generation_config=warm)
    produced, started = 0, time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = left_padded(chunk)
        width = ids.shape[1]
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row, i in enumerate(chunk):
            new = out[row, width:].tolist()
            results[i] = new[: new.index(eos_id)] if eos_id in new else new
            produced += len(results[i]) + (1 if eos_id in new else 0)
    return results, produced / max(time.perf_counter() - started, 1e-9)


def text_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU, mean ROUGE-1/2/L F (0-100) and corpus CER (fraction) of hypotheses vs references."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    rouge = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references, strict=True):
        for key, score in scorer.score(ref, hyp).items():
            rouge[key] += score.fmeasure
    n = max(len(references), 1)
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "rouge_1": 100 * rouge["rouge1"] / n,
        "rouge_2": 100 * rouge["rouge2"] / n,
        "rouge_l": 100 * rouge["rougeL"] / n,
        "cer": float(jiwer.cer(references, hypotheses)),
    }


class LmEvaluator:
    """Scores any model on one held-out set; holds the teacher's continuations once computed."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        blocks: list[dict],
        prompts: list[tuple[list[int], list[int]]],
        max_new_tokens: int,
        batch_size: int,
        device,
    ):
        self.tok, self.blocks, self.prompts = tokenizer, blocks, prompts
        self.max_new_tokens, self.batch_size, self.device = max_new_tokens, batch_size, device
        self.references = [self.decode(ref) for _, ref in prompts]
        self.teacher_texts: list[str] | None = None

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True).strip()

    def continuations(self, model: PreTrainedModel) -> tuple[list[str], float]:
        ids, speed = greedy(
            model,
            [p for p, _ in self.prompts],
            self.tok.pad_token_id,
            self.tok.eos_token_id,
            self.max_new_tokens,
            self.batch_size,
            self.device,
        )
        return [self.decode(x) for x in ids], speed

    def evaluate(self, model: PreTrainedModel, is_teacher: bool = False) -> dict[str, float]:
        """Perplexity and text metrics of `model`; `is_teacher` keeps its continuations as the reference."""
        was_training = model.training
        model.eval()
        _no_recording(model)
        metrics = perplexity(model, self.blocks, self.tok.pad_token_id, self.batch_size, self.device)
        texts, speed = self.continuations(model)
        model.train(was_training)
        self.last_texts = texts
        if is_teacher:
            self.teacher_texts = texts
        metrics |= text_metrics(texts, self.references)
        if self.teacher_texts is not None:
            versus = text_metrics(texts, self.teacher_texts)
            metrics |= {
                "bleu_vs_teacher": versus["bleu"],
                "rouge_l_vs_teacher": versus["rouge_l"],
                "cer_vs_teacher": versus["cer"],
            }
        metrics |= {"tokens_per_s": speed, "params": float(sum(p.numel() for p in model.parameters()))}
        return metrics

    def write_generations(self, path: Path, student_texts: list[str] | None = None) -> None:
        """One JSON line per prompt: prompt, reference, teacher (and student) continuation."""
        with open(path, "w") as f:
            for i, (prompt, _) in enumerate(self.prompts):
                row = {"prompt": self.decode(prompt), "reference": self.references[i]}
                if self.teacher_texts is not None:
                    row["teacher"] = self.teacher_texts[i]
                if student_texts is not None:
                    row["student"] = student_texts[i]
                f.write(json.dumps(row) + "\n")

    def load_teacher_texts(self, path: Path) -> bool:
        """Reuse a run's saved teacher continuations when they answer these very prompts."""
        if not path.is_file():
            return False
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        prompts = [self.decode(p) for p, _ in self.prompts]
        if len(rows) != len(prompts) or any(r.get("prompt") != p or "teacher" not in r for r, p in zip(rows, prompts)):
            return False
        self.teacher_texts = [r["teacher"] for r in rows]
        return True
