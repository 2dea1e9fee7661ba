"""The training run, top to bottom: `train(cfg, out_dir)` = `build_run` -> `fit` -> `finish`.

build_run: run folder, seeds, the task family's Setup (GLUE: fadkd/run/glue.py, causal LM:
fadkd/run/lm.py), the loss spec and objective, batches, the teacher (live or cached: fadkd/teacher/setup.py
loads, shards, evaluates and caches it), optimizer and schedule, resume. fit: the loop (one step, log,
evaluate, checkpoint, stop on a signal). finish: metrics.json and the summary. A run folder gets
config.yaml, steps.jsonl (every unweighted loss term, lr, grad norm, samples/s), evals.jsonl, metrics.json,
student/ (the best student by the task's main metric), projections.safetensors and checkpoints/
(`train.resume=true` continues bit for bit). Under torchrun every rank runs this (fadkd/run/distributed.py):
rank 0 alone writes, and every rank calls each evaluation (rank 0 runs it; under fsdp every rank does, since a
sharded forward needs them all).
"""

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from fadkd.config.schema import Config
from fadkd.data.batches import EpochSampler
from fadkd.data.lm_text import LOWER_IS_BETTER, is_lm_task
from fadkd.losses.distill import DistillLoss
from fadkd.losses.projections import param_groups
from fadkd.losses.spec import LossSpec, records_attention, uses_teacher
from fadkd.models import attention
from fadkd.report.runs import overrides_of
from fadkd.report.summary import print_summary, resume_command
from fadkd.run import distributed, sharding
from fadkd.run.checkpoint import TrainState, save_checkpoint
from fadkd.run.folder import prepare_run_dir, run_metrics
from fadkd.run.glue import prepare_glue
from fadkd.run.guards import Interrupts, NonFiniteError, fault_injection
from fadkd.run.lm import prepare_lm
from fadkd.run.logs import RunLog
from fadkd.run.parts import batches, find_checkpoint, fit_on_first_batch, fmt, objective, resume, seed_everything
from fadkd.run.progress import make_console, progress_bar
from fadkd.run.setup import Setup
from fadkd.run.sharded_checkpoint import load_sharded, save_sharded
from fadkd.run.step import StepParts, StudentLoss, build_optimizer, staged_lr, train_step
from fadkd.run.strategy import check_strategy, distribute, save_student
from fadkd.teacher.base import Teacher
from fadkd.teacher.setup import Ranks, score_teacher, set_up_teacher

console = make_console()  # no hard wraps, full-width tables in a log file


@dataclass
class Run:
    """Everything the loop reads, built once."""

    cfg: Config
    out_dir: Path
    dist: distributed.Dist
    device: torch.device
    setup: Setup
    spec: LossSpec
    loss_fn: DistillLoss
    teacher: Teacher | None
    teacher_metrics: dict | None
    parts: StepParts
    sampler: EpochSampler
    loader: DataLoader
    state: TrainState
    checkpoints: Path
    batches_per_epoch: int
    stage1: int  # steps of the intermediate-layer stage (loss.feature_schedule=staged), else 0
    total_steps: int
    sharded: bool = False  # train.strategy=fsdp under torchrun: every rank evaluates, saves and checkpoints
    last: dict | None = None  # the latest dev metrics
    seen: int = 0  # training samples over every rank
    started: float = 0.0

    def evaluate(self) -> dict[str, float]:
        """The student's dev metrics, rank 0's on every rank; every rank calls it (fsdp: every rank runs it)."""
        s = self.setup
        return distributed.on_ranks(lambda: s.evaluate(s.student, s.student_tok), self.dist, self.sharded)

    def save_student(self) -> None:
        s = self.setup
        save_student(self.parts.forward, s.student, s.student_tok, self.loss_fn, self.out_dir, self.dist, self.sharded)

    def checkpoint(self) -> Path | None:
        s, p, keep = self.state, self.parts, self.cfg.train.keep_checkpoints
        if self.cfg.train.strategy == "fsdp":  # DCP: every rank writes its shards (one process: all of them)
            return save_sharded(self.checkpoints, s, p.forward, p.optimizer, p.scheduler, keep, self.dist)
        if not self.dist.is_main:
            return None  # rank 0 writes checkpoints
        return save_checkpoint(self.checkpoints, s, self.setup.student, self.loss_fn, p.optimizer, p.scheduler, keep)


def train(cfg: Config, out_dir: Path) -> dict:
    """Distil cfg.teacher into cfg.student on cfg.task; returns (and writes) metrics.json."""
    run = build_run(cfg, out_dir)
    fit(run)
    return finish(run)


def build_run(cfg: Config, out_dir: Path) -> Run:
    local_batch = distributed.local_batch_size(cfg.train.batch_size, distributed.launched())  # global / ranks
    device = distributed.resolve_device(cfg.train.device)
    sharded = check_strategy(cfg, distributed.launched(), device, console.print)  # train.strategy=fsdp, torchrun
    dist, device = distributed.setup(device)
    ranks = Ranks(dist, sharding.make_mesh(device, dist.world_size) if sharded else None, cfg.train.precision)
    out_dir = distributed.broadcast(out_dir, dist)  # rank 0's run folder is the run's
    console.quiet = not dist.is_main
    if dist.is_main:
        prepare_run_dir(out_dir, cfg)  # locks the folder, checks resume's settings, writes config.yaml
    distributed.barrier(dist)
    found, checkpoints = find_checkpoint(cfg, out_dir)  # train.resume: refused before any work
    hf_logging.disable_progress_bar()  # one progress bar: ours
    seed_everything(cfg.train.seed, cfg.train.num_threads)

    # Data and models. Attention maps come from fadkd's attention function (SDPA returns none).
    attn = attention.NAME if records_attention(cfg) else None  # None: transformers' default (SDPA)
    prepare = prepare_lm if is_lm_task(cfg.task.name) else prepare_glue
    setup = prepare(cfg, attn, device, uses_teacher(cfg), out_dir)
    if setup.teacher is not None and setup.teacher.scored_first:  # a causal LM's, loaded with the student
        score_teacher(setup.teacher, None, ranks, out_dir, console.print)
    spec, loss_fn = objective(cfg, setup, device)
    sampler, loader, batches_per_epoch = batches(cfg, setup, dist, local_batch)  # this rank's share of each batch
    task_steps = cfg.train.max_steps if cfg.train.max_steps >= 0 else cfg.train.epochs * batches_per_epoch
    stage1 = cfg.loss.intermediate_epochs * batches_per_epoch  # feature_schedule=staged: β, γ, δ alone first

    # The teacher, live or cached (fadkd/teacher/setup.py): fsdp shards it at once, and every rank joins its forwards.
    teacher, teacher_metrics = set_up_teacher(setup.teacher, spec, ranks, out_dir, console.print)
    setup.teacher = None  # a cached or only scored teacher's model goes with it
    if found is None:  # a resumed run has both fits in its checkpoint
        fit_on_first_batch(cfg, setup, spec, loss_fn, teacher, device)

    # DDP copies or FSDP shards (then the optimizer, over the shards), the schedule, resume.
    forward = distribute(StudentLoss(setup.student, loss_fn, spec.student_layers), dist, ranks.mesh, ranks.precision)
    student = setup.student
    named_params = [(n, p) for n, p in [*student.named_parameters(), *loss_fn.named_parameters()] if p.requires_grad]
    optimizer = build_optimizer(
        param_groups(student, loss_fn, cfg.train.lr, cfg.loss.projection_lr),
        cfg.train.lr, cfg.train.weight_decay, cfg.train.fused_adamw, device,
    )  # fmt: skip
    if stage1:
        scheduler = staged_lr(optimizer, cfg.train.warmup_ratio, stage1, task_steps)
    else:
        total = stage1 + task_steps
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total), total)
    if cfg.train.strategy == "fsdp" and found is not None:  # DCP, resharded to this run's processes
        state = load_sharded(*found, forward, optimizer, scheduler, dist, console.print)
        console.print(f"resumed from {found[0]} (step {state.step})")
    else:
        state = resume(found, student, loss_fn, optimizer, scheduler)
    if cfg.train.compile:
        student.forward = torch.compile(student.forward)
    parts = StepParts(
        student, teacher, loss_fn, optimizer, scheduler, named_params, spec.student_layers, cfg.train.grad_clip,
        cfg.train.precision, forward, distributed.average_terms(dist), distributed.count_reduce(dist),
    )  # fmt: skip
    if teacher_metrics:
        console.print(f"teacher dev: {fmt(teacher_metrics)}")
    return Run(
        cfg, out_dir, dist, device, setup, spec, loss_fn, teacher, teacher_metrics, parts, sampler, loader, state,
        checkpoints, batches_per_epoch, stage1, stage1 + task_steps, sharded,
    )  # fmt: skip


def fit(run: Run) -> None:
    """The loop: step, log, evaluate, checkpoint, until the last step or a signal."""
    cfg, state = run.cfg, run.state
    logger = cfg.train.logger if run.dist.is_main else "none"  # rank 0 logs
    log = RunLog(run.out_dir, logger, resume_step=state.step if cfg.train.resume else None)
    run.started = window_start = time.perf_counter()
    window_samples = 0
    run.setup.student.train()
    with Interrupts() as interrupts, progress_bar(console) as progress:
        bar = progress.add_task("train", total=run.total_steps, completed=state.step, terms="")
        while state.step < run.total_steps:
            run.sampler.set_epoch(state.epoch, start=state.batch_in_epoch * cfg.train.batch_size)
            for batch in run.loader:
                scales = run.spec.scales(state.step, run.total_steps, run.stage1)
                loss, terms, grad_norm, bad = train_step(run.parts, batch.to(run.device), run.device, scales)
                state.step += 1
                state.batch_in_epoch += 1
                if bad is not None:
                    handle_nonfinite(bad, run)
                run.seen += len(batch.labels) * run.dist.world_size
                window_samples += len(batch.labels) * run.dist.world_size

                if state.step % cfg.train.log_every == 0 or state.step == run.total_steps:
                    now = time.perf_counter()
                    row = step_row(run, loss, terms, grad_norm, scales, window_samples / max(now - window_start, 1e-9))
                    log.log_step(state.step, row)
                    window_start, window_samples = now, 0
                    main = {k: v for k, v in row.items() if k == "loss" or k in terms and "/" not in k}
                    progress.update(bar, terms=fmt(main, 3))
                progress.update(bar, completed=state.step)

                end_of_epoch = state.batch_in_epoch == run.batches_per_epoch
                scheduled = cfg.train.eval_every > 0 and state.step % cfg.train.eval_every == 0
                evaluated = scheduled or end_of_epoch or state.step == run.total_steps
                if evaluated:
                    evaluate_and_keep_best(run, log, progress.console)
                if end_of_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                periodic = cfg.train.checkpoint_every > 0 and state.step % cfg.train.checkpoint_every == 0
                stop = distributed.any_rank(bool(interrupts.received), run.dist)  # all ranks stop at one step
                if periodic or (cfg.train.checkpoint_every == 0 and evaluated) or stop:
                    path = run.checkpoint()
                fault_injection(state.step, run.dist.rank)
                if stop:
                    log.close()
                    console.print(
                        f"[yellow]stopped at step {state.step}; checkpoint {path}. Resume with:[/]\n"
                        f"  {resume_command(run.out_dir, overrides_of(run.out_dir))}"
                    )
                    sys.exit(interrupts.exit_code)
                if state.step >= run.total_steps or end_of_epoch:
                    break
    if run.total_steps == 0:  # train.max_steps=0: the student as it starts
        state.best = run.last = run.evaluate()
        log.log_eval(0, run.last)
        if cfg.train.save_student:
            run.save_student()
    elif run.last is None:  # resumed from the last step's checkpoint: nothing evaluated yet
        run.last = run.evaluate()
    log.close()


def finish(run: Run) -> dict:
    """metrics.json and the summary (rank 0); every rank returns rank 0's metrics."""
    elapsed = time.perf_counter() - run.started
    s = run.setup
    metrics = run_metrics(
        run.cfg, s.task, run.state, run.last, run.teacher_metrics, s.student, run.teacher, run.loss_fn,
        list(run.spec.pairs), elapsed, run.seen,
    )  # fmt: skip
    if run.dist.is_main:
        (run.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print_summary(metrics, run.out_dir, overrides_of(run.out_dir), console)
    metrics = distributed.broadcast(metrics, run.dist)
    run.parts.forward = None  # drop the DDP module before the process group goes
    distributed.teardown(run.dist)
    return metrics


def step_row(run: Run, loss, terms: dict, grad_norm, scales: tuple[float, float], samples_per_s: float) -> dict:
    """One line of steps.jsonl: loss, every unweighted term, lr, the schedule's factors, grad norm, speed."""
    row = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
    row["lr"] = run.parts.scheduler.get_last_lr()[0]
    if run.spec.schedule != "constant":
        row["feature_scale"] = scales[0]
    if run.stage1:
        row["prediction_scale"] = scales[1]
    if grad_norm is not None:  # computed when clipping (train.grad_clip > 0)
        row["grad_norm"] = grad_norm.item()
    row["samples_per_s"] = samples_per_s
    return row


def evaluate_and_keep_best(run: Run, log: RunLog, out) -> None:
    """Dev metrics now; the student is saved when they beat the best so far."""
    state = run.state
    run.last = run.evaluate()
    log.log_eval(state.step, run.last)
    out.print(f"step {state.step} dev: {fmt(run.last)}")
    if state.best is None or improved(run.setup.task.main_metric, run.last, state.best):
        state.best, state.best_step = run.last, state.step
        if run.cfg.train.save_student:
            run.save_student()


def improved(metric: str, new: dict, best: dict) -> bool:
    """Whether `new` beats `best` on `metric` (perplexity and CER: lower is better)."""
    return new[metric] < best[metric] if metric in LOWER_IS_BETTER else new[metric] > best[metric]


def handle_nonfinite(what: str, run: Run) -> None:
    """Skip the step (its update was not applied) or stop with a checkpoint of the last good state."""
    state, cfg = run.state, run.cfg
    state.skipped_steps += 1
    message = f"non-finite value in {what} at step {state.step}"
    if cfg.train.on_nonfinite == "skip" and state.skipped_steps <= cfg.train.max_nonfinite_skips:
        console.print(f"[yellow]{message}: step skipped ({state.skipped_steps}/{cfg.train.max_nonfinite_skips})")
        return
    path = run.checkpoint()
    raise NonFiniteError(
        f"{message}; the update was not applied and the last good state is in {path}. Lower train.lr, "
        "check the data, or set train.on_nonfinite=skip to skip such steps"
    )
