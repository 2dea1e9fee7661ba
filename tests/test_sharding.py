"""train.strategy=fsdp: what is refused or noted before any work, and what FSDP2 shards (2 gloo processes)."""

import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import LlamaConfig, LlamaForCausalLM

from fadkd.errors import FadkdError
from fadkd.run import strategy
from fadkd.run.checkpoint import TrainState, save_checkpoint
from fadkd.run.distributed import Dist
from fadkd.run.parts import find_checkpoint
from fadkd.run.sharding import blocks, make_mesh, shard_student, shard_teacher
from fadkd.run.step import StudentLoss

CPU = torch.device("cpu")


def _cfg(strategy_name="fsdp", precision="fp32", resume=False):
    train = SimpleNamespace(strategy=strategy_name, precision=precision, resume=resume)
    return SimpleNamespace(train=train, loss=SimpleNamespace(balance="none"))


def test_fsdp_in_one_process_runs_unsharded_with_one_note():
    notes = []
    assert strategy.check_strategy(_cfg(), Dist(), CPU, notes.append) is False
    assert len(notes) == 1 and "nothing is sharded" in notes[0] and "torchrun" in notes[0]
    notes.clear()
    assert strategy.check_strategy(_cfg("ddp"), Dist(0, 2, 0), CPU, notes.append) is False and not notes
    assert strategy.check_strategy(_cfg(), Dist(0, 2, 0), CPU, notes.append) is True and not notes


def test_bf16_shards_on_a_cpu_without_bf16_are_refused(monkeypatch):
    monkeypatch.setattr(strategy, "cpu_has_bf16", lambda: False)
    with pytest.raises(FadkdError, match="train.precision=bf16 keeps the gathered parameters in bf16, but this CPU"):
        strategy.check_strategy(_cfg(precision="bf16"), Dist(0, 2, 0), CPU, print)
    monkeypatch.setattr(strategy, "cpu_has_bf16", lambda: True)
    assert strategy.check_strategy(_cfg(precision="bf16"), Dist(0, 2, 0), CPU, print) is True


def test_a_model_without_findable_blocks_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.config = SimpleNamespace(num_hidden_layers=3)
    with pytest.raises(FadkdError, match="train.strategy=fsdp shards the student block by block, but no list of its 3"):
        blocks(model, "student")


def test_a_checkpoint_of_the_other_strategy_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(tmp_path / "checkpoints", TrainState(step=2), model, torch.nn.Module(), optimizer, scheduler, 2)
    found, _ = find_checkpoint(_cfg("ddp", resume=True), tmp_path)
    assert found is not None and found[1]["strategy"] == "ddp"
    with pytest.raises(FadkdError, match=r"train.strategy=ddp \(full copies\), and this run has train.strategy=fsdp"):
        find_checkpoint(_cfg("fsdp", resume=True), tmp_path)


def _tiny_llama(layers: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _local_numel(module) -> int:
    return sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in module.parameters())


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        student, teacher = _tiny_llama(2), _tiny_llama(4)
        full = (sum(p.numel() for p in student.parameters()), sum(p.numel() for p in teacher.parameters()))
        mesh = make_mesh(CPU, 2)
        forward = StudentLoss(student, torch.nn.Linear(32, 48), layers=None)
        shard_teacher(teacher, mesh, "fp32")
        shard_student(forward, student, forward.loss_fn, mesh, "fp32")
        with torch.no_grad():  # every rank joins the teacher's forward; its outputs are whole
            logits = teacher(torch.arange(8)[None]).logits
        results[rank] = (full, (_local_numel(student), _local_numel(teacher)), teacher.training, logits.shape)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_each_hold_half_of_the_student_and_of_the_frozen_teacher():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=2, join=True)
    (full_s, full_t), _, _, _ = results[0]
    for rank in (0, 1):
        _, (local_s, local_t), training, shape = results[rank]
        assert abs(local_s - full_s / 2) <= 64 and abs(local_t - full_t / 2) <= 64, rank  # dim-0 shards, rounded
        assert training is False and tuple(shape) == (1, 8, 64)
