"""An unlabelled transfer set of sentence pairs for MRPC, from other GLUE tasks' training pairs.

    .venv/bin/python scripts/transfer_pairs.py [--glue ../shared/data/glue] [--out outputs/transfer/mrpc_pairs.tsv]

The pairs of STS-B train (news, captions, forums; scored for similarity) and RTE train (news; entailment),
with their labels dropped: text the teacher labels for the student (`task.unlabelled_file=<out>`), the
cheap alternative to LM-written copies. STS-B's MSRpar genre is drawn from the same Microsoft Research
corpus as MRPC, so any pair with a sentence that is also in MRPC's dev set is left out (compared after
lower-casing and removing spaces): the student must not see dev sentences, even unlabelled. Prints how
many pairs each source gave and how many were left out.
"""

import argparse
import csv
import re
from pathlib import Path

SOURCES = {"STS-B": ("sentence1", "sentence2"), "RTE": ("sentence1", "sentence2")}


def key(text: str) -> str:
    """A sentence compared across corpora: lower case, no spaces (MRPC writes "doesn 't", others "doesn't")."""
    return re.sub(r"\s+", "", text.lower())


def read_tsv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue", type=Path, default=Path("../shared/data/glue"))
    p.add_argument("--out", type=Path, default=Path("outputs/transfer/mrpc_pairs.tsv"))
    ns = p.parse_args()
    dev = read_tsv(ns.glue / "MRPC" / "dev.tsv")
    held_out = {key(row[c]) for row in dev for c in ("#1 String", "#2 String")}
    pairs, seen = [], set()
    for name, (a, b) in SOURCES.items():
        rows = read_tsv(ns.glue / name / "train.tsv")
        kept = [(r[a], r[b]) for r in rows if key(r[a]) not in held_out and key(r[b]) not in held_out]
        fresh = [(s1, s2) for s1, s2 in kept if (key(s1), key(s2)) not in seen]
        seen.update((key(s1), key(s2)) for s1, s2 in fresh)
        pairs += fresh
        print(
            f"{name}: {len(rows)} pairs, {len(rows) - len(kept)} share a sentence with MRPC dev (left out), "
            f"{len(kept) - len(fresh)} repeats, {len(fresh)} kept"
        )
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    with ns.out.open("w", encoding="utf-8") as handle:
        handle.write("sentence1\tsentence2\n")
        handle.writelines(f"{s1}\t{s2}\n" for s1, s2 in pairs if "\t" not in s1 + s2)
    print(f"{ns.out}: {len(pairs)} unlabelled pairs")


if __name__ == "__main__":
    main()
