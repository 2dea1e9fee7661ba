"""Build the small WordPiece tokenizer that the `tiny` model presets use.

The tiny presets are random-init BERTs for CI and the one-minute demo; they need a
tokenizer that is small (fast embedding tables) and ships with the package, since
nothing may be fetched from the Hub. We train a lowercase WordPiece vocabulary on GLUE
sentences and save it in Hugging Face form under fadkd/assets/tiny-tokenizer/.

    python scripts/build_tiny_tokenizer.py --glue-dir ../shared/data/glue [--vocab-size 4000]
"""

import argparse
import csv
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertTokenizer

# (folder, file, text column indices) for the single-sentence and pair tasks we have.
SOURCES = [
    ("SST-2", "train.tsv", (0,)),
    ("CoLA", "train.tsv", (3,)),
    ("MRPC", "train.tsv", (3, 4)),
    ("STS-B", "train.tsv", (7, 8)),
    ("RTE", "train.tsv", (1, 2)),
]


def sentences(glue_dir: Path):
    for folder, name, cols in SOURCES:
        with open(glue_dir / folder / name, encoding="utf-8-sig", newline="") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                for c in cols:
                    if c < len(row):
                        yield row[c]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue-dir", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "fadkd/assets/tiny-tokenizer")
    args = parser.parse_args()

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=args.vocab_size, special_tokens=special)
    tok.train_from_iterator(sentences(args.glue_dir), trainer=trainer)

    args.out.mkdir(parents=True, exist_ok=True)
    # Wrap the trained vocabulary in transformers' BERT tokenizer so the folder is a standard
    # HF tokenizer (special tokens, [CLS] a [SEP] b [SEP] templates, tokenizer_config.json).
    hf = BertTokenizer(vocab=tok.get_vocab(), do_lower_case=True, model_max_length=512)
    hf.save_pretrained(args.out)
    print(f"wrote {len(hf)} tokens to {args.out}")


if __name__ == "__main__":
    main()
