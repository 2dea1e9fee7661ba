"""One run, several processes: torchrun + DistributedDataParallel (gloo on CPU)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

from fadkd.data.batches import EpochSampler
from fadkd.errors import FadkdError
from fadkd.run.distributed import Dist, local_batch_size

# 24 rows of at least 10 tokens each, cut to 10: every row and every rank holds the same number of
# real tokens, so the token-averaged terms (cos, mse, attn) of 2 ranks average to the 1-process value.
# 24 rows / global batch 8 = 3 steps an epoch: 6 steps cross an epoch boundary. No dropout.
RUN = [
    "task.max_train_samples=24",
    "task.max_eval_samples=8",
    "task.max_length=10",
    "train.max_steps=6",
    "train.batch_size=8",
    "train.log_every=1",
    "train.num_threads=1",
    "student.dropout=0",
    "teacher.dropout=0",
]


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0", **extra}


def _run(args: list[str], nproc: int = 1, env: dict | None = None, timeout: int = 300):
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(
        [*launcher, "-m", "fadkd", "train", *args], cwd=ROOT, env=env or _env(),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def long_rows(tmp_path_factory):
    """An SST-2 folder whose training rows all have at least 12 words (so >= 10 tokens)."""
    root = tmp_path_factory.mktemp("glue")
    sample = ROOT / "fadkd" / "assets" / "glue_sample" / "SST-2"
    header, *rows = (sample / "train.tsv").read_text().splitlines()
    long = [r for r in rows if len(r.split("\t")[0].split()) >= 12]
    assert len(long) >= 24
    (root / "SST-2").mkdir()
    (root / "SST-2" / "train.tsv").write_text("\n".join([header, *long]) + "\n")
    (root / "SST-2" / "dev.tsv").write_text((sample / "dev.tsv").read_text())
    return root


def test_shards_interleave_into_the_global_batches():
    for rows, world, batch, start in [(24, 2, 8, 0), (24, 2, 8, 8), (23, 2, 8, 16), (21, 4, 8, 8), (5, 4, 4, 4)]:
        one = EpochSampler(rows, seed=3)
        one.set_epoch(1, start=start)
        order = list(one)
        shards = []
        for rank in range(world):
            sampler = EpochSampler(rows, seed=3, rank=rank, world_size=world)
            sampler.set_epoch(1, start=start)
            shards.append(list(sampler))
            assert len(sampler) == len(shards[-1]) == len(shards[0])  # every rank as many rows
        per_rank = batch // world
        for k in range(len(order) // batch):  # full global batches: exactly the 1-process rows
            merged = [i for shard in shards for i in shard[k * per_rank : (k + 1) * per_rank]]
            assert sorted(merged) == sorted(order[k * batch : (k + 1) * batch])
        assert set(order) <= {i for shard in shards for i in shard}  # the last, partial batch is padded


def test_global_batch_must_divide_over_the_processes():
    assert local_batch_size(8, Dist(0, 2, 0)) == 4
    with pytest.raises(FadkdError, match="train.batch_size=9 is the global batch, split over 2 processes"):
        local_batch_size(9, Dist(0, 2, 0))


def _steps(run) -> list[dict]:
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path, long_rows):
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*RUN, f"task.data_dir={long_rows}"]
    single = _run([*args, f"hydra.run.dir={one}"])
    assert single.returncode == 0, single.stdout + single.stderr
    ddp = _run([*args, f"hydra.run.dir={two}"], nproc=2)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr

    a, b = _steps(one), _steps(two)
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        for key in ("loss", "kd", "cos", "mse", "attn", "ce", "lr"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    final = "checkpoints/step-00000006"
    for name in ("student.safetensors", "projections.safetensors"):  # projections: averaged gradients too
        wa, wb = load_file(one / final / name), load_file(two / final / name)
        assert wa.keys() == wb.keys() and wa
        for key in wa:
            assert torch.allclose(wa[key], wb[key], atol=1e-5, rtol=1e-4), (name, key)
    # rank 0 alone wrote the run folder; metrics agree
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert mb["steps"] == 6 and mb["student"] == pytest.approx(ma["student"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]

    # The teacher cache: rank 0 builds it (the others wait), then every rank reads it.
    cached, cache_dir = tmp_path / "cached", tmp_path / "cache"
    proc = _run([*args, "cache.enabled=true", f"cache.dir={cache_dir}", f"hydra.run.dir={cached}"], nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 1
    for ra, rc in zip(a, _steps(cached)):  # the cache holds fp16 states and maps
        for key in ("loss", "cos", "mse", "attn"):
            assert rc[key] == pytest.approx(ra[key], rel=1e-2, abs=1e-4), (ra["step"], key)


@pytest.mark.slow
def test_a_failing_rank_ends_the_whole_job_with_its_error(tmp_path, long_rows):
    env = _env(FADKD_FAULT_RAISE_AT_STEP="2", FADKD_FAULT_RANK="1")
    proc = _run([*RUN, f"task.data_dir={long_rows}", f"hydra.run.dir={tmp_path}"], nproc=2, env=env, timeout=240)
    assert proc.returncode != 0
    assert "injected fault at step 2 on rank 1" in proc.stdout + proc.stderr
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_resume_under_torchrun_is_exact(tmp_path, long_rows):
    args = [*RUN, f"task.data_dir={long_rows}", "train.checkpoint_every=2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _run([*args, f"hydra.run.dir={straight}"], nproc=2).returncode == 0
    env = _env(FADKD_FAULT_KILL_AT_STEP="3", FADKD_FAULT_RANK="0")  # rank 0 dies after step 3's update
    assert _run([*args, f"hydra.run.dir={killed}"], nproc=2, env=env).returncode != 0
    resumed = _run([*args, "train.resume=true", f"hydra.run.dir={killed}"], nproc=2)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr
    assert [r["loss"] for r in _steps(killed)] == [r["loss"] for r in _steps(straight)]
    final = "checkpoints/step-00000006"
    for name in ("student.safetensors", "projections.safetensors"):
        a, b = load_file(straight / final / name), load_file(killed / final / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


# The shipped SST-2 sample: rows of different lengths, so the two ranks' shards hold different numbers of real
# tokens (and of feature rows, attention entries, labels); every term is normalised over the global batch.
UNEQUAL = [a for a in RUN if not a.startswith("task.max_length")]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    proc = _run([*UNEQUAL, "train.checkpoint_every=6", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_with_unequal_tokens_train_exactly_as_one(tmp_path, one_process, strategy):
    two = tmp_path / "two"
    proc = _run([*UNEQUAL, "train.checkpoint_every=6", f"train.strategy={strategy}", f"hydra.run.dir={two}"], nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = _steps(one_process), _steps(two)
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):
        # grad_norm (before clipping) catches gradients summed instead of averaged (torch issue #162338)
        for key in ("loss", "kd", "cos", "mse", "attn", "ce", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), (ra["step"], key)
    wa, wb = _final_weights(one_process), _final_weights(two)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-5, rtol=1e-4), key


def _final_weights(run) -> dict:
    """The trained student and projections, from the saved student/ folder and projections.safetensors."""
    student = load_file(run / "student" / "model.safetensors")
    return {**student, **{f"proj.{k}": v for k, v in load_file(run / "projections.safetensors").items()}}
