"""bench/gpu/run.sh: its dry run (every part on CPU, tiny models) writes what the GPU run would, and parses."""

import json
import math
import os
import subprocess

import pytest
from conftest import ROOT

SCRIPT = ROOT / "bench" / "gpu" / "run.sh"
SPEED_METHODS = {"floor", "floor_fused", "fadkd_full", "fadkd_full_protocol_adamw", "fadkd_cached"}
VARIANTS = {"fadkd_contrast", "fadkd_dkd", "fadkd_magnitude", "fadkd_gradnorm"}  # one term added or changed each
PEERS = {"textbrewer", "torchdistill"}


def _run(tmp_path, *args, **env):
    env = {**os.environ, "WORK": str(tmp_path / "work"), "RESULTS": str(tmp_path / "results"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def test_refuses_an_unknown_argument(tmp_path):
    done = _run(tmp_path, "--bogus")
    assert done.returncode == 2 and "unknown argument '--bogus'" in done.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_the_gpu_run_without_a_gpu_says_so(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 1 and "torch sees no CUDA GPU here" in done.stdout
    assert not (tmp_path / "results" / "speed_gpu.md").exists()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_dry_run")
    done = _run(tmp, "--dry-run", BUDGET="1500", OUT=str(tmp / "out"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return tmp, done.stdout


def _jsonl(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines
    return lines


@pytest.mark.slow
def test_dry_run_speed_table(dry_run):
    tmp, out = dry_run
    page = (tmp / "results" / "speed_gpu.md").read_text()
    for field in ("- commit: `", "- machine: ", "- device: cpu", "- dtype: bf16 (autocast", "- weights: random"):
        assert field in page, field
    records = _jsonl(tmp / "results" / "speed_gpu.jsonl")
    peers = {p for p in PEERS if (ROOT / f".venv-{p}" / "bin" / "python").exists()}  # `make bench-peers`
    assert {r["method"] for r in records} == SPEED_METHODS | VARIANTS | peers
    for r in records:
        assert (r["device"], r["dtype"], r["steps"], r["weights"]) == ("cpu", "bf16", 3, "random (from config.json)")
        assert math.isfinite(r["median_step_s"]) and r["median_step_s"] > 0 and math.isfinite(r["ratio_vs_floor"])
        assert f"| {r['method']} | " in page  # every method has a row in the table (the round is kept)
    assert "speed: done" in out


@pytest.mark.slow
def test_dry_run_lm_table(dry_run):
    tmp, out = dry_run
    page = (tmp / "results" / "lm_glue_text_gpu.md").read_text()
    assert "- device: cpu; precision: bf16" in page and "| kd_only | 42, 43 |" in page and "| full | 42, 43 |" in page
    lines = _jsonl(tmp / "results" / "lm_gpu.jsonl")
    assert [(x["row"], x["seed"]) for x in lines] == [
        ("teacher", None), ("student_init", 42), ("kd_only", 42), ("kd_only", 43), ("full", 42), ("full", 43)
    ]  # fmt: skip
    for x in lines:
        assert (x["device"], x["precision"]) == ("cpu", "bf16")
        assert math.isfinite(x["metrics"]["perplexity"]) and x["metrics"]["perplexity"] > 1
        assert x["train_tokens"] == (
            0 if x["row"] in ("teacher", "student_init") else 2 * 2 * 16
        )  # steps x batch x block
    assert "lm: done" in out


@pytest.mark.slow
def test_dry_run_copies_to_out_and_sums_up(dry_run):
    tmp, out = dry_run
    copied = sorted(p.name for p in (tmp / "out").iterdir())
    assert copied == ["lm_glue_text_gpu.md", "lm_gpu.jsonl", "run.log", "speed_gpu.jsonl", "speed_gpu.md"]
    assert "=== summary" in out and "DRY RUN on CPU" in out
