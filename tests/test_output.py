"""Output that survives a pipe, help that explains, and the run-folder guards (issue 20).

A user's long run lives in a log file (`fadkd train ... > log 2>&1`, tee, CI, a cluster job):
these tests read such a log, cut the output short with `| head`, interrupt a piped run, and
check the lock, the resume guard and the run folder's name.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, ROOT

from fadkd.preflight import run_dirname
from fadkd.report.summary import resume_command
from fadkd.run.guards import Interrupts
from fadkd.run.progress import PlainProgress, make_console

ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "HYDRA_FULL_ERROR")}
ENV["PYTHONWARNINGS"] = "ignore"


def _to_log(args: list[str], log: Path, cwd: Path = ROOT, **env) -> subprocess.Popen:
    """`fadkd <args> > log 2>&1`, started in the background."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "fadkd", *args], stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, env={**ENV, **env})  # fmt: skip


def _lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("logged")
    run = tmp / "a run folder with a long name " / ("deep-" * 12)
    proc = _to_log(["train", *FAST, f"hydra.run.dir={run}"], tmp / "log")
    assert proc.wait(timeout=600) == 0, (tmp / "log").read_text()
    return run, (tmp / "log").read_text()


def test_a_log_file_is_readable(logged_run):
    run, log = logged_run
    assert "\x1b[" not in log and "Traceback" not in log and "…" not in log  # no colour codes, nothing cut short
    assert _lines_with(log, "train step 4/4")  # plain progress lines, the last at the end
    resume = _lines_with(log, "train.resume=true")
    assert len(resume) == 1 and f"hydra.run.dir='{run}'" in resume[0]  # one line, whole path: copyable
    assert re.search(r"student final .* \d\.\d{4}", _lines_with(log, "student final")[0])  # a table row, one line


@pytest.mark.slow  # subprocess runs: with the slow tests (CI runs both)
def test_eval_prints_its_result_without_a_loading_bar(logged_run):
    run, _ = logged_run
    proc = subprocess.run([sys.executable, "-m", "fadkd", "eval", f"run_dir={run}"], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "accuracy=" in proc.stderr and "it/s" not in proc.stderr and "%|" not in proc.stderr
    assert "accuracy" in json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # subprocess runs: with the slow tests (CI runs both)
def test_resume_with_force_takes_the_new_settings(logged_run):
    run, _ = logged_run
    args = ["train", *FAST, "train.max_steps=5", "train.lr=0.002", "train.resume=force", f"hydra.run.dir={run}"]
    proc = subprocess.run([sys.executable, "-m", "fadkd", *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "train.lr: 0.001 -> 0.002" in " ".join(proc.stderr.split())
    assert "lr: 0.002" in (run / "config.yaml").read_text()


@pytest.mark.slow  # subprocess runs: with the slow tests (CI runs both)
def test_interrupted_piped_run_prints_a_whole_resume_command(tmp_path):
    run = tmp_path / ("folder-" * 14)
    proc = _to_log(["train", *FAST, "train.max_steps=100000", f"hydra.run.dir={run}"], tmp_path / "log",
                   FADKD_PROGRESS_SECONDS="0")  # fmt: skip
    deadline = time.time() + 300
    while "train step" not in (tmp_path / "log").read_text() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # a double press: ignored, the checkpoint still comes
    assert proc.wait(timeout=300) == 130
    log = (tmp_path / "log").read_text()
    # The second press lands in the step ("already stopping") or in the exit (ignored): 130 and a checkpoint either way.
    assert "Traceback" not in log and "interrupted:" not in log
    assert any((run / "checkpoints").glob("step-*"))
    resume = _lines_with(log, "train.resume=true")
    assert len(resume) == 1 and resume[0].strip().endswith(f"hydra.run.dir={run}")


@pytest.mark.parametrize("verb", ["train", pytest.param("finetune", marks=pytest.mark.slow)])
def test_help_cut_short_by_head_is_quiet(verb):
    proc = subprocess.run(f"{sys.executable} -m fadkd {verb} --help | head -3", shell=True, capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=300)  # fmt: skip
    assert len(proc.stdout.splitlines()) == 3 and proc.stderr == "", proc.stderr


@pytest.mark.slow  # subprocess runs: with the slow tests (CI runs both)
def test_help_lists_groups_keys_defaults_and_meanings():
    def help_of(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "fadkd", *args], capture_output=True, text=True, env=ENV,
                              cwd=ROOT, timeout=300).stdout  # fmt: skip

    train = help_of("train", "--help")
    assert "Hydra" not in train.splitlines()[0]
    assert any("train.lr" in line and "0.001" in line and "learning rate" in line for line in train.splitlines())
    assert any("loss.temperature" in line and "2.0" in line for line in train.splitlines())
    finetune = help_of("finetune", "--help")
    assert "model=" in finetune and "model:" in finetune
    assert "task.data_dir" in help_of("eval", "--help")
    assert help_of("--version").startswith("fadkd ")


@pytest.mark.slow  # subprocess runs: with the slow tests (CI runs both)
def test_eighteen_overrides_make_a_folder_name_the_file_system_takes(tmp_path):
    many = [f"{k}={v}" for k, v in [("train.lr", 0.002), ("train.seed", 3), ("train.warmup_ratio", 0.2),
            ("train.grad_clip", 2.0), ("loss.alpha", 0.5), ("loss.beta", 0.5), ("loss.gamma", 0.5),
            ("loss.delta", 0.5), ("loss.ce", 0.5), ("loss.temperature", 3.0), ("train.eval_every", 2),
            ("train.weight_decay", 0.02), ("train.keep_checkpoints", 3), ("task.max_length", 64)]]  # fmt: skip
    proc = _to_log(["train", *FAST, *many], tmp_path / "log", cwd=tmp_path)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log").read_text()
    (folder,) = (tmp_path / "outputs").glob("*/*")
    assert len(folder.name.encode()) <= 200 and (folder / "metrics.json").is_file()


def test_run_folder_names_leave_out_paths_and_stay_short():
    assert run_dirname("task.eval_file=/a/b/dev.txt,task.train_file=/a/b/c.txt,task=lm_text") == "task=lm_text"
    assert run_dirname("mapping.pairs=[[1,2],[2,4]],loss.beta=0") == "mapping.pairs=[[1,2],[2,4]],loss.beta=0"
    long = ",".join(f"loss.alpha{i}=0.123456789" for i in range(30))
    assert len(run_dirname(long).encode()) <= 120 and run_dirname(long) != run_dirname(long[:-1] + "8")


def test_plain_progress_prints_steady_lines_and_the_last_one(capsys):
    console = make_console()
    with PlainProgress(console, every=3600) as progress:
        bar = progress.add_task("train", total=10, terms="")
        for step in range(1, 10):
            progress.update(bar, terms=f"loss={step}")
            progress.update(bar, completed=step)
    out = capsys.readouterr().out.splitlines()
    assert out == ["train step 9/10  0:00:00  loss=9"]  # the hour never passed: only the closing line
    with PlainProgress(console, every=0) as progress:
        bar = progress.add_task("train", total=3, terms="")
        for step in range(1, 4):
            progress.update(bar, completed=step)
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_second_ctrl_c_soon_after_the_first_is_ignored():
    with Interrupts() as interrupts:
        interrupts._handle(signal.SIGINT, None)
        interrupts._handle(signal.SIGINT, None)  # within the grace period: ignored
        assert interrupts.exit_code == 130
        interrupts._at -= Interrupts.GRACE
        with pytest.raises(KeyboardInterrupt):
            interrupts._handle(signal.SIGINT, None)


@pytest.mark.slow  # subprocess runs: with the slow tests (CI runs both)
def test_a_crashed_run_leaves_no_stale_lock(tmp_path):
    code = (
        f"from pathlib import Path; from fadkd.run.folder import lock_run_dir; lock_run_dir(Path({str(tmp_path)!r}));"
    )
    code += " print('locked', flush=True); import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    from fadkd.run.folder import lock_run_dir

    lock_run_dir(tmp_path)  # the kernel dropped the lock with the process


def test_resume_command_of_a_finetune_run_without_model(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    config_name: finetune\n")
    assert resume_command(tmp_path, ["train.max_steps=2"]).startswith("fadkd finetune train.max_steps=2")


def test_table_out_creates_its_folder_and_prints_whole_rows(tmp_path, capsys):
    from fadkd.cli import main

    run = tmp_path / "runs" / "a-run-with-a-rather-long-folder-name-that-would-not-fit-in-eighty-columns"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"task": "sst2", "main_metric": "accuracy", "student": {"accuracy": 0.5}}')
    main(["table", str(tmp_path / "runs"), "--out", str(tmp_path / "new" / "folder")])
    assert (tmp_path / "new" / "folder" / "results.md").is_file()
    out = capsys.readouterr().out
    assert any("0.5000" in line and "accuracy" not in line for line in out.splitlines()), out
