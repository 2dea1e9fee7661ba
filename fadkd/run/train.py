"""The one training loop: teacher forward (frozen), student forward, loss, step, log, eval.

Read `train` top to bottom; every switch comes from the typed Config. A run folder gets:
config.yaml, steps.jsonl (every unweighted loss term, lr, grad norm, samples/s), evals.jsonl,
metrics.json, student/ (Hugging Face folder of the best student by the task's main metric),
projections.safetensors (learned width projections, outside the student's folder) and
checkpoints/ (see fadkd/run/checkpoint.py; `train.resume=true` continues bit for bit).
fadkd/run/folder.py guards the folder and writes the student, projections and metrics.json.
"""

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from fadkd.config.schema import Config
from fadkd.data.batches import Collator, EpochSampler, make_loader
from fadkd.data.glue import get_task, load_split
from fadkd.data.lm_text import LOWER_IS_BETTER, is_lm_task
from fadkd.data.pool import training_rows
from fadkd.errors import FadkdError
from fadkd.eval.glue import evaluate
from fadkd.losses.distill import DistillLoss, LossWeights
from fadkd.losses.kd import TermChoice
from fadkd.losses.mapping import build_mapping, describe
from fadkd.losses.projections import fit_feature_norm, fit_projections, param_groups
from fadkd.models import attention
from fadkd.models.capture import layers_to_capture, run_model
from fadkd.models.load import check_max_length, depth, load_tokenizer, model_shape, width
from fadkd.models.shrink import build_classifier_student, kept_pairs
from fadkd.report.results import overrides_of
from fadkd.report.summary import print_summary, resume_command
from fadkd.run import distributed
from fadkd.run.checkpoint import TrainState, latest_checkpoint, load_checkpoint, safe_dir, save_checkpoint
from fadkd.run.folder import prepare_run_dir, run_metrics, save_student
from fadkd.run.guards import Interrupts, NonFiniteError, fault_injection
from fadkd.run.lm import prepare_lm
from fadkd.run.logs import RunLog
from fadkd.run.progress import make_console, progress_bar
from fadkd.run.step import StepParts, build_optimizer, feature_scale, prediction_scale, staged_lr, train_step
from fadkd.teacher.live import Teacher

ASSETS = Path(__file__).parents[1] / "assets"
console = make_console()  # no hard wraps, full-width tables in a log file


def resolve_data_dir(data_dir: str) -> str | None:
    """'sample' -> the shipped SST-2 sample, 'hub' -> None (load from the Hub), else the path."""
    if data_dir == "sample":
        return str(ASSETS / "glue_sample")
    return None if data_dir == "hub" else data_dir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FadkdError(f"train.device={name} but no CUDA GPU is available here; use train.device=cpu (or auto)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise FadkdError(f"train.device={name} but this machine has {torch.cuda.device_count()} GPU(s), cuda:0 first")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FadkdError("train.device=mps but MPS is not available here; use train.device=cpu (or auto)")
    return torch.device(name)


def train(cfg: Config, out_dir: Path) -> dict:
    """Distil cfg.teacher into cfg.student on cfg.task; returns (and writes) metrics.json.

    Under torchrun every rank runs this (fadkd/run/distributed.py); rank 0 alone writes out_dir.
    """
    local_batch = distributed.local_batch_size(cfg.train.batch_size, distributed.launched())  # global / ranks
    dist, device = distributed.setup(resolve_device(cfg.train.device))
    out_dir = distributed.broadcast(out_dir, dist)  # rank 0's run folder is the run's
    console.quiet = not dist.is_main
    if dist.is_main:
        prepare_run_dir(out_dir, cfg)  # locks the folder, checks resume's settings, writes config.yaml
    distributed.barrier(dist)
    hf_logging.disable_progress_bar()  # one progress bar: ours
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    weights = LossWeights(**{k: getattr(cfg.loss, k) for k in ("alpha", "temperature", "beta", "gamma", "delta", "ce")})
    use_teacher = cfg.loss.alpha > 0 or cfg.loss.needs_features

    # Data and models. Attention maps come from fadkd's attention function (SDPA returns none).
    attn = attention.NAME if cfg.loss.delta > 0 else None  # None: transformers' default (SDPA where supported)
    lm = prepare_lm(cfg, attn, device, use_teacher, out_dir) if is_lm_task(cfg.task.name) else None
    if lm is not None:  # causal LM (fadkd/run/lm.py): packed text blocks, held-out perplexity and generation
        task, train_rows, dev_rows, student_tok, student = lm.task, lm.train_rows, [], lm.student_tok, lm.student
        teacher_tok, teacher_shape = lm.teacher_tok, lm.teacher_shape
    else:
        task = get_task(cfg.task.name)
        data_dir = resolve_data_dir(cfg.task.data_dir)
        train_rows = training_rows(cfg, task, data_dir, console.print)  # labelled, copies, unlabelled pool
        dev_rows = load_split(task, "dev", data_dir, cfg.task.max_eval_samples).to_list()
        built = cfg.student.init == "from_teacher" and not cfg.student.tokenizer  # the teacher's own tokenizer
        student_tok = load_tokenizer(cfg.teacher if built else cfg.student, "student")
        student = build_classifier_student(cfg, task.num_labels, len(student_tok), attn).to(device)
        check_max_length(student, cfg.task.max_length, "student")
        teacher_tok = teacher_shape = None
        if use_teacher:
            teacher_tok = load_tokenizer(cfg.teacher, "teacher")
            teacher_shape = model_shape(cfg.teacher, "teacher")

    # Layer mapping and the objective.
    pairs = []
    if cfg.loss.needs_features:
        m = cfg.mapping
        strategy, explicit = ("explicit", kept_pairs(cfg)) if m.strategy == "kept" else (m.strategy, m.pairs)
        pairs = build_mapping(
            strategy, depth(student), teacher_shape["layers"], explicit, m.layer_weights, m.include_embeddings
        )
    loss_fn = DistillLoss(
        weights,
        pairs,
        student_widths={p.student: width(student) for p in pairs},
        teacher_widths={p.teacher: teacher_shape["width"] for p in pairs},
        is_regression=task.is_regression,
        shared_projection=cfg.loss.shared_projection,
        choice=TermChoice.from_config(cfg.loss, (teacher_shape or {}).get("heads"), lm.kd_vocab if lm else None),
    ).to(device)
    features, relations = cfg.loss.beta > 0 or cfg.loss.gamma > 0, cfg.loss.attn == "relations"
    s_layers = layers_to_capture(pairs, features, cfg.loss.delta > 0, relations)[0]
    console.print(f"[bold]{loss_fn}")
    if cfg.loss.feature_schedule == "staged":
        console.print(f"staged: {cfg.loss.intermediate_epochs} epoch(s) of β, γ, δ alone, then α and ce alone")
    elif cfg.loss.feature_schedule != "constant" and cfg.loss.needs_features:
        console.print(
            f"β, γ, δ × a {cfg.loss.feature_schedule} decay from 1 to 0 over the first "
            f"{cfg.loss.feature_until:.0%} of the steps"
        )
    if pairs:
        console.print("layer mapping (hidden_states[0] = embeddings):\n" + describe(pairs))

    needs_features = cfg.loss.needs_features
    collator = lm.collator if lm else Collator(task, student_tok, teacher_tok, cfg.task.max_length, needs_features)
    lengths = None
    if cfg.train.group_by_length:
        lengths = [int(collator([row]).student["attention_mask"].sum()) for row in train_rows]
    sampler = EpochSampler(
        len(train_rows), cfg.train.seed, lengths=lengths, batch_size=cfg.train.batch_size,
        rank=dist.rank, world_size=dist.world_size,
    )  # fmt: skip
    loader = make_loader(train_rows, collator, local_batch, sampler)  # this rank's share of each global batch
    batches_per_epoch = math.ceil(len(train_rows) / cfg.train.batch_size)
    task_steps = cfg.train.max_steps if cfg.train.max_steps >= 0 else cfg.train.epochs * batches_per_epoch
    stage1 = cfg.loss.intermediate_epochs * batches_per_epoch  # feature_schedule=staged: β, γ, δ alone first
    total_steps = stage1 + task_steps
    named_params = [(n, p) for n, p in [*student.named_parameters(), *loss_fn.named_parameters()] if p.requires_grad]
    groups = param_groups(student, loss_fn, cfg.train.lr, cfg.loss.projection_lr)
    optimizer = build_optimizer(groups, cfg.train.lr, cfg.train.weight_decay, cfg.train.fused_adamw, device)
    if stage1:
        scheduler = staged_lr(optimizer, cfg.train.warmup_ratio, stage1, task_steps)
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)

    state = TrainState()
    checkpoints = safe_dir(out_dir, "checkpoints")
    if cfg.train.resume:
        found = latest_checkpoint(checkpoints)
        if found is None:
            raise FadkdError(f"train.resume=true but {checkpoints} holds no complete checkpoint; start afresh")
        state = load_checkpoint(*found, student, loss_fn, optimizer, scheduler)
        console.print(f"resumed from {found[0]} (step {state.step})")

    def dev_metrics(model, tok) -> dict[str, float] | None:
        if not dist.is_main:
            return None  # rank 0 evaluates
        if lm is not None:
            return lm.evaluate(model)
        return evaluate(model, dev_rows, tok, task, cfg.task.max_length, cfg.train.eval_batch_size, device)

    def checkpoint() -> Path | None:
        if not dist.is_main:
            return None  # rank 0 writes checkpoints
        return save_checkpoint(checkpoints, state, student, loss_fn, optimizer, scheduler, cfg.train.keep_checkpoints)

    teacher = None
    if lm is not None:
        # None unless the loss reads it (it was evaluated either way); rank 0 first: it writes the cache
        teacher = distributed.rank0_first(lambda: lm.teacher(pairs, cfg, device), dist)
    elif use_teacher:  # rank 0 first: it writes the teacher cache (cache.enabled) that the others then read
        teacher = distributed.rank0_first(
            lambda: Teacher(
                cfg, task, teacher_shape, collator, train_rows, dev_rows, pairs, device, dev_metrics, console.print
            ),
            dist,
        )
    teacher_metrics = lm.teacher_metrics if lm else teacher.metrics if teacher else None
    standardize = cfg.loss.feature_norm == "standardize" and (cfg.loss.beta > 0 or cfg.loss.gamma > 0)
    fit = cfg.loss.projection_init == "lstsq" and loss_fn.projections
    if (standardize or fit) and state.step == 0:  # a resumed run has both in its checkpoint
        first = collator(train_rows[: cfg.train.batch_size]).to(device)
        with torch.no_grad():
            t_first = teacher.outputs(first)
            if standardize:
                spread = fit_feature_norm(loss_fn, t_first)
                console.print("teacher states standardised per dimension (max/median std): " + _fmt(spread, 1))
            if fit:
                r2 = fit_projections(loss_fn, run_model(student, first.student, s_layers), t_first)
                console.print("projections fitted by least squares on the first batch, R²: " + _fmt(r2, 3))
    if cfg.train.compile:
        student.forward = torch.compile(student.forward)
    parts = StepParts(
        student,
        teacher,
        loss_fn,
        optimizer,
        scheduler,
        named_params,
        s_layers,
        cfg.train.grad_clip,
        cfg.train.precision,
        average=distributed.average_terms(dist),
    )
    parts.forward = distributed.wrap(parts.forward, dist)  # DDP: student + projections' gradients averaged
    if teacher_metrics:
        console.print(f"teacher dev: {_fmt(teacher_metrics)}")

    logger = cfg.train.logger if dist.is_main else "none"  # rank 0 logs
    log = RunLog(out_dir, logger, resume_step=state.step if cfg.train.resume else None)
    last = None
    started, seen = time.perf_counter(), 0
    window_start, window_samples = started, 0
    student.train()
    with Interrupts() as interrupts, progress_bar(console) as progress:
        bar = progress.add_task("train", total=total_steps, completed=state.step, terms="")
        while state.step < total_steps:
            sampler.set_epoch(state.epoch, start=state.batch_in_epoch * cfg.train.batch_size)
            for batch in loader:
                loss_fn.feature_scale = feature_scale(
                    cfg.loss.feature_schedule, cfg.loss.feature_until, state.step, total_steps, stage1
                )
                loss_fn.prediction_scale = prediction_scale(cfg.loss.feature_schedule, state.step, stage1)
                loss, terms, grad_norm, bad = train_step(parts, batch.to(device), device)
                state.step += 1
                state.batch_in_epoch += 1
                if bad is not None:
                    handle_nonfinite(bad, state, cfg, checkpoint)
                seen += len(batch.labels) * dist.world_size
                window_samples += len(batch.labels) * dist.world_size

                if state.step % cfg.train.log_every == 0 or state.step == total_steps:
                    now = time.perf_counter()
                    row = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
                    row["lr"] = scheduler.get_last_lr()[0]
                    if cfg.loss.feature_schedule != "constant":
                        row["feature_scale"] = loss_fn.feature_scale
                    if stage1:
                        row["prediction_scale"] = loss_fn.prediction_scale
                    if grad_norm is not None:  # computed when clipping (train.grad_clip > 0)
                        row["grad_norm"] = grad_norm.item()
                    row["samples_per_s"] = window_samples / max(now - window_start, 1e-9)
                    log.log_step(state.step, row)
                    window_start, window_samples = now, 0
                    main = {k: v for k, v in row.items() if k == "loss" or k in terms and "/" not in k}
                    progress.update(bar, terms=_fmt(main, 3))
                progress.update(bar, completed=state.step)

                end_of_epoch = state.batch_in_epoch == batches_per_epoch
                scheduled = cfg.train.eval_every > 0 and state.step % cfg.train.eval_every == 0
                evaluated = scheduled or end_of_epoch or state.step == total_steps
                if evaluated and dist.is_main:
                    last = dev_metrics(student, student_tok)
                    log.log_eval(state.step, last)
                    progress.console.print(f"step {state.step} dev: {_fmt(last)}")
                    if state.best is None or improved(task.main_metric, last, state.best):
                        state.best, state.best_step = last, state.step
                        if cfg.train.save_student:
                            save_student(student, student_tok, loss_fn, out_dir)
                if end_of_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                periodic = cfg.train.checkpoint_every > 0 and state.step % cfg.train.checkpoint_every == 0
                stop = distributed.any_rank(bool(interrupts.received), dist)  # all ranks stop at one step
                if periodic or (cfg.train.checkpoint_every == 0 and evaluated) or stop:
                    path = checkpoint()
                fault_injection(state.step, dist.rank)
                if stop:
                    log.close()
                    console.print(
                        f"[yellow]stopped at step {state.step}; checkpoint {path}. Resume with:[/]\n"
                        f"  {resume_command(out_dir, overrides_of(out_dir))}"
                    )
                    sys.exit(interrupts.exit_code)
                if state.step >= total_steps or end_of_epoch:
                    break
    if total_steps == 0 and dist.is_main:  # train.max_steps=0: the student as it starts (e.g. kept layers)
        state.best = last = dev_metrics(student, student_tok)
        log.log_eval(0, last)
        if cfg.train.save_student:
            save_student(student, student_tok, loss_fn, out_dir)
    elif last is None and dist.is_main:  # resumed from the last step's checkpoint: nothing evaluated here yet
        last = dev_metrics(student, student_tok)
    log.close()

    elapsed = time.perf_counter() - started
    metrics = run_metrics(cfg, task, state, last, teacher_metrics, student, teacher, loss_fn, pairs, elapsed, seen)
    if dist.is_main:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print_summary(metrics, out_dir, overrides_of(out_dir), console)
    metrics = distributed.broadcast(metrics, dist)  # every rank returns rank 0's metrics
    parts.forward = None  # drop the DDP module before the process group goes
    distributed.teardown(dist)
    return metrics


def improved(metric: str, new: dict, best: dict) -> bool:
    """Whether `new` beats `best` on `metric` (perplexity and CER: lower is better)."""
    return new[metric] < best[metric] if metric in LOWER_IS_BETTER else new[metric] > best[metric]


def handle_nonfinite(what: str, state: TrainState, cfg: Config, checkpoint) -> None:
    """Skip the step (its update was not applied) or stop with a checkpoint of the last good state."""
    state.skipped_steps += 1
    message = f"non-finite value in {what} at step {state.step}"
    if cfg.train.on_nonfinite == "skip" and state.skipped_steps <= cfg.train.max_nonfinite_skips:
        console.print(f"[yellow]{message}: step skipped ({state.skipped_steps}/{cfg.train.max_nonfinite_skips})")
        return
    path = checkpoint()
    raise NonFiniteError(
        f"{message}; the update was not applied and the last good state is in {path}. Lower train.lr, "
        "check the data, or set train.on_nonfinite=skip to skip such steps"
    )


def _fmt(values: dict | None, digits: int = 4) -> str:
    return "  ".join(f"{k}={v:.{digits}f}" for k, v in (values or {}).items())
