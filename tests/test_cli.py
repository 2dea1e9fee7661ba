"""End to end through the CLI on tiny models, as a user runs it."""

import json
import math

import pytest
import torch
from conftest import FAST, FIXTURES, SHARED_GLUE, run_cli
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_cli("train", *FAST, "train.eval_every=2", f"hydra.run.dir={out}")
    return out


def test_help_lists_verbs():
    out = run_cli("--help").stdout
    for verb in ("train", "eval", "table"):
        assert verb in out


def test_train_help_shows_config_groups():
    out = run_cli("train", "--help").stdout
    for group in ("teacher", "student", "task", "mapping", "loss", "train", "experiment", "hparams_search"):
        assert f"{group}:" in out


@pytest.mark.slow  # a subprocess; tests/test_readme.py runs `fadkd train --cfg job` in the fast suite
def test_cfg_job_prints_composed_config():
    out = run_cli("train", "--cfg", "job", "loss.delta=0.5").stdout
    assert "delta: 0.5" in out and "teacher:" in out


def test_train_writes_every_file(run_dir):
    for name in ("config.yaml", ".hydra/config.yaml", "steps.jsonl", "evals.jsonl", "metrics.json"):
        assert (run_dir / name).is_file(), name
    rows = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in ("loss", "kd", "cos", "mse", "attn", "ce", "lr", "samples_per_s"):
            assert math.isfinite(row[key]), (key, row)
        assert any(k.startswith("attn/") for k in row)  # per-pair terms
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["main_metric"] == "accuracy"
    assert metrics["loss_formula"].startswith("L = 1.0*KL")
    evals = [json.loads(line)["step"] for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert evals == [2, 3, 4]  # every 2 steps, and at the epoch's end (24 rows / 8 = 3 batches)


def test_saved_student_reloads_and_reproduces_dev_metric(run_dir):
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student")
    assert model.config.num_hidden_layers == 2
    projections = load_file(run_dir / "projections.safetensors")  # student 32 wide -> teacher 64
    assert projections and all(t.shape[0] == 64 for k, t in projections.items() if k.endswith("weight"))
    out = run_cli("eval", f"run_dir={run_dir}")
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    logged = json.loads((run_dir / "metrics.json").read_text())["student"]
    assert metrics == pytest.approx(logged, abs=1e-9)


def test_train_is_callable_without_hydra(tmp_path):
    from fadkd.config.schema import Config, TaskConfig, TrainConfig
    from fadkd.run.train import train

    cfg = Config(
        task=TaskConfig(data_dir="sample", max_train_samples=16, max_eval_samples=8),
        train=TrainConfig(max_steps=2, batch_size=8, save_student=False),
    )
    metrics = train(cfg, tmp_path)
    assert metrics["params"]["teacher"] > metrics["params"]["student"]
    assert not (tmp_path / "student").exists()
    assert torch.isfinite(torch.tensor(metrics["student"]["accuracy"]))


def test_multirun_and_table(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train", "-m", *FAST, "loss.alpha=0,1", f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert len(jobs) == 2  # folder names show the overrides, sorted by key
    assert jobs[0].name.startswith("0_loss.alpha=0,") and jobs[1].name.startswith("1_loss.alpha=1,")
    out = run_cli("table", str(sweep)).stdout
    assert "loss.alpha" in out and "train.max_steps=4" in out  # swept key as a column, the rest once
    md = (sweep / "results.md").read_text().splitlines()
    assert md[0].startswith("All runs: `task.max_eval_samples=12")
    header = md[2].split(" | ")
    assert "loss.alpha" in header and "accuracy" in header
    assert len(md) == 6  # shared overrides, blank, header, rule, two runs
    assert len((sweep / "results.csv").read_text().splitlines()) == 3


@pytest.mark.slow  # an end-to-end subprocess run (~10 s); pair-task loading is tested in-process (test_glue.py)
def test_pair_task_from_a_glue_folder(tmp_path):
    run_cli("train", "task=mrpc", f"task.data_dir={FIXTURES}", *FAST, f"hydra.run.dir={tmp_path}")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["student"]) == {"accuracy", "f1"} and metrics["main_metric"] == "f1"


@pytest.mark.slow  # an end-to-end subprocess run (~10 s); the regression loss is tested in-process (test_losses.py)
def test_regression_task(tmp_path):
    run_cli("train", "task=stsb", f"task.data_dir={FIXTURES}", *FAST, f"hydra.run.dir={tmp_path}")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["student"]) == {"pearson", "spearmanr"}


# Each case is also a row of docs/errors.md, tested in-process by test_errors.py; here they run as a user's
# process would, the first in the fast suite and the rest with the slow tests (CI runs both).
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "args, message",
    [
        (["task=nope"], "task"),
        pytest.param(["task=mrpc", "task.data_dir=/does/not/exist"], "does not exist", marks=SLOW),
        pytest.param(["teacher.path=/no/such/model"], "does not exist", marks=SLOW),
        pytest.param(["mapping=explicit", "mapping.pairs=[[1,9]]"], "out of range", marks=SLOW),
        pytest.param(["loss.alpha=-1"], "negative", marks=SLOW),
    ],
)
def test_user_errors_are_one_clear_message(args, message, tmp_path):
    proc = run_cli("train", *args, *FAST, f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.real_data
def test_real_glue_mrpc(tmp_path):
    if not (SHARED_GLUE / "MRPC" / "train.tsv").exists():
        pytest.skip(f"real GLUE data not found at {SHARED_GLUE} (set FADKD_GLUE_DIR)")
    run_cli(
        "train", "task=mrpc", f"task.data_dir={SHARED_GLUE}", "train.max_steps=20", "train.batch_size=16",
        "train.eval_every=10", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 20
    assert 0.0 <= metrics["student"]["accuracy"] <= 1.0
    assert len((tmp_path / "evals.jsonl").read_text().splitlines()) == 2
