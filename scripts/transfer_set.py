"""An unlabelled transfer set for MRPC or CoLA, from other GLUE tasks' training text (labels dropped).

    .venv/bin/python scripts/transfer_set.py --task mrpc|cola [--glue ../shared/data/glue] [--size N] [--out FILE]

Text the teacher labels for the student (`task.unlabelled_file=<out>`), the cheap alternative to LM-written
copies (conf/data/lm_copies.yaml), which cost a generation per copy on this CPU.
- mrpc: the pairs of STS-B train (news, captions, forums; scored for similarity) and RTE train (news;
  entailment). STS-B's MSRpar genre is drawn from the same Microsoft Research corpus as MRPC, so any pair
  with a sentence that is also in MRPC's dev set is left out.
- cola: SST-2 training phrases of 4 to 25 words (movie-review sentences and the parse-tree fragments SST-2
  is made of, so grammatical and ungrammatical text both), `--size` of them drawn with a fixed seed; any
  that is also a CoLA dev sentence is left out. The default size is 4x CoLA's 8,551 training rows.
Sentences are compared after lower-casing and removing spaces: the student must not see dev sentences, even
unlabelled. Prints how many rows each source gave and how many were left out.
"""

import argparse
import csv
import random
import re
from pathlib import Path


def key(text: str) -> str:
    """A sentence compared across corpora: lower case, no spaces (MRPC writes "doesn 't", others "doesn't")."""
    return re.sub(r"\s+", "", text.lower())


def read_tsv(path: Path, header: bool = True) -> list:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader if header else csv.reader
        return list(reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def mrpc_pairs(glue: Path) -> list[str]:
    held_out = {key(row[c]) for row in read_tsv(glue / "MRPC" / "dev.tsv") for c in ("#1 String", "#2 String")}
    pairs, seen = [], set()
    for name in ("STS-B", "RTE"):
        rows = read_tsv(glue / name / "train.tsv")
        kept = [(r["sentence1"], r["sentence2"]) for r in rows]
        kept = [(a, b) for a, b in kept if key(a) not in held_out and key(b) not in held_out]
        fresh = [(a, b) for a, b in kept if (key(a), key(b)) not in seen]
        seen.update((key(a), key(b)) for a, b in fresh)
        pairs += [f"{a}\t{b}" for a, b in fresh if "\t" not in a + b]
        print(
            f"{name}: {len(rows)} pairs, {len(rows) - len(kept)} share a sentence with MRPC dev (left out), "
            f"{len(kept) - len(fresh)} repeats, {len(fresh)} kept"
        )
    return ["sentence1\tsentence2", *pairs]


def cola_sentences(glue: Path, size: int) -> list[str]:
    held_out = {key(row[3]) for row in read_tsv(glue / "CoLA" / "dev.tsv", header=False)}
    rows = read_tsv(glue / "SST-2" / "train.tsv")
    phrases = list(dict.fromkeys(r["sentence"].strip() for r in rows if 4 <= len(r["sentence"].split()) <= 25))
    kept = [p for p in phrases if key(p) not in held_out]
    if size > len(kept):
        raise SystemExit(f"--size {size}: SST-2 has only {len(kept)} phrases of 4 to 25 words; ask for fewer")
    print(
        f"SST-2: {len(rows)} phrases, {len(phrases)} distinct of 4 to 25 words, "
        f"{len(phrases) - len(kept)} are CoLA dev sentences (left out), {size} drawn (seed 0)"
    )
    return random.Random(0).sample(kept, size)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("mrpc", "cola"), default="mrpc")
    p.add_argument("--glue", type=Path, default=Path("../shared/data/glue"))
    p.add_argument("--size", type=int, default=4 * 8551, help="cola: how many sentences")
    p.add_argument("--out", type=Path, help="default outputs/transfer/mrpc_pairs.tsv or cola_sentences.txt")
    ns = p.parse_args()
    lines = mrpc_pairs(ns.glue) if ns.task == "mrpc" else cola_sentences(ns.glue, ns.size)
    out = ns.out or Path("outputs/transfer") / ("mrpc_pairs.tsv" if ns.task == "mrpc" else "cola_sentences.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(f"{out}: {len(lines) - (ns.task == 'mrpc')} unlabelled rows")


if __name__ == "__main__":
    main()
