"""Contextual augmentation with a local causal LM (`task.augment_method=lm`), in TinyBERT's manner.

TinyBERT writes 20 variants of every training sentence by replacing words with the proposals of
a masked LM (BERT) for one-piece words. fadkd has a causal LM at hand (`make models` builds
SmolLM2-135M), so the proposals for word i are the LM's most likely next words after words
0..i-1 of the original text: one forward pass per text gives every position's proposals, and
every copy of that text samples from them. Each word is replaced with probability
`task.augment_p` (at least one word per copy when any word has a proposal) by one of the
`TOP_K` most likely whole-word tokens other than itself, drawn in proportion to the LM's
probability; capitalisation follows the original word. Left context only (a causal LM sees no
right context), so a proposal fits what comes before, not always what follows; the teacher, not
the original label, says what a copy is.

The copies depend on the rows, the LM's weights, p, the number of copies and task.augment_seed,
so they are written once to <cache.dir>/augment/<key>.jsonl and read by every later run and seed.
"""

import hashlib
import json
import os
import random
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fadkd.config.schema import Config, ModelConfig
from fadkd.data.augment import UNLABELLED
from fadkd.models.lm import _is_causal
from fadkd.models.load import ModelError, _check_folder
from fadkd.teacher.cache import teacher_fingerprint

TOP_K = 16  # proposals kept per word
WORD = re.compile(r"^[A-Za-z]+$")


def lm_copies(rows: list[dict], task, cfg: Config, log=print) -> list[dict]:
    """`task.augment` LM-substituted, unlabelled copies of each row (copy-major order, like augment_rows)."""
    t = cfg.task
    if not t.augment_lm:
        raise ModelError(
            "task.augment_method=lm needs a causal LM to propose words: set task.augment_lm=<HF folder> "
            "(`make models` builds smollm2-135m into $FADKD_ASSETS)"
        )
    _check_folder(t.augment_lm, "augment_lm", "task")
    check_proposer(t.augment_lm)
    lm = ModelConfig(name="augment-lm", path=t.augment_lm)
    spec = {"rows": rows, "columns": task.text_columns, "copies": t.augment, "p": t.augment_p, "seed": t.augment_seed}
    key = hashlib.sha256(json.dumps({**spec, "lm": teacher_fingerprint(lm), "top_k": TOP_K}).encode()).hexdigest()
    path = Path(os.path.expanduser(cfg.cache.dir)) / "augment" / f"{key[:24]}.jsonl"
    if path.is_file():
        log(f"task.augment_method=lm: reading {len(rows) * t.augment} copies from {path}")
        return [json.loads(line) for line in path.read_text().splitlines()]
    log(f"task.augment_method=lm: {t.augment} copies of {len(rows)} rows with {t.augment_lm} -> {path}")
    proposer = Proposer(t.augment_lm)
    proposals = {c: proposer.propose([row[c] for row in rows], cfg.train.eval_batch_size) for c in task.text_columns}
    rng = random.Random(t.augment_seed)
    missing = float("nan") if task.is_regression else UNLABELLED
    copies = [
        {
            **row,
            **{c: substitute(row[c], proposals[c][i], t.augment_p, rng) for c in task.text_columns},
            "label": missing,
        }
        for _ in range(t.augment)
        for i, row in enumerate(rows)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in copies))
    os.replace(tmp, path)
    return copies


def check_proposer(path: str) -> None:
    """task.augment_lm is a causal LM folder with a tokenizer that has a start (or end) token."""
    folder = os.path.expanduser(path)
    try:
        config = AutoConfig.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelError(f"task.augment_lm={path}: cannot load a causal LM and its tokenizer ({err})") from None
    if not _is_causal(config):
        raise ModelError(
            f"task.augment_lm={path} is not a causal language model (architectures: {config.architectures}); "
            "augment_method=lm proposes words with one: give a causal LM folder, e.g. the smollm2-135m of `make models`"
        )
    if tok.bos_token_id is None and tok.eos_token_id is None:
        raise ModelError(
            f"task.augment_lm={path}: its tokenizer has neither a start nor an end token to begin each text with; "
            "give a causal LM whose tokenizer has one (bos_token or eos_token)"
        )


def substitute(text: str, proposals: list[list[tuple[str, float]]], p: float, rng: random.Random) -> str:
    """Replace each word with probability p by one of its proposals (at least one word when any has some)."""
    words = text.split()
    able = [i for i, options in enumerate(proposals) if options]
    if not able:
        return text
    chosen = [i for i in able if rng.random() < p] or [rng.choice(able)]
    for i in chosen:
        options = proposals[i]
        word = rng.choices([w for w, _ in options], weights=[q for _, q in options])[0]
        words[i] = word.capitalize() if words[i][:1].isupper() else word
    return " ".join(words)


class Proposer:
    """Next-word proposals of a causal LM at every word of a text."""

    def __init__(self, path: str):
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        words = torch.zeros(len(self.tok), dtype=torch.bool)
        for i in range(len(self.tok)):
            piece = self.tok.decode([i])
            words[i] = piece.startswith(" ") and bool(WORD.match(piece[1:])) and len(piece) > 2
        self.words = words  # whole-word tokens (" house"), the only proposals

    def _encode(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids (start token first) and, per word, the position whose logits predict it."""
        ids, where = [self.start], []
        for word in text.split():
            where.append(len(ids) - 1)
            ids += self.tok(" " + word, add_special_tokens=False)["input_ids"]
        return ids, where

    @torch.no_grad()
    def propose(self, texts: list[str], batch_size: int) -> list[list[list[tuple[str, float]]]]:
        """Per text, per word: [(proposed word, probability)], the word itself and non-words left out."""
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = [self._encode(text) for text in texts[start : start + batch_size]]
            longest = max(len(ids) for ids, _ in encoded)
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.start
            ids = torch.tensor([x + [pad] * (longest - len(x)) for x, _ in encoded])
            mask = torch.tensor([[1] * len(x) + [0] * (longest - len(x)) for x, _ in encoded])
            probs = self.model(input_ids=ids, attention_mask=mask).logits.float().softmax(-1)
            probs[..., ~self.words] = 0
            top = probs.topk(TOP_K + 1, dim=-1)
            for b, (text, (_, where)) in enumerate(zip(texts[start : start + batch_size], encoded)):
                words = text.split()
                out.append(
                    [self._options(words[i], top.values[b, pos], top.indices[b, pos]) for i, pos in enumerate(where)]
                )
        return out

    def _options(self, word: str, values, indices) -> list[tuple[str, float]]:
        if not WORD.match(word):  # punctuation, numbers, "n't": kept as they are
            return []
        proposed = [(self.tok.decode([int(i)]).strip().lower(), float(v)) for v, i in zip(values, indices) if v > 0]
        return [(w, q) for w, q in proposed if w != word.lower()][:TOP_K]
