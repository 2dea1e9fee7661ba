"""The one training loop: teacher forward (frozen), student forward, loss, step, log, eval.

Read it top to bottom; every switch comes from the typed Config. A run directory gets:
config.yaml, steps.jsonl (one row per logged step: every unweighted loss term, lr,
grad norm, samples/s), evals.jsonl, metrics.json, student/ (a Hugging Face folder of the
best student by the task's main metric) and projections.safetensors (the learned
student->teacher width projections, kept outside the student's folder).
"""

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import save_file
from transformers import get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from fadkd.capture import layers_to_capture, run_model
from fadkd.config import Config
from fadkd.data import Collator, make_loader
from fadkd.evaluate import evaluate
from fadkd.losses import DistillLoss, LossWeights
from fadkd.mapping import build_mapping, describe
from fadkd.models import count_parameters, depth, load_classifier, load_tokenizer, width
from fadkd.tasks.glue import get_task, load_split

ASSETS = Path(__file__).parent / "assets"
console = Console()


def resolve_data_dir(data_dir: str) -> str | None:
    """'sample' -> the shipped SST-2 sample, 'hub' -> None (load from the Hub), else the path."""
    if data_dir == "sample":
        return str(ASSETS / "glue_sample")
    return None if data_dir == "hub" else data_dir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_run_config(cfg: Config, out_dir: Path) -> None:
    """The resolved config, so `fadkd eval` can rebuild the run without Hydra's folder."""
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(asdict(cfg))))


def train(cfg: Config, out_dir: Path) -> dict:
    """Distil cfg.teacher into cfg.student on cfg.task; returns (and writes) metrics.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # one progress bar: ours
    save_run_config(cfg, out_dir)
    seed_everything(cfg.train.seed)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    weights = LossWeights(**{k: getattr(cfg.loss, k) for k in ("alpha", "temperature", "beta", "gamma", "delta", "ce")})
    use_teacher = cfg.loss.alpha > 0 or cfg.loss.needs_features

    # Data and models. Attention maps need eager attention (SDPA returns none).
    task = get_task(cfg.task.name)
    data_dir = resolve_data_dir(cfg.task.data_dir)
    train_rows = load_split(task, "train", data_dir, cfg.task.max_train_samples).to_list()
    dev_rows = load_split(task, "dev", data_dir, cfg.task.max_eval_samples).to_list()
    attn = "eager" if cfg.loss.delta > 0 else "sdpa"
    student_tok = load_tokenizer(cfg.student, "student")
    student = load_classifier(cfg.student, "student", task.num_labels, len(student_tok), attn).to(device)
    teacher_tok = teacher = None
    if use_teacher:
        teacher_tok = load_tokenizer(cfg.teacher, "teacher")
        teacher = load_classifier(cfg.teacher, "teacher", task.num_labels, len(teacher_tok), attn).to(device)
        teacher.eval().requires_grad_(False)

    # Layer mapping and the objective.
    pairs = []
    if cfg.loss.needs_features:
        m = cfg.mapping
        pairs = build_mapping(
            m.strategy, depth(student), depth(teacher), m.pairs, m.layer_weights, m.include_embeddings
        )
    loss_fn = DistillLoss(
        weights,
        pairs,
        student_widths={p.student: width(student) for p in pairs},
        teacher_widths={p.teacher: width(teacher) for p in pairs},
        is_regression=task.is_regression,
        shared_projection=cfg.loss.shared_projection,
    ).to(device)
    s_layers, t_layers = layers_to_capture(pairs, cfg.loss.beta > 0 or cfg.loss.gamma > 0, cfg.loss.delta > 0)
    console.print(f"[bold]{loss_fn}")
    if pairs:
        console.print("layer mapping (hidden_states[0] = embeddings):\n" + describe(pairs))

    collator = Collator(task, student_tok, teacher_tok, cfg.task.max_length, check_alignment=cfg.loss.needs_features)
    loader = make_loader(train_rows, collator, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
    total_steps = cfg.train.max_steps if cfg.train.max_steps > 0 else cfg.train.epochs * len(loader)
    params = [p for p in list(student.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total_steps), total_steps)

    def dev_metrics(model, tok) -> dict[str, float]:
        return evaluate(model, dev_rows, tok, task, cfg.task.max_length, cfg.train.eval_batch_size, device)

    teacher_metrics = dev_metrics(teacher, teacher_tok) if teacher is not None else None
    if teacher_metrics:
        console.print(f"teacher dev: {_fmt(teacher_metrics)}")

    steps_log = open(out_dir / "steps.jsonl", "w")
    evals_log = open(out_dir / "evals.jsonl", "w")
    best, best_step, last = None, 0, None
    step, seen, started = 0, 0, time.perf_counter()
    window_start, window_samples = started, 0
    student.train()
    with _progress() as progress:
        bar = progress.add_task("train", total=total_steps, terms="")
        while step < total_steps:
            for batch in loader:
                batch = batch.to(device)
                if teacher is not None:
                    with torch.no_grad():  # not inference_mode: its tensors cannot enter autograd
                        t_out = run_model(teacher, batch.teacher, t_layers)
                else:
                    t_out = None
                s_out = run_model(student, batch.student, s_layers)
                loss, terms = loss_fn(s_out, t_out, batch.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                scheduler.step()
                step += 1
                seen += len(batch.labels)
                window_samples += len(batch.labels)

                if step % cfg.train.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    row = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
                    row |= {"lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm.item()}
                    row["samples_per_s"] = window_samples / max(now - window_start, 1e-9)
                    steps_log.write(json.dumps(row) + "\n")
                    steps_log.flush()
                    window_start, window_samples = now, 0
                    progress.update(bar, terms=_fmt({"loss": row["loss"], **terms_main(terms)}, 3))
                progress.update(bar, advance=1)

                end_of_epoch = step % len(loader) == 0
                scheduled = cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0
                if scheduled or end_of_epoch or step == total_steps:
                    last = dev_metrics(student, student_tok)
                    evals_log.write(json.dumps({"step": step, **last}) + "\n")
                    evals_log.flush()
                    progress.console.print(f"step {step} dev: {_fmt(last)}")
                    if best is None or last[task.main_metric] > best[task.main_metric]:
                        best, best_step = last, step
                        if cfg.train.save_student:
                            save_student(student, student_tok, loss_fn, out_dir)
                if step >= total_steps:
                    break
    steps_log.close()
    evals_log.close()

    elapsed = time.perf_counter() - started
    metrics = {
        "task": task.name,
        "main_metric": task.main_metric,
        "student": best,
        "best_step": best_step,
        "student_final": last,
        "teacher": teacher_metrics,
        "teacher_name": cfg.teacher.name if teacher is not None else None,
        "student_name": cfg.student.name,
        "params": {"student": count_parameters(student), "teacher": count_parameters(teacher) if teacher else None},
        "steps": step,
        "train_seconds": elapsed,
        "samples_per_s": seen / max(elapsed, 1e-9),
        "loss_formula": str(loss_fn),
        "mapping": [[p.student, p.teacher, p.weight] for p in pairs],
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    console.print(f"[bold green]best student dev (step {best_step}): {_fmt(best)}[/]  -> {out_dir}")
    return metrics


def terms_main(terms: dict) -> dict[str, float]:
    """The summed terms (kd, cos, ...) without the per-pair ones (cos/s1_t2, ...)."""
    return {k: v.item() for k, v in terms.items() if "/" not in k}


def save_student(student, tokenizer, loss_fn: DistillLoss, out_dir: Path) -> None:
    """The student as a standard HF folder; projections beside it, not inside it."""
    student.save_pretrained(out_dir / "student")
    tokenizer.save_pretrained(out_dir / "student")
    state = {k: v.detach().cpu().contiguous() for k, v in loss_fn.state_dict().items()}
    if state:
        save_file(state, str(out_dir / "projections.safetensors"))


def _fmt(values: dict | None, digits: int = 4) -> str:
    return "  ".join(f"{k}={v:.{digits}f}" for k, v in (values or {}).items())


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[terms]}"),
        console=console,
    )
