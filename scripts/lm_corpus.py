"""Build the natural-text corpus of the causal-LM table from a GLUE folder: whole sentences, two files.

    python scripts/lm_corpus.py --glue ../shared/data/glue --out bench/runs/corpus/glue_text

Writes OUT/train.txt and OUT/heldout.txt (one text per line, for `task=lm_text
task.train_file=OUT/train.txt task.eval_file=OUT/heldout.txt`) and OUT/manifest.json (what each
file holds, counts per source, sha256). SST-2 is left out: its phrases are lower-cased, tokenized
fragments, not sentences.

- train: the train splits of MRPC (news), RTE (news and Wikipedia paragraphs), STS-B (captions,
  headlines, news, forums), CoLA (only the sentences labelled acceptable: the others are made
  ungrammatical on purpose) and WNLI, and the half of QNLI dev's Wikipedia sentences whose hash is
  even.
- heldout (no row trains on it): the dev splits of MRPC, RTE and STS-B, and the other half of
  QNLI dev's Wikipedia sentences (odd hash). Its texts are shuffled (seed 0), so the first N
  (`task.max_eval_samples`) are a sample of all four sources.

Both sides hold each text once, and every train text whose normalised form (lower case, letters
and digits only) is a held-out text's is dropped from train, so no held-out sentence is trained on
(MRPC's and STS-B's pairs stay within their split; STS-B repeats captions across splits). MRPC's
text is the tokenized SentEval variant (`doesn 't`, `$ 2.5`, `" the witness "`), and some RTE and
CoLA texts have a space before punctuation: every text is detokenized here so it reads as prose.
QNLI's two halves come from the same articles: the held-out half shares topics, not sentences,
with training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

DESCRIPTION = (
    "glue_text: whole sentences; train = MRPC/RTE/STS-B/WNLI train + CoLA train (acceptable) + half of QNLI dev "
    "(Wikipedia); held out = MRPC/RTE/STS-B dev + the other half of QNLI dev, deduplicated against train"
)

_DETOK = [
    (re.compile(r"(\d) , (\d{3})\b"), r"\1,\2"),  # 1 , 520 -> 1,520
    (re.compile(r" ('t|n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE), r"\1"),  # doesn 't -> doesn't
    (re.compile(r" ([.,;:?!%)\]}])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$#]) "), r"\1"),  # none after opening punctuation or currency
]


def detokenize(text: str) -> str:
    """SentEval-tokenized English back to prose: `he 's` -> `he's`, `$ 2.5 , or 4 %` -> `$2.5, or 4%`.

    Double quotes are paired left to right: the space after an opening one and before a closing
    one go. Rules, not a parser: good enough for MRPC's news sentences.
    """
    for pattern, repl in _DETOK:
        text = pattern.sub(repl, text)
    parts = text.split('"')
    if len(parts) % 2 == 1:  # balanced quotes: odd pieces are quoted
        for i in range(1, len(parts), 2):
            parts[i] = parts[i].strip()
        text = '"'.join(parts)
    return re.sub(r"\s+", " ", text).strip()


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def read_tsv(path: Path, header: bool = True) -> list[dict[str, str] | list[str]]:
    """Plain TSV (GLUE has no CSV quoting): dicts by header name, or lists for header-less CoLA."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    if not header:
        return rows
    names = rows[0]
    return [dict(zip(names, row, strict=False)) for row in rows[1:]]


def _columns(path: Path, *names: str) -> list[str]:
    return [row[n] for row in read_tsv(path) for n in names if row.get(n)]


def _half(text: str) -> int:
    return hashlib.sha256(text.encode()).digest()[0] % 2


def sources(glue: Path) -> dict[str, dict[str, list[str]]]:
    """{source: {"train": texts, "heldout": texts}} before deduplication."""
    mrpc = ("#1 String", "#2 String")
    cola = [row[3] for row in read_tsv(glue / "CoLA" / "train.tsv", header=False) if len(row) == 4 and row[1] == "1"]
    qnli = list(dict.fromkeys(_columns(glue / "QNLI" / "dev.tsv", "sentence")))
    return {
        "MRPC": {
            "train": _columns(glue / "MRPC" / "train.tsv", *mrpc),
            "heldout": _columns(glue / "MRPC" / "dev.tsv", *mrpc),
        },
        "RTE": {
            "train": _columns(glue / "RTE" / "train.tsv", "sentence1", "sentence2"),
            "heldout": _columns(glue / "RTE" / "dev.tsv", "sentence1", "sentence2"),
        },
        "STS-B": {
            "train": _columns(glue / "STS-B" / "train.tsv", "sentence1", "sentence2"),
            "heldout": _columns(glue / "STS-B" / "dev.tsv", "sentence1", "sentence2"),
        },
        "CoLA": {"train": cola, "heldout": []},
        "WNLI": {"train": _columns(glue / "WNLI" / "train.tsv", "sentence1", "sentence2"), "heldout": []},
        "QNLI": {
            "train": [t for t in qnli if _half(t) == 0],
            "heldout": [t for t in qnli if _half(t) == 1],
        },
    }


def build(glue: Path, seed: int = 0) -> tuple[list[str], list[str], dict]:
    """(train texts, held-out texts, manifest): each text once, no held-out text in train."""
    found = {
        name: {side: [detokenize(t) for t in texts] for side, texts in split.items()}
        for name, split in sources(glue).items()
    }
    heldout, seen_held, counts = [], set(), {}
    for name, split in found.items():
        kept = 0
        for text in (t.strip() for t in split["heldout"]):
            key = normalise(text)
            if key and key not in seen_held:
                seen_held.add(key)
                heldout.append(text)
                kept += 1
        counts[name] = {"heldout": kept}
    train, seen_train, dropped = [], set(), 0
    for name, split in found.items():
        kept = 0
        for text in (t.strip() for t in split["train"]):
            key = normalise(text)
            if not key or key in seen_train:
                continue
            if key in seen_held:
                dropped += 1
                continue
            seen_train.add(key)
            train.append(text)
            kept += 1
        counts[name]["train"] = kept
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(heldout)
    manifest = {
        "description": DESCRIPTION,
        "sources": counts,
        "train_texts": len(train),
        "heldout_texts": len(heldout),
        "train_words": sum(len(t.split()) for t in train),
        "heldout_words": sum(len(t.split()) for t in heldout),
        "train_texts_dropped_as_heldout": dropped,
        "seed": seed,
    }
    return train, heldout, manifest


def write(out: Path, train: list[str], heldout: list[str], manifest: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for name, texts in (("train.txt", train), ("heldout.txt", heldout)):
        data = ("\n".join(texts) + "\n").encode()
        (out / name).write_bytes(data)
        manifest[f"{name}_sha256"] = hashlib.sha256(data).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", type=Path, default=Path("../shared/data/glue"), help="a GLUE folder")
    parser.add_argument("--out", type=Path, default=Path("bench/runs/corpus/glue_text"))
    parser.add_argument("--seed", type=int, default=0, help="the order of the texts in each file")
    ns = parser.parse_args()
    manifest = write(ns.out, *build(ns.glue, ns.seed))
    print(
        f"{ns.out}: {manifest['train_texts']} training texts ({manifest['train_words']} words), "
        f"{manifest['heldout_texts']} held out ({manifest['heldout_words']} words); "
        f"{manifest['train_texts_dropped_as_heldout']} train texts dropped as held-out duplicates"
    )


if __name__ == "__main__":
    main()
