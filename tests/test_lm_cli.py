"""Causal-LM runs end to end through the CLI: tiny Llama teacher -> tiny Llama student on lm_sst2."""

import json

import pytest
from conftest import run_cli
from transformers import AutoModelForCausalLM

from fadkd.cli import main

TINY_LM = [
    "task=lm_sst2",
    "teacher=tiny-llama",
    "task.max_train_samples=48",
    "task.max_eval_samples=12",
    "task.eval_samples=6",
    "task.max_new_tokens=6",
    "task.block_size=32",
    "train.batch_size=4",
    "train.log_every=1",
]
TEXT_KEYS = ("perplexity", "nll", "bleu", "rouge_1", "rouge_2", "rouge_l", "cer", "bleu_vs_teacher", "cer_vs_teacher")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    run_cli("train", *TINY_LM, "student=tiny-llama-half", "train.max_steps=3", "train.eval_every=2",
            f"hydra.run.dir={out}")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    """A from_teacher student keeping all 4 layers, evaluated without training (train.max_steps=0)."""
    out = tmp_path_factory.mktemp("lm-init")
    main(["train", *TINY_LM, "student=smollm2-135m-third", "student.keep_layers=[0,1,2,3]", "loss=student_alone",
          "train.max_steps=0", f"hydra.run.dir={out}"])  # fmt: skip
    return out


def test_train_writes_lm_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["main_metric"] == "perplexity" and metrics["steps"] == 3
    assert metrics["loss_formula"].startswith("L = 1.0*KL")
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert all(k in steps[0] for k in ("kd", "cos", "mse", "attn", "ce"))
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 3]
    assert metrics["student"]["perplexity"] == min(e["perplexity"] for e in evals)  # lower is better
    assert metrics["teacher"]["bleu_vs_teacher"] == pytest.approx(100.0) or metrics["teacher"]["bleu"] == 0
    assert metrics["teacher"]["cer_vs_teacher"] == 0.0
    assert (run_dir / "teacher_generations.jsonl").read_text().count("\n") == 6


def test_eval_reproduces_the_logged_metrics(run_dir):
    model = AutoModelForCausalLM.from_pretrained(run_dir / "student")
    assert model.config.num_hidden_layers == 2
    out = run_cli("eval", f"run_dir={run_dir}")
    again = json.loads(out.stdout.strip().splitlines()[-1])
    logged = json.loads((run_dir / "metrics.json").read_text())["student"]
    assert {k: again[k] for k in TEXT_KEYS} == pytest.approx({k: logged[k] for k in TEXT_KEYS}, abs=1e-9)
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"prompt", "reference", "teacher", "student"}


def test_student_keeping_every_teacher_layer_scores_as_the_teacher(init_dir):
    metrics = json.loads((init_dir / "metrics.json").read_text())
    assert metrics["steps"] == 0 and metrics["student_name"] == "smollm2-135m-third"
    student, teacher = metrics["student"], metrics["teacher"]
    assert student["perplexity"] == pytest.approx(teacher["perplexity"], rel=1e-6)
    assert student["cer_vs_teacher"] == 0.0 and student["params"] == teacher["params"]
    reloaded = AutoModelForCausalLM.from_pretrained(init_dir / "student")
    assert reloaded.config.num_hidden_layers == 4


def test_paper_table(run_dir, init_dir, tmp_path, capsys):
    main(["table", str(init_dir), str(run_dir), "--layout", "paper", "--out", str(tmp_path)])
    lines = (tmp_path / "paper.md").read_text().splitlines()
    assert lines[0].startswith("| Model | Perplexity | BLEU | ROUGE-L | CER | BLEU vs teacher | CER vs teacher |")
    assert lines[2].startswith("| teacher (tiny-llama) |")
    assert [line.split(" | ")[0] for line in lines[3:]] == [f"| {init_dir.name}", f"| {run_dir.name}"]
    assert (tmp_path / "paper.csv").read_text().startswith("model,perplexity,bleu,rouge_l,cer,")
