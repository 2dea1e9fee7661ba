"""Watching a run: RunLog (jsonl, TensorBoard, resume), `fadkd plot`, `fadkd report`, the summary."""

import io
import json
import re
import shutil

import pytest
from conftest import FAST, run_cli
from PIL import Image
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fadkd.config.schema import Config, TaskConfig, TrainConfig
from fadkd.errors import FadkdError
from fadkd.report.plots import plot_path
from fadkd.report.runs import overrides_of
from fadkd.report.summary import print_summary, write_report
from fadkd.run.logs import RunLog
from fadkd.run.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny full-objective distillation (every term on, 2 layer pairs), logged to TensorBoard too."""
    out = tmp_path_factory.mktemp("run")
    task = TaskConfig(data_dir="sample", max_train_samples=24, max_eval_samples=12)
    settings = TrainConfig(max_steps=4, batch_size=8, log_every=1, eval_every=2, logger="tensorboard")
    train(Config(task=task, train=settings), out)
    return out


# RunLog


def test_runlog_writes_flushed_jsonl_rows(tmp_path):
    log = RunLog(tmp_path)
    log.log_step(1, {"loss": 2.5, "kd": 0.5, "cos/s1_t2": 0.25})
    log.log_eval(1, {"accuracy": 0.75})
    # Flushed at once: a reader (or a crash) sees the rows before close().
    assert read_jsonl(tmp_path / "steps.jsonl") == [{"step": 1, "loss": 2.5, "kd": 0.5, "cos/s1_t2": 0.25}]
    assert read_jsonl(tmp_path / "evals.jsonl") == [{"step": 1, "accuracy": 0.75}]
    log.close()
    assert not (tmp_path / "tensorboard").exists()  # jsonl only by default


def test_runlog_resume_keeps_rows_up_to_the_checkpoint(tmp_path):
    with RunLog(tmp_path) as log:
        for step in (1, 2, 3, 4):
            log.log_step(step, {"loss": float(step)})
        log.log_eval(2, {"accuracy": 0.5})
        log.log_eval(4, {"accuracy": 0.6})
    with open(tmp_path / "steps.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a line torn by the crash being resumed from
    with RunLog(tmp_path, resume_step=2) as log:
        log.log_step(3, {"loss": 30.0})
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "steps.jsonl")] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert read_jsonl(tmp_path / "evals.jsonl") == [{"step": 2, "accuracy": 0.5}]


def test_runlog_none_writes_nothing_and_unknown_logger_is_refused(tmp_path):
    with RunLog(tmp_path, "none") as log:
        log.log_step(1, {"loss": 1.0})
        log.log_eval(1, {"accuracy": 1.0})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FadkdError, match="train.logger='wandb' is unknown; choose jsonl, tensorboard or none"):
        RunLog(tmp_path, "wandb")


# TensorBoard


def test_tensorboard_events_hold_every_term_pair_and_dev_metric(run):
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {f"loss/{t}" for t in ("total", "kd", "cos", "mse", "attn", "ce")}
    expected |= {f"pair/{t}/{p}" for t in ("cos", "mse", "attn") for p in ("s1_t2", "s2_t4")}
    expected |= {"train/lr", "train/grad_norm", "train/samples_per_s", "dev/accuracy"}
    assert expected <= tags, expected - tags
    # The same numbers as the run's record, step for step.
    steps = read_jsonl(run / "steps.jsonl")
    logged = {(e.step, round(e.value, 5)) for e in events.Scalars("pair/mse/s2_t4")}
    assert logged == {(r["step"], round(r["mse/s2_t4"], 5)) for r in steps}
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("dev/accuracy")] == [r["step"] for r in read_jsonl(run / "evals.jsonl")]


def test_tensorboard_resume_hides_the_steps_it_recomputes(tmp_path):
    with RunLog(tmp_path, "tensorboard") as log:
        for step in (1, 2, 3, 4):
            log.log_step(step, {"loss": float(step)})
    with RunLog(tmp_path, "tensorboard", resume_step=2) as log:
        log.log_step(3, {"loss": 30.0})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/total")] == [(1, 1.0), (2, 2.0), (3, 30.0)]


# Plots


def assert_png(path, min_width=500):
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.width >= min_width and image.height >= 300, (path, image.size)


def test_plot_writes_a_run_plots(run):
    written = plot_path(run)
    assert [p.name for p in written] == ["loss_terms.png", "layer_pairs.png", "dev_metric.png"]
    for path in written:
        assert path.parent == run / "plots"
        assert_png(path)


def test_plot_without_logged_rows_says_why(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.yaml", "metrics.json"):
        shutil.copy(run / name, bare / name)
    with pytest.raises(FadkdError, match="train.logger=none"):
        plot_path(bare)
    with pytest.raises(FadkdError, match="does not exist"):
        plot_path(tmp_path / "missing")


@pytest.mark.slow  # a 2-run sweep and a plot, in subprocesses: with the slow tests (test_cli keeps a fast multirun)
def test_plot_multirun_draws_metric_against_swept_value(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train", "-m", *FAST, "loss.delta=0,0.5", f"hydra.sweep.dir={sweep}")
    out = run_cli("plot", str(sweep)).stdout
    assert_png(sweep / "plots" / "sweep.png")
    jobs = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    assert len(jobs) == 2
    for job in jobs:
        assert_png(job / "plots" / "loss_terms.png")
        assert str(job / "plots" / "dev_metric.png") in out
    # δ = 0: no attention term is logged, and the plots still draw (cos and mse only).
    no_attn = next(j for j in jobs if "loss.delta=0" in overrides_of(j))
    assert "attn" not in json.loads((no_attn / "steps.jsonl").read_text().splitlines()[0])


# Report


def table_row(report: str, role: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {role} ("))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_numbers_equal_the_run_metrics(run):
    metrics = json.loads((run / "metrics.json").read_text())
    report = write_report(run).read_text()
    assert (run / "report.md").is_file()
    for role in ("student", "teacher"):
        cells = table_row(report, role)
        assert int(cells[1].replace(",", "")) == metrics["params"][role]
        assert float(cells[-1]) == pytest.approx(metrics[role]["accuracy"], abs=1e-4)
        assert float(cells[3].replace(",", "")) > 0  # tokens/s, measured by the report
    ratio = metrics["params"]["teacher"] / metrics["params"]["student"]
    assert f"Compression: {ratio:.2f}×" in report
    assert metrics["loss_formula"] in report
    for student_layer, teacher_layer, weight in metrics["mapping"]:
        assert f"| {student_layer} | {teacher_layer} | {weight:g} |" in report
    assert (run / "config.yaml").read_text().strip() in report
    for name in re.findall(r"\]\((plots/[^)]+)\)", report):
        assert_png(run / name)
    assert "plots/layer_pairs.png" in report


def test_report_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    proc = run_cli("report", str(tmp_path), check=False)
    assert proc.returncode == 2 and "no config.yaml" in proc.stderr


def test_summary_shows_metrics_compression_files_and_next_commands(run):
    metrics = json.loads((run / "metrics.json").read_text())
    buffer = io.StringIO()
    print_summary(metrics, run, ["loss.delta=0.5", "train.resume=true"], Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert f"{metrics['student']['accuracy']:.4f}" in text
    assert f"{metrics['params']['teacher'] / metrics['params']['student']:.2f}×" in text
    assert f"fadkd eval run_dir={run}" in text
    assert f"fadkd train loss.delta=0.5 train.resume=true hydra.run.dir={run}" in text
    assert "tensorboard --logdir" in text and "metrics.json" in text
