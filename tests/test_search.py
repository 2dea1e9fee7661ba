"""Many runs: Hydra's joblib / submitit launchers, the Optuna loss-weight search, best trial, table."""

import json
import os
from pathlib import Path

import pytest
from conftest import FAST, run_cli
from hydra.types import RunMode
from omegaconf import OmegaConf

from fadkd.config.sweeps import direction, record_failure, threads_per_job, write_best


def test_parallel_jobs_split_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": joblib, "n_jobs": 4}})) == 2
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": joblib, "n_jobs": 3}})) == 2
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": joblib, "n_jobs": -1}})) == 1
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": joblib, "n_jobs": 16}})) == 1
    submitit = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": submitit, "cpus_per_task": 3}})) == 3
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert threads_per_job(OmegaConf.create({"launcher": {"_target_": basic}})) == 0  # torch's default


def test_failed_jobs_are_recorded_only_where_a_sweep_can_go_on():
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    plain = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"

    def cfg(mode, launcher, sweeper):
        return OmegaConf.create({"mode": mode, "launcher": {"_target_": launcher}, "sweeper": {"_target_": sweeper}})

    assert not record_failure(cfg(RunMode.RUN, basic, plain))
    assert not record_failure(cfg(RunMode.MULTIRUN, basic, plain))  # one clear message, as a single run
    assert record_failure(cfg(RunMode.MULTIRUN, joblib, plain))  # a worker of a pool: the job fails, not the pool
    assert record_failure(cfg(RunMode.MULTIRUN, basic, optuna))  # a failed trial; the search goes on


def test_search_direction_follows_the_main_metric():
    assert direction("mrpc") == "maximize" and direction("stsb") == "maximize"
    assert direction("lm_sst2") == "minimize"  # perplexity


def _fake_run(folder: Path, value: float, overrides: list[str]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    metrics = {"task": "mrpc", "main_metric": "f1", "student": {"f1": value}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    (folder / "config.yaml").write_text(f"loss:\n  alpha: {overrides[0].split('=')[1]}\n")


def test_best_trial_is_written_with_its_config_and_command(tmp_path):
    _fake_run(tmp_path / "0", 0.5, ["loss.alpha=0.1", "task=mrpc"])
    _fake_run(tmp_path / "1", 0.8, ["loss.alpha=0.7", "task=mrpc"])
    _fake_run(tmp_path / "2", 0.6, ["loss.alpha=1.3", "task=mrpc"])
    best = write_best(tmp_path)
    assert best["run"] == str(tmp_path / "1") and best["value"] == 0.8 and best["direction"] == "maximize"
    assert best["command"] == "fadkd train loss.alpha=0.7 task=mrpc"
    assert OmegaConf.load(tmp_path / "best.yaml").value == 0.8
    assert OmegaConf.load(tmp_path / "best_config.yaml").loss.alpha == 0.7
    # Optuna's own pick wins where it wrote one (e.g. among equal values)
    (tmp_path / "optimization_results.yaml").write_text("name: optuna\nbest_params:\n  loss.alpha: 1.3\n")
    assert write_best(tmp_path)["run"] == str(tmp_path / "2")


@pytest.mark.slow  # a subprocess through Hydra's submitit plugin (~10 s)
def test_submitit_slurm_config_composes():
    out = run_cli("train", "hydra/launcher=submitit_slurm", "train.strategy=fsdp", "--cfg", "hydra").stdout
    assert "SlurmLauncher" in out and "partition:" in out and "timeout_min:" in out


def _jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())


@pytest.mark.slow
def test_joblib_multirun_of_four_jobs_and_its_table(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss.alpha=0,1", "loss.delta=0,0.5",
        *FAST, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    jobs = _jobs(sweep)
    assert len(jobs) == 4
    cores = len(os.sched_getaffinity(0))
    for job in jobs:  # 2 jobs at once share the cores
        assert OmegaConf.load(job / "config.yaml").train.num_threads == max(1, cores // 2)
    out = run_cli("table", str(sweep)).stdout
    assert "loss.alpha" in out and "loss.delta" in out
    assert len((sweep / "results.csv").read_text().splitlines()) == 5


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "loss.alpha=0,1",
        *FAST, f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert len(_jobs(sweep)) == 2


@pytest.mark.slow
def test_optuna_search_of_eight_trials(tmp_path):
    sweep = tmp_path / "search"
    run_cli("train", "-m", "hparams_search=weights", "hydra.sweeper.n_trials=8", *FAST, f"hydra.sweep.dir={sweep}")
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == [str(i) for i in range(8)]  # one folder per trial, by number
    sampled = [dict(o.split("=", 1) for o in OmegaConf.load(j / ".hydra" / "overrides.yaml")) for j in jobs]
    for values in sampled:
        assert {"loss.alpha", "loss.beta", "loss.gamma", "loss.delta", "loss.temperature", "train.lr"} <= set(values)
        assert 1e-5 <= float(values["train.lr"]) <= 1e-3 and 1 <= float(values["loss.temperature"]) <= 8
    assert len({v["loss.alpha"] for v in sampled}) == 8

    results = OmegaConf.load(sweep / "optimization_results.yaml")
    best = OmegaConf.load(sweep / "best.yaml")
    scores = {j.name: json.loads((j / "metrics.json").read_text())["student"]["accuracy"] for j in jobs}
    assert best.value == results.best_value == max(scores.values())
    assert all(f"{k}={v}" in best.overrides for k, v in results.best_params.items())
    assert (sweep / "best_config.yaml").read_text() == (Path(best.run) / "config.yaml").read_text()

    run_cli("table", str(sweep))  # ranked by the dev metric, the sampled values as columns
    lines = (sweep / "results.md").read_text().splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert {"loss.alpha", "loss.temperature", "train.lr"} <= set(header)
    ranked = [float(r.strip("|").split("|")[header.index("accuracy")]) for r in lines[4:]]
    assert ranked == sorted(ranked, reverse=True) and len(ranked) == 8


def test_table_ranks_a_sweep_by_the_dev_metric_with_swept_values_as_columns(tmp_path):
    for i, (alpha, f1) in enumerate([("0.12345678901", 0.5), ("0.7", 0.8), ("1.3", 0.6)]):
        _fake_run(tmp_path / str(i), f1, [f"loss.alpha={alpha}", "task=mrpc"])
        metrics = json.loads((tmp_path / str(i) / "metrics.json").read_text())
        metrics.update(params={"student": 1}, steps=1, train_seconds=1.0)
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps(metrics))
    from fadkd.report.results import write_table

    write_table([tmp_path])
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[0] == "All runs: `task=mrpc`"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert header[:3] == ["run", "task", "loss.alpha"]
    assert [r[0] for r in rows] == ["1", "2", "0"]  # best F1 first
    assert [r[2] for r in rows] == ["0.7", "1.3", "0.1235"]  # drawn values shortened for reading
