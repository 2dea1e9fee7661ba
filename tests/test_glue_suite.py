"""scripts/glue_suite.py (`make quality`): its bookkeeping, and one end-to-end pass on tiny models."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT

SCRIPT = ROOT / "scripts" / "glue_suite.py"
SCHEMA = {"task", "row", "metrics", "epochs", "seed", "command", "commit", "machine"}
ROWS = ["teacher", "student_alone", "kd_only", "features_only", "full"]


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("glue_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_fixed_then_extras_and_bad_rows_refused(suite):
    rows = suite.parse_rows("ablation_full", ["again=ablation_full"])
    assert list(rows) == ["student_alone", "kd_only", "features_only", "full", "again"]
    assert rows["kd_only"] == "ablation_kd_only" and rows["again"] == "ablation_full"
    for bad in (["noequals"], ["full=ablation_full"], ["teacher=ablation_full"], ["x=no_such_experiment"]):
        with pytest.raises(SystemExit):
            suite.parse_rows("ablation_full", bad)


def test_row_commands_share_everything_but_the_experiment(suite, tmp_path):
    ns = suite.parse_args(["--tasks", "mrpc", "--out", str(tmp_path)])
    alone = suite.row_args(ns, "mrpc", "student_alone", "ablation_student_alone", 43)
    full = suite.row_args(ns, "mrpc", "full", "ablation_full", 43)
    kd = suite.row_args(ns, "mrpc", "kd_only", "ablation_kd_only", 43)
    assert not any(a.startswith(("teacher", "cache")) for a in alone)  # no teacher in the baseline
    cache = f"cache.dir={tmp_path}/mrpc/teacher_cache"
    assert cache in full and cache in kd and f"teacher.path={tmp_path}/mrpc/teacher/student" in full
    for args in (alone, full, kd):
        assert {"train.seed=43", "train.epochs=3", "train=pretrained", "train.group_by_length=true"} <= set(args)
    assert full[-1] == f"hydra.run.dir={tmp_path}/mrpc/full/seed43"


def test_rows_with_relations_run_a_live_teacher(suite):
    assert suite.uses_cache("ablation_full", [])
    assert suite.uses_cache("ablation_kd_only", ["loss.attn=relations"])  # no attention term: no relations read
    assert not suite.uses_cache("ablation_full", ["loss.attn=relations"])
    with pytest.raises(SystemExit, match="does not compose"):
        suite.uses_cache("ablation_full", ["loss.no_such_key=1"])


def test_only_trains_the_named_rows(suite, tmp_path, capsys):
    base = ["--tasks", "mrpc", "--seeds", "42", "43", "--out", str(tmp_path), "--dry-run"]
    suite.main([*base, "--rows", "x=ablation_full", "--only", "kd_only", "x"])
    printed = capsys.readouterr().out
    runs = [line.rsplit("hydra.run.dir=", 1)[1] for line in printed.splitlines() if "hydra.run.dir=" in line]
    assert runs == [
        f"{tmp_path}/mrpc/{d}" for d in ("teacher", "kd_only/seed42", "x/seed42", "kd_only/seed43", "x/seed43")
    ]
    with pytest.raises(SystemExit, match="no such row"):
        suite.main([*base, "--only", "fulll"])


def test_jsonl_lines_are_appended_once(suite, tmp_path):
    path = tmp_path / "q.jsonl"
    line = {"task": "mrpc", "row": "full", "metrics": {"accuracy": 0.5}, "epochs": 3, "seed": 42}
    assert suite.append_lines(path, [line, {**line, "seed": 43}]) == 2
    assert suite.append_lines(path, [dict(reversed(list(line.items())))]) == 0  # key order does not matter
    assert suite.append_lines(path, [{**line, "metrics": {"accuracy": 0.6}}]) == 1  # a redone run
    assert len(path.read_text().splitlines()) == 3


def test_cells_are_mean_and_sample_std_times_100(suite):
    assert suite.cell([0.8, 0.82, 0.84]) == "82.00 ± 2.00"
    assert suite.cell([0.8284]) == "82.84"
    assert suite.cell([]) == "–"


@pytest.mark.slow
def test_suite_end_to_end_on_tiny_models(tmp_path):
    """Teacher + four rows x two seeds on the MRPC fixture; a rerun trains nothing and appends nothing;
    a run stopped before metrics.json is resumed from its checkpoint."""
    jsonl, md = tmp_path / "quality.jsonl", tmp_path / "quality.md"
    args = [
        sys.executable, str(SCRIPT), "--tasks", "mrpc", "--seeds", "42", "43", "--epochs", "1",
        "--teacher", "tiny", "--student", "tiny", "--data-dir", str(FIXTURES), "--out", str(tmp_path / "runs"),
        "--jsonl", str(jsonl), "--md", str(md), "--extra", "task.max_train_samples=16", "task.max_eval_samples=12",
        "train.max_steps=2", "train.batch_size=8", "train.num_threads=1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}

    def run_suite() -> str:
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    first = run_suite()
    assert first.count("$ fadkd ") == 9  # teacher + 4 rows x 2 seeds
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(lines) == 9
    assert {(x["row"], x["seed"]) for x in lines} == {("teacher", 42)} | {(r, s) for r in ROWS[1:] for s in (42, 43)}
    for x in lines:
        assert set(x) == SCHEMA | {"best_metrics", "best_step", "params"} and x["task"] == "mrpc" and x["epochs"] == 1
        assert set(x["metrics"]) == {"accuracy", "f1"} and all(0 <= v <= 1 for v in x["metrics"].values())
        assert x["command"].startswith("fadkd finetune model=tiny " if x["row"] == "teacher" else "fadkd train ")
        assert f"hydra.run.dir={tmp_path}/runs/mrpc/" in x["command"] and x["commit"] and "cores" in x["machine"]
    kd = next(x for x in lines if x["row"] == "kd_only" and x["seed"] == 43)
    assert "experiment=ablation_kd_only" in kd["command"] and "train.seed=43" in kd["command"]
    # One cache folder per task: features_only and full share an entry, kd_only (logits only) has its own.
    entries = [p for p in (tmp_path / "runs" / "mrpc" / "teacher_cache").iterdir() if (p / "meta.json").is_file()]
    assert len(entries) == 2
    table = md.read_text()
    for label in ("teacher", "student alone", "KD only", "features only", "full"):
        assert f"| {label} |" in table
    assert "MRPC accuracy" in table and "MRPC f1" in table and "MRPC dev s" in table and " ± " in table

    again = run_suite()
    assert "$ fadkd " not in again and len(jsonl.read_text().splitlines()) == 9

    stopped = tmp_path / "runs" / "mrpc" / "full" / "seed43"
    (stopped / "metrics.json").unlink()
    resumed = run_suite()
    assert resumed.count("$ fadkd ") == 1 and "train.resume=true" in resumed
    assert (stopped / "metrics.json").is_file() and len(jsonl.read_text().splitlines()) == 9

    # Another machine: the folders are gone, quality.jsonl holds every run, so nothing trains (not even the
    # teacher) and the table still has every row; a recorded run made with other overrides trains again.
    shutil.rmtree(tmp_path / "runs")
    elsewhere = run_suite()
    assert "$ fadkd " not in elsewhere and "8 run(s) recorded" in elsewhere
    assert md.read_text().count(" ± ") == table.count(" ± ") and len(jsonl.read_text().splitlines()) == 9
    args[args.index("train.max_steps=2")] = "train.max_steps=1"
    assert "$ fadkd " in subprocess.run([*args, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_pruned_students_run_as_a_shrink_suite(tmp_path):
    """`make quality-pruned`'s form on tiny models: the teacher fine-tuned, then student=pruned rows (alone, KD and
    the recipe on teacher-labelled rows), each student pruned from that teacher, its report in the run folder."""
    jsonl = tmp_path / "quality.jsonl"
    args = [
        sys.executable, str(SCRIPT), "--shrink", "--tasks", "sst2", "--seeds", "42", "--epochs", "1",
        "--teacher", "tiny", "--student", "pruned", "--data-dir", str(FIXTURES), "--out", str(tmp_path / "runs"),
        "--jsonl", str(jsonl), "--md", str(tmp_path / "q.md"), "--student-label", "tiny, pruned in width",
        "--student-extra", "student.prune.ffn=16", "student.prune.calibration_rows=8",
        "--extra", "task.max_train_samples=10", "task.max_eval_samples=8", "train.max_steps=2", "train.batch_size=4",
        "train.num_threads=1", "--data-extra", "task.augment=0", "task.unlabelled_rows=8",
        "--only", "student_alone", "kd_only_data", "recipe_data", "--no-speed",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {x["row"]: x for x in map(json.loads, jsonl.read_text().splitlines())}
    assert set(lines) == {"teacher", "student_alone", "kd_only_data", "recipe_data"}
    for row in ("student_alone", "kd_only_data", "recipe_data"):
        x = lines[row]
        assert "student=pruned" in x["command"] and "student.prune.ffn=16" in x["command"]
        assert x["student"] == "tiny, pruned in width" and x["params"] < lines["teacher"]["params"]
        report = json.loads((tmp_path / "runs" / "sst2" / row / "seed42" / "prune_report.json").read_text())
        assert report["shape"]["student"]["ffn"] == 16 and report["shape"]["teacher"]["ffn"] == 128
    assert lines["recipe_data"]["features"] and lines["recipe_data"]["data"] and not lines["kd_only_data"]["features"]


def test_resume_command_of_a_finetune_run_uses_finetune(tmp_path):
    """A teacher fine-tuned by the suite prints a resume command that works (report.next_commands)."""
    from fadkd.report.summary import next_commands

    resume = next_commands(tmp_path, ["teacher@student=mpnet-base", "task=mrpc", f"hydra.run.dir={tmp_path}"])[1]
    assert resume == f"fadkd finetune model=mpnet-base task=mrpc train.resume=true hydra.run.dir={tmp_path}"
    assert next_commands(tmp_path, ["task=mrpc"])[1].startswith("fadkd train task=mrpc ")


def test_shrink_rows_pass_the_teacher_to_every_row_and_data_overrides_to_data_rows(suite, tmp_path):
    ns = suite.parse_args(
        ["--shrink", "--tasks", "sst2", "--out", str(tmp_path), "--student", "from-teacher"]
        + ["--student-extra", "student.keep_layers=[0,2,5]", "--data-extra", "task.unlabelled_rows=9"]
    )
    rows = suite.parse_rows(ns.full, ns.rows, ns.shrink)
    assert list(rows) == [
        *("student_alone", "kd_only", "recipe", "kd_only_data", "recipe_data", "kd_only_long", "kd_only_data_long")
    ]
    alone = suite.row_args(ns, "sst2", "student_alone", rows["student_alone"], 42)
    data = suite.row_args(ns, "sst2", "recipe_data", rows["recipe_data"], 42)
    kd = suite.row_args(ns, "sst2", "kd_only", rows["kd_only"], 42)
    teacher = f"teacher.path={tmp_path}/sst2/teacher/student"
    assert teacher in alone and not any(a.startswith("cache") for a in alone)  # the student is built from it
    assert teacher in data and "task.unlabelled_rows=9" in data and "task.unlabelled_rows=9" not in kd
    assert all("student.keep_layers=[0,2,5]" in args for args in (alone, data, kd))
    assert "student.keep_layers=[0,2,5]" not in suite.teacher_args(ns, "sst2")
    # The fair control: KD only with the recipe's epochs (its 2 intermediate + the 3 of --epochs), on the same data.
    long = suite.row_args(ns, "sst2", "kd_only_data_long", rows["kd_only_data_long"], 42)
    assert "train.epochs=5" in long and "task.unlabelled_rows=9" in long and "train.epochs=3" in kd
    variant = suite.row_args(ns, "sst2", "recipe_contrast_data", "recipe_data", 42)
    assert "train.epochs=3" in variant and "task.unlabelled_rows=9" in variant  # a variant on data: its data


def test_run_flags_say_features_and_data():
    from omegaconf import OmegaConf

    def cfg(beta=0.0, augment=0, rows=0, contrast=None):
        loss = {"alpha": 1.0, "beta": beta, "gamma": 0.0, "delta": 0.0, **({"contrast": contrast} if contrast else {})}
        return OmegaConf.create({"loss": loss, "task": {"augment": augment, "unlabelled_rows": rows}})

    spec = importlib.util.spec_from_file_location("glue_suite", SCRIPT)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert suite.run_flags(cfg()) == {"features": False, "data": False}
    assert suite.run_flags(cfg(beta=1.0, augment=4)) == {"features": True, "data": True}
    assert suite.run_flags(cfg(rows=10, contrast=0.5)) == {"features": True, "data": True}
    assert suite.is_data_row("recipe_contrast_data") and not suite.is_data_row("recipe_contrast")


def test_paired_differences_match_seeds(suite):
    def line(row, seed, acc):
        return {"task": "sst2", "row": row, "seed": seed, "metrics": {"accuracy": acc}}

    lines = [line("student_alone", 42, 0.80), line("student_alone", 43, 0.82), line("kd_only", 43, 0.85)]
    lines += [line("kd_only", 42, 0.79), line("kd_only", 44, 0.99)]  # seed 44 has no baseline
    diffs = suite.paired_differences(lines, "sst2", "kd_only", "student_alone")
    assert [s for s, _ in diffs] == [42, 43] and [d for _, d in diffs] == pytest.approx([-1, 3])
    ns = suite.parse_args(["--tasks", "sst2"])
    text = "\\n".join(suite.paired_section(ns, lines))
    assert "| sst2 | kd_only − student_alone | 42: -1.00, 43: +3.00 | +1.00 ± 2.83 |" in text
    # A feature row on data is measured against the better of the two KD rows on the same data.
    lines += [line("kd_only_data", 42, 0.86), line("kd_only_data_long", 42, 0.88), line("recipe_x_data", 42, 0.89)]
    text = "\n".join(suite.paired_section(ns, lines))
    assert "| sst2 | recipe_x_data − kd_only_data_long (the better KD on this data) | 42: +1.00 | +1.00 |" in text
    assert "| sst2 | recipe_x_data − kd_only_data | 42: +3.00 | +3.00 |" in text


def test_shrink_summary_bar_is_the_three_task_mean_of_paired_differences(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("shrink_summary", ROOT / "scripts" / "shrink_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    metric = {"sst2": "accuracy", "mrpc": "f1", "cola": "matthews_correlation"}

    def line(task, row, seed, value, out="outputs/shrink"):
        command = f"fadkd train x=1 hydra.run.dir={out}/{task}/{row}/seed{seed}"
        return {
            "suite": "shrink",
            "task": task,
            "row": row,
            "seed": seed,
            "metrics": {metric[task]: value},
            "command": command,
        }

    lines = [line(t, "teacher", 42, 0.8) for t in metric]
    # The teacher that teaches is its saved (best dev) checkpoint: the ratio and its row read best_metrics.
    lines[2] |= {"metrics": {"matthews_correlation": 0.75}, "best_metrics": {"matthews_correlation": 0.8}}
    for task, gain in (("sst2", 0.01), ("mrpc", 0.02), ("cola", 0.03)):
        for seed in (42, 43):
            lines += [line(task, "student_alone", seed, 0.70), line(task, "recipe_data", seed, 0.70 + gain)]
    lines.append(line("sst2", "student_alone", 42, 0.99, out="outputs/other"))  # another suite's run: not read
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    read = summary.read_lines(jsonl, "outputs/shrink")
    assert len(read) == len(lines) - 1
    parts, total = summary.three_task_paired(read, "recipe_data", "student_alone")
    assert total == pytest.approx(2.0) and "mrpc +2.00 (n=2)" in parts
    _, missing = summary.three_task_paired(read, "recipe_data", "kd_only")
    assert missing is None  # no kd_only row anywhere: no mean shown
    text = "\n".join(summary.table(read, ["teacher", "student_alone", "recipe_data"]))
    assert (
        "| recipe + teacher-labelled data |  |  | 71.00 ± 0.00 | 72.00 ± 0.00 | 73.00 ± 0.00 | 72.00 | 90.0 |" in text
    )
    assert "| 80.00 | 80.00 | 80.00 | 80.00 | – |" in text  # the teacher's row
    verdicts = "\n".join(summary.bar(read, ["recipe_data"]))
    assert "| +2.00 | ≥ +1.5: met so far (a task has 2 seeds: not a claim) |" in verdicts  # 3 seeds make a claim


def test_term_magnitudes_average_each_term_in_its_own_stage(suite, tmp_path):
    steps = tmp_path / "steps.jsonl"
    rows = [
        {"step": 1, "loss": 9, "cos": 0.2, "mse": 4.0, "kd": 0.0, "feature_scale": 1.0, "prediction_scale": 0.0},
        {"step": 2, "loss": 9, "cos": 0.4, "mse": 2.0, "kd": 0.0, "feature_scale": 1.0, "prediction_scale": 0.0},
        {"step": 3, "loss": 9, "cos": 0.0, "kd": 0.01, "ce": 0.5, "feature_scale": 0.0, "prediction_scale": 1.0},
        {
            "step": 4,
            "loss": 9,
            "kd": 0.03,
            "ce": 0.7,
            "pair/0-1/cos": 5.0,
            "feature_scale": 0.0,
            "prediction_scale": 1.0,
        },
    ]
    steps.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = suite.term_magnitudes(steps)
    assert got == pytest.approx({"cos": 0.3, "mse": 3.0, "kd": 0.02, "ce": 0.6})
