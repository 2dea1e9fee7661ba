"""What bench/gpu/run.sh reads, made here: a tiny model folder for its dry run, or the folder the GPU carries.

    python bench/gpu/assets.py tiny DIR     # the dry run's: DIR/mpnet-base, DIR/minilm-l6 (tiny configs, no weights)
    python bench/gpu/assets.py carry        # the GPU run's: bench/gpu/carry/ (needs `make models` and PyPI)

The GPU machine reaches no network and takes at most 64 MiB of files that git ignores, so:
- models: the speed benchmark's mpnet-base and minilm-l6 travel as config.json + tokenizer only
  (~2 MB; their weights are 418 MB + 87 MB) and are built from config with seeded random weights
  (FADKD_BENCH_RANDOM_WEIGHTS=1): a step's time does not depend on the weights' values. The LM
  table needs SmolLM2-135M's real weights (269 MB in bf16, 513 MB as stored): they cannot travel,
  so that part runs only where FADKD_ASSETS already holds smollm2-135m (run.sh says so otherwise).
- wheels: the packages fadkd and the peers import that the GPU image (Python 3.12, torch,
  transformers, scipy, rich, sacrebleu, ...: /work/.library/device/KINDS.md) lacks, for CPython 3.12
  x86-64; pure-Python ones that PyPI has only as source are built into wheels here.
- data: SST-2's train.tsv (the protocol's 32 sentences are a seeded sample of it) and the LM
  table's corpus (scripts/lm_corpus.py over the GLUE folder), ~7 MB.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

CARRY = ROOT / "bench" / "gpu" / "carry"
TOKENIZER = ROOT / "fadkd" / "assets" / "tiny-tokenizer"
KEEP = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# name==version: what .venv runs (bench-peers' pins for the peers); defusedxml is nltk's, rouge-score's
WHEELS = [
    "hydra-core==1.3.8", "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3", "jiwer==4.0.0", "rapidfuzz==3.14.6",
    "rouge-score==0.1.2", "nltk==3.10.4", "defusedxml==0.7.1", "textbrewer==0.2.1.post1", "tensorboardX==2.6.5",
    "torchdistill==1.1.5",
]  # fmt: skip
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def tiny(dest: Path) -> None:
    """mpnet-base and minilm-l6 as tiny random-init configs of the protocol's depths (12 and 6 layers),
    widths 32 and 16, with fadkd's tiny tokenizer: the dry run times the same code on them."""
    from transformers import BertConfig, MPNetConfig

    vocab = len(json.loads((TOKENIZER / "tokenizer.json").read_text())["model"]["vocab"])
    shape = {"vocab_size": vocab, "num_attention_heads": 2, "max_position_embeddings": 130, "pad_token_id": 0}
    configs = {
        "mpnet-base": MPNetConfig(hidden_size=32, num_hidden_layers=12, intermediate_size=64, **shape),
        "minilm-l6": BertConfig(hidden_size=16, num_hidden_layers=6, intermediate_size=32, **shape),
    }
    for name, config in configs.items():
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(TOKENIZER, dest / name)
        config.save_pretrained(dest / name)
    print(f"tiny config-only models in {dest}: {', '.join(configs)}")


def wheels(dest: Path) -> None:
    """Binary wheels for CPython 3.12 x86-64 where PyPI has them, else a wheel built here (pure Python)."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    for spec in WHEELS:
        name = spec.split("==")[0].replace("-", "_").lower()
        if any(w.name.lower().startswith(name + "-") for w in dest.glob("*.whl")):
            continue
        target = ["--python-version", "3.12", "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS]]
        got = subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", *target, "-d", dest, spec])
        if got.returncode != 0:
            print(f"{spec}: no wheel for 3.12 on PyPI; building one here")
            subprocess.run([*pip, "wheel", "--no-deps", "-w", dest, spec], check=True)


def carry(dest: Path, glue: Path) -> None:
    """bench/gpu/carry: assets (config + tokenizer), wheels, SST-2 train.tsv, the LM corpus."""
    for name in ("mpnet-base", "minilm-l6"):
        source = common.ASSETS / name
        if not (source / "config.json").exists():
            raise SystemExit(f"{source} missing: run `make models` (or scripts/fetch_models.py --only {name}) first")
        (dest / "assets" / name).mkdir(parents=True, exist_ok=True)
        for file in KEEP:
            if (source / file).exists():
                shutil.copy2(source / file, dest / "assets" / name / file)
    (dest / "glue" / "SST-2").mkdir(parents=True, exist_ok=True)
    shutil.copy2(glue / "SST-2" / "train.tsv", dest / "glue" / "SST-2" / "train.tsv")
    corpus = dest / "corpus" / "glue_text"
    if not (corpus / "manifest.json").exists():
        subprocess.run([sys.executable, ROOT / "scripts" / "lm_corpus.py", "--glue", glue, "--out", corpus], check=True)
    wheels(dest / "wheels")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    print(f"{dest}: {size:.1f} MiB (the device tool carries 64 MiB at most, the working tree included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("tiny").add_argument("dest", type=Path)
    c = sub.add_parser("carry")
    c.add_argument("--dest", type=Path, default=CARRY)
    c.add_argument("--glue", type=Path, default=common.GLUE)
    args = parser.parse_args()
    tiny(args.dest) if args.what == "tiny" else carry(args.dest, args.glue)


if __name__ == "__main__":
    main()
