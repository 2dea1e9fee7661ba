"""The teacher's one set-up (fadkd/teacher/setup.py) for GLUE classifiers and causal LMs.

Under train.strategy=fsdp the teacher is sharded before its first forward, so every rank must run its dev
evaluation and the cache build's forwards (rank 0 alone writing): a rank left out waits forever, which the
subprocess timeout turns into a failure. A cached GLUE teacher is never loaded.
"""

import json
import subprocess

import pytest
from test_distributed import LM, UNEQUAL, _run, _steps

import fadkd.teacher.glue
from fadkd.config.schema import CacheConfig, Config, TaskConfig, TrainConfig
from fadkd.run.train import train

SHARDED = "teacher sharded over 2 processes before its first forward"


def test_a_cached_glue_teacher_is_not_loaded_once_its_cache_exists(tmp_path, monkeypatch):
    cfg = Config(
        task=TaskConfig(data_dir="sample", max_train_samples=16, max_eval_samples=8),
        train=TrainConfig(max_steps=2, batch_size=8, log_every=1),
        cache=CacheConfig(enabled=True, dir=str(tmp_path / "cache")),
    )
    built = train(cfg, tmp_path / "built")

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its cache exists")

    monkeypatch.setattr(fadkd.teacher.glue, "load_classifier", refuse)
    read = train(cfg, tmp_path / "read")
    assert read["teacher"] == built["teacher"] and read["params"]["teacher"] == built["params"]["teacher"]
    assert [r["loss"] for r in _steps(tmp_path / "read")] == [r["loss"] for r in _steps(tmp_path / "built")]


def _cache_meta(cache_dir) -> dict:
    (meta,) = cache_dir.glob("*/meta.json")  # one cache folder
    return json.loads(meta.read_text())


TEACHER = {"glue": ("accuracy",), "lm": ("perplexity", "nll", "bleu", "rouge_l", "cer")}  # not the throughputs
STUDENT = {"glue": ("accuracy",), "lm": ("perplexity", "cer", "cer_vs_teacher")}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["glue", "lm"])
def test_fsdp_every_rank_joins_the_sharded_teachers_dev_metrics_and_cache_build(tmp_path, family):
    args = [*(LM if family == "lm" else UNEQUAL), "cache.enabled=true"]
    one = _run([*args, f"cache.dir={tmp_path / 'c1'}", f"hydra.run.dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stdout + one.stderr
    fsdp = [*args, "train.strategy=fsdp", f"cache.dir={tmp_path / 'c2'}"]
    try:  # a rank that skips one of the sharded teacher's forwards leaves the others waiting: a timeout
        two = _run([*fsdp, f"hydra.run.dir={tmp_path / 'two'}"], nproc=2, timeout=300)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"the 2-process fsdp run did not finish (deadlock?):\n{err.stdout}") from None
    assert two.returncode == 0, two.stdout + two.stderr
    out = two.stdout
    assert SHARDED in out and out.index(SHARDED) < out.index("teacher cache: ")  # sharded before its build

    # The sharded teacher's pass wrote exactly what one process's did, and scored the same on dev.
    assert _cache_meta(tmp_path / "c2")["files"] == _cache_meta(tmp_path / "c1")["files"]
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    for key in TEACHER[family]:
        assert m2["teacher"][key] == pytest.approx(m1["teacher"][key], rel=1e-6), key
    for key in STUDENT[family]:  # the sharded student, evaluated by every rank
        assert m2["student"][key] == pytest.approx(m1["student"][key], rel=1e-4), key
    for ra, rb in zip(_steps(tmp_path / "one"), _steps(tmp_path / "two"), strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4), ra["step"]
    if family == "lm":  # rank 0 alone wrote the reference continuations
        assert (tmp_path / "two" / "teacher_generations.jsonl").read_text() == (
            tmp_path / "one" / "teacher_generations.jsonl"
        ).read_text()

    # Read again: GLUE's cache holds the teacher's dev metrics, so no rank loads (or shards) it.
    written = next((tmp_path / "c2").glob("*/meta.json")).stat().st_mtime_ns
    again = _run([*fsdp, f"hydra.run.dir={tmp_path / 'again'}"], nproc=2, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "teacher cache: reading" in again.stdout
    assert next((tmp_path / "c2").glob("*/meta.json")).stat().st_mtime_ns == written  # not built again
    assert (SHARDED in again.stdout) == (family == "lm")  # a causal LM's teacher is still scored once
    assert len(list((tmp_path / "c2").iterdir())) == 1
