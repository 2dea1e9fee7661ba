"""Every command in README.md's code blocks runs in a test or in CI, verbatim.

The README's indented (or fenced) code blocks are commands, except the two text blocks named below
(the loss formula and the file tree). Each command must be a key of CHECKS, which says how it is
checked: CI runs it (`.ci/run`), a test runs it, or, for the expensive ones, the test checks that the
Makefile target exists and that what it would run composes (a dry run). A command the README gains
without an entry here, or an entry whose command left the README, fails `test_every_command_is_checked`.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
TEXT_BLOCKS = ("L = ", "fadkd/\n")  # the loss formula and the file tree: text, not commands

# How each README command is checked: "ci" (a line of .ci/run), "run" (executed below), "target" (a
# Makefile target, printed with make -n), "dry-run" (the Makefile target's suite run with --dry-run).
CHECKS = {
    "make install": "ci",
    "make test": "ci",
    "make demo": "run",
    ".venv/bin/fadkd --help": "run",
    ".venv/bin/fadkd train --help": "run",
    ".venv/bin/fadkd train --cfg job": "run",
    ".venv/bin/fadkd train train.max_steps=4 task.max_train_samples=32": "run",
    "make models": "target",
    "make quality-fast TASK=cola": "dry-run",
    "make quality-fast-summary": "target",
}
SLOW = {"make demo", ".venv/bin/fadkd train train.max_steps=4 task.max_train_samples=32"}


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's code blocks: 4-space indented blocks and ``` fences."""
    blocks, current, fenced = [], [], False
    for line in [*text.splitlines(), ""]:
        if line.startswith("```"):
            if current:  # the end of a fenced block, or of an indented one just before a fence
                blocks.append(current)
                current = []
            fenced = not fenced
        elif fenced:
            current.append(line)
        elif line.startswith("    ") or (current and not line.strip()):
            current.append(line[4:])
        elif current:
            blocks.append(current)
            current = []
    commands = []
    for block in blocks:
        body = "\n".join(block).strip("\n")
        if not body or body.startswith(TEXT_BLOCKS):
            continue
        joined = re.sub(r"\s*\\\n\s*", " ", body)  # continuation lines
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


def test_the_parser_finds_commands_and_skips_text():
    text = "intro\n\n    make demo\n    .venv/bin/fadkd train a=1 \\\n        b=2\n\nprose\n\n    L = α·KL\n"
    text += "\n```\nmake models\n```\n\n    fadkd/\n      cli.py   verbs\n"
    assert readme_commands(text) == ["make demo", ".venv/bin/fadkd train a=1 b=2", "make models"]


def test_every_command_is_checked():
    found = readme_commands(README.read_text())
    unknown = [c for c in found if c not in CHECKS]
    assert not unknown, f"README commands no test checks (add them to CHECKS in {__file__}): {unknown}"
    gone = [c for c in CHECKS if c not in found]
    assert not gone, f"CHECKS lists commands the README no longer has: {gone}"


def test_ci_runs_the_set_up_commands():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in (c for c, how in CHECKS.items() if how == "ci"):
        assert command in ci, f"{command!r} is in the README but not a line of .ci/run"


def _make_dry(*args: str) -> str:
    """What `make <args>` would run, without the install step (-o: take the venv's stamp as made)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`
    proc = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_expensive_targets_exist():
    for command in (c for c, how in CHECKS.items() if how in ("target", "dry-run")):
        args = shlex.split(command)
        assert args[0] == "make"
        assert _make_dry(*args[1:]).strip(), f"`{command}` runs nothing"
    assert "scripts/fetch_models.py" in _make_dry("models")


def _suite_command(command: str, out: Path) -> list[str]:
    """The glue_suite.py command a README `make quality-*` line runs, writing under `out`, as a dry run."""
    lines = re.sub(r"\s*\\\n\s*", " ", _make_dry(*shlex.split(command)[1:])).strip().splitlines()
    line = next(line for line in lines if "scripts/glue_suite.py" in line)
    args = shlex.split(line)
    assert args[:2] == [".venv/bin/python", "scripts/glue_suite.py"], line
    return [sys.executable, *args[1:], "--out", str(out), "--md", str(out / "table.md"), "--dry-run"]


def _dry_run(tmp_path: Path) -> list[list[str]]:
    """Run the README's quality-shrink line as a dry run; return the fadkd commands it would run."""
    command = next(c for c, how in CHECKS.items() if how == "dry-run")
    tmp_path.mkdir(exist_ok=True)
    proc = subprocess.run(_suite_command(command, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("$ fadkd ")]
    assert runs and not any(tmp_path.iterdir()), "a dry run trains nothing and writes nothing"
    return runs


def test_quality_shrink_is_a_dry_run_of_known_rows(tmp_path):
    runs = _dry_run(tmp_path)
    assert [r[1] for r in runs][:2] == ["finetune", "train"]
    assert len(runs) == 1 + 7 * 3  # the teacher once, then seven rows (five + the two _long controls) per seed


@pytest.mark.slow
def test_quality_shrink_commands_compose(tmp_path):
    """Every row of the README's quality-shrink line composes into the config schema (--cfg job)."""
    runs = _dry_run(tmp_path / "suite")
    firsts = [r for r in runs if not any(a.startswith("train.seed=") and a != "train.seed=42" for a in r)]
    for args in firsts:
        proc = subprocess.run([sys.executable, "-m", "fadkd", *args[1:], "--cfg", "job"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0 and "teacher:" in proc.stdout, f"{args}\n{proc.stderr}"


def _run_in(tmp_path: Path, command: str) -> subprocess.CompletedProcess:
    """Run a README line verbatim in a fresh folder that has the repository's .venv (or this Python's fadkd)."""
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    fadkd = ROOT / ".venv" / "bin" / "fadkd"
    if fadkd.exists():
        (venv_bin / "fadkd").symlink_to(fadkd)
    else:  # tests run from another environment: the same CLI through this interpreter
        (venv_bin / "fadkd").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fadkd "$@"\n')
        (venv_bin / "fadkd").chmod(0o755)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    return subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


FAST_RUNS = [c for c, how in CHECKS.items() if how == "run" and c not in SLOW and c.startswith(".venv/")]
SLOW_RUNS = [c for c, how in CHECKS.items() if how == "run" and c in SLOW and c.startswith(".venv/")]


@pytest.mark.parametrize("command", FAST_RUNS)
def test_cheap_commands_run(tmp_path, command):
    proc = _run_in(tmp_path, command)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip()  # --help, --cfg job: they print what they say


@pytest.mark.slow
@pytest.mark.parametrize("command", SLOW_RUNS)
def test_short_runs_run(tmp_path, command):
    proc = _run_in(tmp_path, command)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.glob("outputs/*/*/metrics.json")), "the run wrote its folder under ./outputs"


@pytest.mark.slow
def test_make_demo_prints_the_three_rows(tmp_path):
    assert CHECKS["make demo"] == "run"
    env = {**os.environ, "DEMO_OUT": str(tmp_path / "demo"), "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    proc = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.rindex("SST-2 sample, dev accuracy") :]
    for row in ("teacher", "student alone", "distilled student"):
        assert re.search(rf"^{row}\s.*\d\.\d{{4}}", table, re.M), f"no row {row!r} with an accuracy in:\n{table}"
    for run in ("teacher", "student_alone", "distilled"):
        assert (tmp_path / "demo" / run / "metrics.json").is_file()


def test_every_config_group_is_in_the_readme():
    """The README's config table names every group folder of conf/ (a new group needs its row)."""
    text = README.read_text()
    groups = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir())
    assert groups and all(f"| `{g}/` |" in text for g in groups), [g for g in groups if f"| `{g}/` |" not in text]


def test_links_between_the_pages_resolve():
    """Every relative link of README.md and docs/*.md names a file or folder that exists."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#", 1)[0]
            if path and not re.match(r"[a-z]+://", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
