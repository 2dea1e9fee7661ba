"""Teacher-labelled augmentation of a GLUE training set (`task.augment=N`), as in TinyBERT.

Small GLUE sets give the student a few hundred steps of signal. TinyBERT (Jiao et al. 2020) adds
perturbed copies of the training inputs and lets the *teacher* say what they are: a copy has no
hard label (the task loss skips it), while the soft-logit and feature terms use it like any row.
The perturbation here needs no extra model or word list: within each text field of a row, every
word is dropped with probability p (at least one word stays) and round(p · words) random pairs of
words swap places (EDA's random deletion and swap, Wei & Zou 2019). TinyBERT replaces words with
a masked LM's or GloVe's neighbours instead; neither exists offline here. A copy whose meaning changed
is still a valid input: the teacher, not the original label, says what it is. (On MRPC this did not
help: README, "Quality suite".)

The copies are drawn with their own seed (task.augment_seed, not train.seed), so every seed of a
suite trains on the same rows and one teacher cache (keyed by the rows) serves them all.
"""

from __future__ import annotations

import math
import random

UNLABELLED = -100  # classification: the task loss ignores it; regression copies carry NaN


def perturb(text: str, p: float, rng: random.Random) -> str:
    """Drop each word with probability p (one always stays), then swap round(p·n) random pairs."""
    words = text.split()
    if len(words) < 2:
        return text
    kept = [w for w in words if rng.random() >= p] or [rng.choice(words)]
    for _ in range(round(p * len(kept))):
        i, j = rng.randrange(len(kept)), rng.randrange(len(kept))
        kept[i], kept[j] = kept[j], kept[i]
    return " ".join(kept)


def augment_rows(
    rows: list[dict], text_columns: tuple[str, ...], copies: int, p: float, seed: int, regression: bool
) -> list[dict]:
    """The rows followed by `copies` perturbed, unlabelled copies of each (in the rows' order)."""
    rng = random.Random(seed)
    missing = math.nan if regression else UNLABELLED
    extra = [
        {**row, **{c: perturb(row[c], p, rng) for c in text_columns}, "label": missing}
        for _ in range(copies)
        for row in rows
    ]
    return rows + extra
