"""One run, several processes: torchrun + DistributedDataParallel (gloo on CPU)."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from fadkd.data.batches import EpochSampler
from fadkd.errors import FadkdError
from fadkd.run import strategy
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], nproc: int = 1, env: dict | None = None, timeout: int = 300, rdzv: bool = False):
    launcher = [sys.executable]
    if nproc > 1 and rdzv:  # the multi-node form of docs/scaling-and-speed.md, on one node
        launcher += ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}", "--rdzv-backend=c10d",
                     f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=fadkd-test"]  # fmt: skip
    elif nproc > 1:
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
    args = [*UNEQUAL, "train.checkpoint_every=6", f"train.strategy={strategy}", f"hydra.run.dir={two}"]
    proc = _run(args, nproc=2, env=_env(PYTHONWARNINGS="default"), rdzv=strategy == "fsdp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "UserWarning" not in proc.stdout + proc.stderr  # FSDP2's "returned a view tensor" (run/sharding.py)
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


def _dcp_tensors(checkpoint, tmp_path) -> dict:
    """A sharded (DCP) checkpoint's tensors as one plain dict (model and optimizer state)."""
    out = tmp_path / f"{checkpoint.parent.parent.name}.pt"
    dcp_to_torch_save(checkpoint / "sharded", out)
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, torch.Tensor):
            flat[prefix] = node

    walk("", torch.load(out, weights_only=False))
    return flat


FSDP = [*UNEQUAL, "train.strategy=fsdp", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def fsdp_straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "straight"
    proc = _run([*FSDP, f"hydra.run.dir={out}"], nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _killed_at_step_3(run) -> None:
    env = _env(FADKD_FAULT_KILL_AT_STEP="3", FADKD_FAULT_RANK="0")  # rank 0 dies after step 3's update
    assert _run([*FSDP, f"hydra.run.dir={run}"], nproc=2, env=env).returncode != 0
    assert (run / "checkpoints" / "step-00000002" / "sharded" / ".metadata").is_file()


@pytest.mark.slow
def test_fsdp_resume_is_exact(tmp_path, fsdp_straight):
    killed = tmp_path / "killed"
    _killed_at_step_3(killed)
    resumed = _run([*FSDP, "train.resume=true", f"hydra.run.dir={killed}"], nproc=2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout and "resharded" not in resumed.stdout
    assert [r["loss"] for r in _steps(killed)] == [r["loss"] for r in _steps(fsdp_straight)]
    final = "checkpoints/step-00000006"
    a, b = _dcp_tensors(fsdp_straight / final, tmp_path), _dcp_tensors(killed / final, tmp_path)
    assert a.keys() == b.keys() and any(".student." in k for k in a) and any("exp_avg" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (killed / "student" / "model.safetensors").is_file()  # one ordinary HF folder


@pytest.mark.slow
def test_fsdp_resume_on_another_number_of_processes_reshards(tmp_path, fsdp_straight):
    killed = tmp_path / "killed"
    _killed_at_step_3(killed)
    resumed = _run([*FSDP, "train.resume=true", f"hydra.run.dir={killed}"])  # 1 process reads 2 ranks' shards
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resharded: step-00000002 was written by 2 processes and is read by 1" in resumed.stdout
    for ra, rb in zip(_steps(fsdp_straight), _steps(killed)):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4), ra["step"]


LM = [
    "task=lm_sst2", "teacher=tiny-llama", "student=tiny-llama-half", "task.max_train_samples=48",
    "task.max_eval_samples=12", "task.eval_samples=6", "task.max_new_tokens=6", "task.block_size=32",
    "train.batch_size=4", "train.log_every=1", "train.max_steps=4", "train.eval_every=2", "train.num_threads=1",
]  # fmt: skip


@pytest.mark.slow
def test_causal_lm_under_fsdp_trains_and_evaluates_as_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run([*LM, f"hydra.run.dir={one}"]).returncode == 0
    proc = _run([*LM, "train.strategy=fsdp", f"hydra.run.dir={two}"], nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for ra, rb in zip(_steps(one), _steps(two), strict=True):
        for key in ("loss", "kd", "cos", "ce", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), (ra["step"], key)
    evals = [[json.loads(line) for line in (d / "evals.jsonl").read_text().splitlines()] for d in (one, two)]
    for ea, eb in zip(*evals, strict=True):  # every rank evaluates the sharded student, generation included
        for key in ("perplexity", "cer", "cer_vs_teacher"):
            assert eb[key] == pytest.approx(ea[key], rel=1e-4), key
    wa, wb = (load_file(d / "student" / "model.safetensors") for d in (one, two))
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-5, rtol=1e-4) for k in wa)


@pytest.mark.slow
@pytest.mark.skipif(not strategy.cpu_has_bf16(), reason="this CPU has no bf16 instructions (fsdp refuses bf16 there)")
def test_fsdp_with_bf16_parameters_and_fp32_reduction_trains_close_to_fp32(tmp_path, one_process):
    args = [a for a in UNEQUAL if not a.startswith("train.max_steps")]
    proc = _run([*args, "train.max_steps=2", "train.strategy=fsdp", "train.precision=bf16",
                 f"hydra.run.dir={tmp_path}"], nproc=2)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, rows = _steps(one_process)[0], _steps(tmp_path)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert rows[0]["loss"] == pytest.approx(first["loss"], rel=2e-2)  # bf16 rounding, not fp32's exactness


@pytest.mark.slow
def test_gradnorm_factors_are_the_global_batch_ones_on_every_rank(tmp_path):
    """loss.balance=gradnorm sums the squared gradient norms over the ranks before the ratio, so with unequal
    shards the factors (averaged over ranks in the log) and the weights are those of one process (DDP; FSDP is
    refused, docs/errors.md gradnorm-fsdp)."""
    one, two = tmp_path / "one", tmp_path / "two"
    args = [*UNEQUAL, "loss.balance=gradnorm", "train.checkpoint_every=6"]
    single = _run([*args, f"hydra.run.dir={one}"])
    assert single.returncode == 0, single.stdout + single.stderr
    proc = _run([*args, f"hydra.run.dir={two}"], nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = _steps(one), _steps(two)
    assert len(a) == len(b) == 6 and all(f"balance_{t}" in a[0] for t in ("kd", "cos", "mse", "attn"))
    for ra, rb in zip(a, b):
        for key in ("loss", "balance_kd", "balance_cos", "balance_mse", "balance_attn", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), (ra["step"], key)
    wa, wb = _final_weights(one), _final_weights(two)
    # The keys' bias has a gradient of 0 in exact arithmetic (softmax ignores a shift of a row): rounding noise
    # times balance_attn (~1e4 here) is all it gets, and AdamW turns any noise into steps of size lr.
    for key in [k for k in wa if not k.endswith("attention.self.key.bias")]:
        assert torch.allclose(wa[key], wb[key], atol=1e-5, rtol=1e-4), key
