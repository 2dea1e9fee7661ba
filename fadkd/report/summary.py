"""`fadkd report <run>` (report.md: what was distilled, how well, how much smaller and faster)
and the summary `fadkd train` prints at its end.

The report reads the run's own record (config.yaml, metrics.json, .hydra/overrides.yaml),
embeds the plots of fadkd/report/plots.py, and measures one thing itself: student vs teacher
inference speed on the dev set, on this machine, with the same batches, so the two numbers
are comparable (numbers from different machines are not).
"""

import math
import re
import shlex
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from fadkd.config.schema import ModelConfig
from fadkd.data.batches import Collator, make_loader
from fadkd.data.glue import load_split, resolve_data_dir
from fadkd.data.glue_tasks import get_task
from fadkd.data.lm_text import is_lm_task
from fadkd.errors import FadkdError
from fadkd.models.load import load_classifier, load_tokenizer
from fadkd.report.plots import plot_run, run_title
from fadkd.report.runs import read_metrics
from fadkd.run.distributed import resolve_device
from fadkd.run.progress import make_console

PLOT_CAPTIONS = {
    "loss_terms.png": "Loss terms over training, unweighted and weighted",
    "layer_pairs.png": "Each layer pair's alignment loss, first vs last logged step",
    "dev_metric.png": "Dev metrics over training",
}


def load_run(run: Path) -> tuple[dict, dict]:
    """(metrics.json, config.yaml as a dict) of a finished run, or an error that says what is missing."""
    if not (run / "config.yaml").is_file():
        raise FadkdError(f"{run} is not a fadkd run folder (no config.yaml); give the folder `fadkd train` printed")
    if not (run / "metrics.json").is_file():
        raise FadkdError(f"{run} has no metrics.json: the run has not finished; finish or resume it first")
    return read_metrics(run), OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))


def compression(metrics: dict) -> float | None:
    """Teacher parameters per student parameter (None when the run had no teacher)."""
    params = metrics.get("params") or {}
    if not params.get("teacher") or not params.get("student"):
        return None
    return params["teacher"] / params["student"]


def size_mb(model: torch.nn.Module) -> float:
    """Weights in memory, in MB (10^6 bytes): what a deployment has to hold."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


@torch.inference_mode()
def measure_speed(model, batches: list[dict], device: torch.device, min_seconds: float = 1.0) -> dict[str, float]:
    """Tokens/s and examples/s of forward passes over pre-tokenized batches; the best of
    several passes (at least two, at least min_seconds in all), after one warm-up batch."""
    model.eval().to(device)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    examples = sum(len(b["input_ids"]) for b in batches)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model(**batches[0])
    best, spent, passes = math.inf, 0.0, 0
    while passes < 2 or (spent < min_seconds and passes < 20):
        sync()
        start = time.perf_counter()
        for batch in batches:
            model(**batch)
        sync()
        elapsed = time.perf_counter() - start
        best, spent, passes = min(best, elapsed), spent + elapsed, passes + 1
    return {"tokens_per_s": tokens / best, "examples_per_s": examples / best}


def dev_batches(cfg: dict, tokenizer) -> list[dict]:
    """The run's dev rows in the run's eval batches, tokenized as training did (no timing of tokenization)."""
    task = get_task(cfg["task"]["name"])
    rows = load_split(task, "dev", resolve_data_dir(cfg["task"]["data_dir"]), cfg["task"]["max_eval_samples"])
    collator = Collator(task, tokenizer, None, cfg["task"]["max_length"], check_alignment=False)
    return [batch.student for batch in make_loader(rows.to_list(), collator, cfg["train"]["eval_batch_size"])]


def speed_rows(run: Path, cfg: dict, with_teacher: bool) -> tuple[dict[str, dict], str]:
    """{"student": {...}, "teacher": {...}} sizes and speeds, and a line saying how they were measured."""
    if is_lm_task(cfg["task"]["name"]):
        return {}, "Speed is measured for GLUE classification runs only; this is a causal-LM run."
    if not (run / "student" / "config.json").is_file():
        return {}, "No saved student (train.save_student=false), so no speed measurement."
    hf_logging.disable_progress_bar()  # the report prints its own result, not a weight-loading bar
    device = resolve_device(cfg["train"]["device"])
    student = AutoModelForSequenceClassification.from_pretrained(run / "student")
    models = {"student": (student, AutoTokenizer.from_pretrained(run / "student"))}
    if with_teacher:
        teacher_cfg = ModelConfig(**cfg["teacher"])
        tok = load_tokenizer(teacher_cfg, "teacher")
        num_labels = student.config.num_labels
        attn = "sdpa" if teacher_cfg.path is None else None  # the tiny preset; folders: their default (SDPA)
        models["teacher"] = (load_classifier(teacher_cfg, "teacher", num_labels, len(tok), attn), tok)
    out = {}
    for role, (model, tok) in models.items():
        out[role] = {"size_mb": size_mb(model), **measure_speed(model, dev_batches(cfg, tok), device)}
    how = (
        f"Inference speed: dev set, batch size {cfg['train']['eval_batch_size']}, device `{device}`, forward passes "
        "only (tokenization excluded), best of several passes, measured by `fadkd report` on this machine."
    )
    return out, how


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def result_table(metrics: dict, speeds: dict[str, dict]) -> list[str]:
    """Markdown rows: params, size, speed and every dev metric of student and teacher."""
    names = list(metrics.get("student") or {})
    cols = ["model", "params", "size (MB)", "tokens/s", "examples/s", *[f"dev {n}" for n in names]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for role in ("student", "teacher"):
        dev = metrics.get(role)
        if dev is None and role == "teacher":
            continue
        s = speeds.get(role, {})
        name = metrics.get(f"{role}_name") or role
        cells = [f"{role} ({name})", _fmt(metrics["params"].get(role)), _fmt(s.get("size_mb"), 2)]
        cells += [_fmt(s.get("tokens_per_s"), 0), _fmt(s.get("examples_per_s"), 0)]
        cells += [_fmt((dev or {}).get(n)) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def headline(metrics: dict, speeds: dict[str, dict]) -> list[str]:
    """One sentence per number a reader came for: smaller by, faster by, quality kept."""
    lines, ratio, main = [], compression(metrics), metrics["main_metric"]
    if ratio:
        lines.append(f"- **Compression: {ratio:.2f}×** fewer parameters than the teacher.")
    if "student" in speeds and "teacher" in speeds:
        fast = speeds["student"]["tokens_per_s"] / speeds["teacher"]["tokens_per_s"]
        lines.append(f"- **Speed: {fast:.2f}×** the teacher's tokens/s.")
    student, teacher = (metrics.get("student") or {}).get(main), (metrics.get("teacher") or {}).get(main)
    if student is not None and teacher:
        lines.append(f"- Dev {main}: student {student:.4f} vs teacher {teacher:.4f} ({student / teacher:.1%}).")
    return lines


def write_report(run: Path, out: Path | None = None) -> Path:
    """report.md in the run folder (or `out`, with its plots/): config, objective, mapping, sizes, speed, metrics."""
    metrics, cfg = load_run(run)
    out = out or run
    plots = [name for name in PLOT_CAPTIONS if (out / "plots" / name).is_file()]
    plot_note = ""
    if not plots:
        try:
            plots = [p.name for p in plot_run(run, out / "plots")]
        except FadkdError as err:  # train.logger=none: nothing logged to plot
            plots, plot_note = [], str(err)
    speeds, how = speed_rows(run, cfg, with_teacher=metrics.get("teacher") is not None)
    md = [f"# fadkd run report: {run.name}", "", f"Overrides: `{run_title(run)}`", ""]
    md += ["## Result", "", *headline(metrics, speeds), "", *result_table(metrics, speeds), "", how, ""]
    md += [
        f"Best student at step {metrics.get('best_step')} of {metrics.get('steps')}; trained in "
        f"{metrics.get('train_seconds', 0):.1f} s ({metrics.get('samples_per_s', 0):.1f} samples/s).",
        "",
    ]
    md += ["## Objective", "", "```", metrics.get("loss_formula", "-"), "```", ""]
    mapping = metrics.get("mapping") or []
    md += ["## Layer mapping", ""]
    if mapping:
        md += ["| student layer | teacher layer | λ |", "|---|---|---|"]
        md += [f"| {s} | {t} | {w:g} |" for s, t, w in mapping]
    else:
        md.append("No layer terms in this run (β = γ = δ = 0): logits and labels only.")
    md += ["", "## Plots", ""]
    if plots:
        md += [line for name in plots for line in (f"![{PLOT_CAPTIONS.get(name, name)}](plots/{name})", "")]
    else:
        md.append(f"No plots: {plot_note}")
    md += ["", "## Composed config", "", "```yaml", (run / "config.yaml").read_text().rstrip(), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def resume_command(out_dir: Path, overrides: list[str]) -> str:
    """The command that continues the run in `out_dir` (its Hydra overrides, quoted for the shell)."""
    kept = [shlex.quote(o) for o in overrides if not o.startswith(("hydra.run.dir=", "train.resume="))]
    # `fadkd finetune model=X` is recorded as teacher@student=X, which `fadkd train` refuses; a
    # finetune run without model= is told by the config Hydra composed (conf/finetune.yaml).
    finetune = any(o.startswith("teacher@student=") for o in kept) or _config_name(out_dir) == "finetune"
    verb = "fadkd finetune" if finetune else "fadkd train"
    kept = [o.replace("teacher@student=", "model=", 1) for o in kept]
    return " ".join([verb, *kept, "train.resume=true", path_override("hydra.run.dir", out_dir)])


def path_override(key: str, path: Path) -> str:
    """key=path as a shell argument Hydra reads back: a path with spaces, commas or non-ASCII letters is quoted
    for Hydra ('...') inside quotes for the shell, so the command can be pasted as printed."""
    text = str(path)
    if re.fullmatch(r"[A-Za-z0-9_/.+:@%~-]+", text):
        return f"{key}={text}"
    hydra = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    arg = f"{key}={hydra}"
    return f'"{arg}"' if not re.search(r'[$`"\\!]', arg) else shlex.quote(arg)


def _config_name(out_dir: Path) -> str | None:
    """The top config Hydra composed the run from (config or finetune), from .hydra/hydra.yaml."""
    path = out_dir / ".hydra" / "hydra.yaml"
    try:
        return str(OmegaConf.load(path).hydra.job.config_name) if path.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged record: fall back to the overrides
        return None


def next_commands(out_dir: Path, overrides: list[str]) -> list[str]:
    """What a user types next: evaluate, resume, plot, report (overrides quoted for the shell)."""
    d = shlex.quote(str(out_dir))
    commands = [f"fadkd eval run_dir={d}", resume_command(out_dir, overrides), f"fadkd plot {d}", f"fadkd report {d}"]
    if (out_dir / "tensorboard").is_dir():
        commands.append(f"tensorboard --logdir {shlex.quote(str(out_dir / 'tensorboard'))}")
    return commands


def print_summary(metrics: dict, out_dir: Path, overrides: list[str], console: Console | None = None) -> None:
    """The end of `fadkd train`: how the student did, how much smaller it is, where things are, what next."""
    console = console or make_console()
    table = Table(title=f"fadkd run finished: {metrics['task']} ({metrics['steps']} steps)", title_justify="left")
    names = list(metrics.get("student") or metrics.get("student_final") or {})
    for col in ["", "params", *names]:
        table.add_column(col, justify="left" if not col else "right")
    params = metrics.get("params") or {}
    rows = [
        (f"student best (step {metrics.get('best_step')})", "student", metrics.get("student")),
        ("student final", "student", metrics.get("student_final")),
        (f"teacher ({metrics.get('teacher_name')})", "teacher", metrics.get("teacher")),
    ]
    for label, role, dev in rows:
        if dev is not None:
            table.add_row(label, _fmt(params.get(role)), *[_fmt(dev.get(n)) for n in names])
    console.print(table)
    ratio = compression(metrics)
    if ratio:
        console.print(f"compression: [bold]{ratio:.2f}×[/] fewer parameters than the teacher")
    console.print(f"main metric: {metrics['main_metric']}   train time: {metrics.get('train_seconds', 0):.1f} s")
    files = ("config.yaml", "metrics.json", "steps.jsonl", "evals.jsonl", "student", "tensorboard")
    found = [f + ("/" if (out_dir / f).is_dir() else "") for f in files if (out_dir / f).exists()]
    console.print(f"files in [bold]{escape(str(out_dir))}[/]: {'  '.join(found)}", highlight=False, soft_wrap=True)
    console.print("next:", highlight=False)
    for command in next_commands(out_dir, overrides):
        console.print(f"  {escape(command)}", highlight=False, soft_wrap=True)
