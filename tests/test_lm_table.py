"""scripts/lm_corpus.py (the natural-text corpus of `make lm-table`) and scripts/lm_table_report.py."""

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT

from fadkd.config.schema import TaskConfig
from fadkd.data.lm_text import get_lm_task, load_texts


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus():
    return _script("lm_corpus")


@pytest.mark.parametrize(
    "tokenized, prose",
    [
        ("Yucaipa owned Dominick 's before selling it for $ 2.5 billion .",
         "Yucaipa owned Dominick's before selling it for $2.5 billion."),
        ('Amrozi accused his brother , whom he called " the witness " , of lying .',
         'Amrozi accused his brother, whom he called "the witness", of lying.'),
        ("He said the business doesn 't fit ( for now ) , up 4.4 % to 1 , 520 .",
         "He said the business doesn't fit (for now), up 4.4% to 1,520."),
        ("Clean text stays as it is.", "Clean text stays as it is."),
    ],
)  # fmt: skip
def test_detokenize(corpus, tokenized, prose):
    assert corpus.detokenize(tokenized) == prose


def test_no_held_out_text_is_trained_on(corpus, tmp_path):
    train, heldout, manifest = corpus.build(FIXTURES)
    assert train and heldout
    held = {corpus.normalise(t) for t in heldout}
    assert not held & {corpus.normalise(t) for t in train}
    assert len(held) == len(heldout) and len({corpus.normalise(t) for t in train}) == len(train)  # each text once
    assert manifest["sources"]["CoLA"]["heldout"] == 0 and manifest["sources"]["QNLI"]["heldout"] > 0
    assert all("\n" not in t and "\t" not in t for t in train + heldout)
    assert corpus.build(FIXTURES) == (train, heldout, manifest)  # deterministic


def test_written_corpus_is_read_by_lm_text(corpus, tmp_path):
    out = tmp_path / "glue_text"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "lm_corpus.py"), "--glue", str(FIXTURES), "--out", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    cfg = TaskConfig(name="lm_text", train_file=str(out / "train.txt"), eval_file=str(out / "heldout.txt"))
    task = get_lm_task("lm_text")
    assert len(load_texts(task, "train", cfg, None)) == manifest["train_texts"]
    assert len(load_texts(task, "dev", cfg, None)) == manifest["heldout_texts"]


def _fake_run(folder, steps: int, perplexity: float, alpha: float = 1.0):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- train.max_steps={steps}\n")
    (folder / "config.yaml").write_text(
        "train: {batch_size: 8, device: cpu, precision: bf16}\ntask: {block_size: 128}\n"
        f"cache: {{enabled: true, top_k: 64}}\nloss: {{alpha: {alpha}, beta: 0, gamma: 0, delta: 0}}\n"
    )
    student = {"perplexity": perplexity, "bleu": 1.0, "rouge_l": 2.0, "cer": 0.9}
    teacher = {**student, "perplexity": 20.0, "params": 1.35e8}
    metrics = {"student": student, "teacher": teacher, "params": {"student": 5e7, "teacher": 1.35e8}, "steps": steps,
               "train_seconds": 100.0, "teacher_name": "t", "student_name": "s"}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_gives_mean_and_spread_and_a_line_per_row_and_seed(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "student_init-s42", 0, 900.0, alpha=0.0)
    _fake_run(runs / "kd_only-s42", 1000, 30.0)
    _fake_run(runs / "kd_only-s43", 1000, 32.0)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"description": "glue_text: sentences", "train_texts": 5, "heldout_texts": 2}))
    md, jsonl = tmp_path / "t.md", tmp_path / "t.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lm_table_report.py"), str(runs), "--runs",
         "student_init:42 kd_only:42 kd_only:43", "--corpus", str(manifest), "--md", str(md), "--jsonl", str(jsonl)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    page = md.read_text()
    assert "| kd_only | 42, 43 | 31.00 ± 1.41 |" in page and "glue_text: sentences" in page
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(x["row"], x["seed"], x["train_tokens"]) for x in lines] == [
        ("teacher", None, 0), ("student_init", 42, 0), ("kd_only", 42, 1_024_000), ("kd_only", 43, 1_024_000)
    ]  # fmt: skip
    assert all(x["corpus"] == "glue_text: sentences" for x in lines)
    assert all((x["device"], x["precision"]) == ("cpu", "bf16") for x in lines)  # the runs' train.device, precision
    assert "- device: cpu; precision: bf16" in page
    assert lines[2]["metrics"]["perplexity"] == 30.0
