"""The quality suite (`make quality`): the paper's ablation on GLUE tasks, several seeds, one table.

    .venv/bin/python scripts/glue_suite.py --tasks mrpc rte --seeds 42 43 44 [--epochs 3]
        [--full ablation_full] [--rows full_relations=ablation_full_relations ...] [--only ROW ...]

For each task it fine-tunes the teacher once (`fadkd finetune`, reused when its metrics.json
exists), then, for each seed, trains the rows student_alone, kd_only, features_only, full and the
extra `--rows NAME=EXPERIMENT` (`fadkd train experiment=...`), with the same seed, epochs, batch and
max length. Every run is an ordinary fadkd run folder, <out>/<task>/teacher and
<out>/<task>/<row>/seed<k>:
- a folder with metrics.json is reused as it is (a rerun of the suite only writes the table);
- a folder without it (the suite was stopped) is resumed from its newest checkpoint
  (train.resume=true; train.overwrite=true when it has none), unless a live process is running
  that folder: then the suite stops;
- the KD rows of a task share one teacher cache folder, cache.dir=<out>/<task>/teacher_cache. The
  cache key (fadkd/teacher/live.py) holds no loss weight and no seed, so every seed of a row reads one
  cache; features_only and full (same mapping) share one entry that stores every mapped layer.
  kd_only gets its own small, logits-only entry: without feature terms the teacher reads its own
  tokenization of the text (`teacher_input` native), with them the student's ids translated
  position by position, so its logits are not the same numbers. A row with loss.attn=relations
  (Q/K/V relations, which the cache does not store) runs a live teacher instead.

Results: one JSON line per (task, row, seed) appended to --jsonl, in issue 4's schema
{"task", "row", "metrics", "epochs", "seed", "command", "commit", "machine"} plus "best_metrics" and
"best_step". `metrics` are the dev metrics after the last epoch (metrics.json's student_final: no
choice made on the dev set they are scored on); best_metrics those of the saved student/ (the best of
the per-epoch evaluations by the task's main metric, an optimistic number); `command` is the
fadkd command line that made the run, rebuilt from the overrides Hydra recorded (a resumed run's
train.resume / train.overwrite left out: the command reproduces it); `commit` and `machine` are those
of the suite that launched the run (kept in <run>/suite.json; a run found without one, e.g. a teacher
fine-tuned by hand, gets the current ones). A line already in the file with the same task, row,
seed, metrics, command and commit is not appended again, so reruns add nothing.
The markdown table (--md, default bench/results/quality_<tasks>.md) shows each row's dev metrics
as mean ± sample std over seeds (x100), the number of seeds, parameters, and the dev-set inference
time of the row's model (fadkd/report/summary.py's measurement: forward passes over the run's eval
batches, best of several passes, tokenization excluded; measured once per row and machine and
kept in the first seed's suite.json).
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from fadkd.data.glue_tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
BASE_ROWS = {
    "student_alone": "ablation_student_alone",
    "kd_only": "ablation_kd_only",
    "features_only": "ablation_features_only",
}
# --shrink (issue 18): a student built from the teacher, fadkd's recipe, and teacher-labelled data.
SHRINK_ROWS = {
    "student_alone": "ablation_student_alone",
    "kd_only": "ablation_kd_only",
    "recipe": "recipe",
    "kd_only_data": "kd_only_data",
    "recipe_data": "recipe_data",
    # A fair control (issue 25): KD only with the recipe's total number of epochs (its intermediate
    # stage + --epochs); a row whose name ends in _long gets those epochs.
    "kd_only_long": "ablation_kd_only",
    "kd_only_data_long": "kd_only_data",
}
DATA_ROWS = ("kd_only_data", "recipe_data", "kd_only_data_long")
# Loss weights that make a run a feature run (a term on hidden states or attention, for part of it at least).
FEATURE_WEIGHTS = ("beta", "gamma", "delta", "contrast")
LABELS = {"teacher": "teacher", "student_alone": "student alone", "kd_only": "KD only"}
LABELS.update({"features_only": "features only", "full": "full", "recipe": "recipe"})
LABELS.update({"kd_only_data": "KD only + teacher-labelled data", "recipe_data": "recipe + teacher-labelled data"})
LABELS.update({"kd_only_long": "KD only, recipe's epochs", "kd_only_data_long": "KD only + data, recipe's epochs"})
SKIPPED_OVERRIDES = ("train.resume=", "train.overwrite=", "hydra.mode=")
console = Console(soft_wrap=True)  # commands stay copyable
CONF_DIR = Path(os.environ.get("FADKD_CONF_DIR", ROOT / "conf"))


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


def commit() -> str:
    """Short HEAD, with -dirty when tracked files differ from it."""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    import torch
    import transformers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )


def parse_rows(full: str, extra: list[str], shrink: bool = False) -> dict[str, str]:
    """Row name -> experiment config: the three fixed rows, full, then the extras in order (--shrink: its five)."""
    rows = dict(SHRINK_ROWS) if shrink else {**BASE_ROWS, "full": full}
    for item in extra:
        name, sep, experiment = item.partition("=")
        if not sep or not name or not experiment or name == "teacher" or name in rows:
            raise SystemExit(f"--rows {item!r}: write NAME=EXPERIMENT with a new row name, e.g. full_rel=ablation_full")
        rows[name] = experiment
    missing = [e for e in rows.values() if not (CONF_DIR / "experiment" / f"{e}.yaml").is_file()]
    if missing:
        raise SystemExit(f"no experiment config {', '.join(missing)} in {CONF_DIR / 'experiment'}")
    return rows


def uses_cache(experiment: str, extra: list[str]) -> bool:
    """Whether the row can read the teacher cache: not when its attention term compares Q/K/V
    relations (loss.attn=relations), which the cache does not store (fadkd refuses that pair).
    Composing the row's config here also catches a broken experiment config before any training."""
    from hydra import compose, initialize_config_dir

    from fadkd.config.schema import register_configs

    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}", *extra])
    except Exception as err:  # noqa: BLE001 - Hydra raises several kinds of composition errors
        raise SystemExit(f"experiment={experiment} {' '.join(extra)} does not compose: {err}") from None
    return not (cfg.loss.get("attn", "maps") == "relations" and cfg.loss.delta > 0)


def main_metric(task: str) -> str:
    """The task's main metric (MRPC: f1, CoLA: mcc, SST-2: accuracy), from fadkd's GLUE registry."""
    return get_task(task).main_metric


def is_data_row(row: str) -> bool:
    """A row on teacher-labelled data: the shrink rows named so, and any row with a `data` part in its name."""
    return row in DATA_ROWS or "data" in row.split("_")


def recipe_intermediate_epochs(extra: list[str]) -> int:
    """The recipe's intermediate epochs: what a `_long` row trains beyond --epochs, so it runs as many steps."""
    from hydra import compose, initialize_config_dir

    from fadkd.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=recipe", *extra])
    return int(cfg.loss.intermediate_epochs)


def teacher_args(ns, task: str) -> list[str]:
    return [
        f"model={ns.teacher}", f"task={task}", f"task.data_dir={ns.data_dir}", f"train={ns.train}",
        f"train.lr={ns.teacher_lr}", "train.group_by_length=true", f"train.epochs={ns.epochs}", *ns.extra,
        f"hydra.run.dir={ns.out / task / 'teacher'}",
    ]  # fmt: skip


def row_args(ns, task: str, row: str, experiment: str, seed: int, cache: bool = True) -> list[str]:
    args = [f"experiment={experiment}", f"student={ns.student}"]
    if row != "student_alone" or ns.shrink:  # student alone: no teacher, unless the student is built from it
        teacher_dir = ns.out / task / "teacher" / "student"
        args += [f"teacher={ns.teacher}", f"teacher.path={teacher_dir}"]
        if cache and row != "student_alone":
            args += ["cache.enabled=true", f"cache.dir={ns.out / task / 'teacher_cache'}"]
    args += [f"task={task}", f"task.data_dir={ns.data_dir}", f"train={ns.train}", "train.group_by_length=true"]
    epochs = ns.epochs + (ns.long_extra if row.endswith("_long") else 0)
    args += [f"train.epochs={epochs}", f"train.seed={seed}", *ns.extra, *ns.student_extra]
    args += ns.data_extra if is_data_row(row) else []
    return [*args, f"hydra.run.dir={ns.out / task / row / f'seed{seed}'}"]


def recorded_command(run: Path) -> str:
    """`fadkd <verb> <overrides>` from what Hydra recorded for the run (model=X for finetune)."""
    overrides = [str(o) for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
    hydra_cfg = OmegaConf.load(run / ".hydra" / "hydra.yaml")
    overrides += [str(o) for o in hydra_cfg.hydra.overrides.hydra]
    verb = "finetune" if any(o.startswith("teacher@student=") for o in overrides) else "train"
    overrides = [o.replace("teacher@student=", "model=", 1) for o in overrides if not o.startswith(SKIPPED_OVERRIDES)]
    return " ".join(["fadkd", verb, *map(shlex.quote, overrides)])


def live_process_on(run: Path) -> int | None:
    """The pid of a running process whose command line names this run folder (Linux /proc)."""
    targets = {str(run), str(run.resolve())}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a.startswith("hydra.run.dir=") and a.split("=", 1)[1].rstrip("/") in targets for a in args):
            return int(proc.name)
    return None


def ensure_run(ns, verb: str, args: list[str], run: Path) -> None:
    """Reuse a finished run, resume a stopped one, or start it; record commit and machine."""
    if (run / "metrics.json").is_file():
        console.print(f"[dim]reuse {run}[/]")
        recorded = set(recorded_command(run).split()[2:])
        differ = sorted(recorded.symmetric_difference(shlex.quote(a) for a in args))
        if differ:
            console.print(f"[yellow]  {run} was made with other overrides than the suite's now: {' '.join(differ)}")
        return
    extra = []
    if run.exists() and any(run.iterdir()):
        pid = live_process_on(run)
        if pid is not None:
            raise SystemExit(f"{run} has no metrics.json and process {pid} is running it: wait for it to finish")
        has_checkpoint = any((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else False
        extra = ["train.resume=true"] if has_checkpoint else ["train.overwrite=true"]
    command = [ns.fadkd, verb, *args, *extra]
    console.print(f"[bold]$ {shlex.join(['fadkd', *command[1:]])}")
    if ns.dry_run:
        return
    record = {"commit": commit(), "machine": machine(), "started": now()}
    proc = subprocess.run(command, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"fadkd exited with {proc.returncode} for {run}; rerun the suite to resume it")
    write_record(run, {**record, "finished": now()})


def check_teacher(ns, recorded: dict, task: str) -> None:
    """Warn when a teacher fine-tuned again differs from the one the recorded rows were distilled from."""
    line = recorded.get((task, "teacher", 42))
    run = ns.out / task / "teacher"
    if line is None or ns.dry_run or not (run / "metrics.json").is_file():
        return
    metrics = json.loads((run / "metrics.json").read_text())
    now_metrics = metrics["student_final"] or metrics["student"]
    if any(abs(now_metrics.get(k, 0) - v) > 1e-6 for k, v in line["metrics"].items()):
        console.print(
            f"[yellow]{task}: the teacher fine-tuned here scores {now_metrics}, the recorded one {line['metrics']}: "
            "rows recorded earlier were distilled from that other teacher"
        )


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def read_record(run: Path) -> dict:
    path = run / "suite.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_record(run: Path, record: dict) -> None:
    (run / "suite.json").write_text(json.dumps(record, indent=2) + "\n")


def run_line(ns, task: str, row: str, run: Path) -> dict:
    """The run's line in the issue's schema."""
    record = read_record(run)
    if "commit" not in record:  # not launched by the suite: what we know now
        record.update(commit=commit(), machine=machine(), recorded=now())
        write_record(run, record)
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    shrink = {"suite": "shrink", "student": ns.student_label, **run_flags(cfg)} if ns.shrink else {}
    return {
        **shrink,
        "task": task,
        "row": row,
        # After the last epoch: no choice made on the dev set it is scored on. The best of the
        # per-epoch evaluations (the saved student/) is kept beside it.
        "metrics": metrics["student_final"] or metrics["student"],
        "best_metrics": metrics["student"],
        "best_step": metrics["best_step"],
        "epochs": int(cfg.train.epochs),
        "seed": int(cfg.train.seed),
        "command": recorded_command(run),
        "commit": record["commit"],
        "machine": record["machine"],
        "params": metrics["params"]["student"],
        **({"terms": terms} if ns.shrink and (terms := term_magnitudes(run / "steps.jsonl")) else {}),
    }


def recorded_lines(ns) -> dict[tuple[str, str, int], dict]:
    """(task, row, seed) -> the newest line of this suite (same suite kind and student) in --jsonl: a run
    recorded there counts as done even when its folder is gone (another machine, a cleaned outputs/)."""
    found = {}
    for raw in ns.jsonl.read_text().splitlines() if ns.jsonl.is_file() else []:
        x = json.loads(raw)
        if (x.get("suite") == "shrink") == ns.shrink and (not ns.shrink or x.get("student") == ns.student_label):
            found[(x["task"], x["row"], x["seed"])] = x
    return found


def recorded_run(recorded: dict, task: str, row: str, seed: int, args: list[str], run: Path) -> dict | None:
    """The jsonl line of a run whose folder is not here, when it was made with the suite's overrides now."""
    line = recorded.get((task, row, seed))
    if line is None or run.exists():  # a folder here: reuse it or resume it
        return None
    same = set(line["command"].split()[2:]) == {shlex.quote(a) for a in args}
    return line if same else None


def run_flags(cfg) -> dict:
    """features: some feature term was on for part of the run; data: teacher-labelled rows were trained on."""
    loss, task = cfg.get("loss", {}), cfg.get("task", {})
    features = any(float(loss.get(w, 0) or 0) > 0 for w in FEATURE_WEIGHTS)
    data = bool(task.get("augment", 0)) or bool(task.get("unlabelled_rows", 0)) or bool(task.get("unlabelled_file"))
    return {"features": bool(features), "data": data}


def append_lines(path: Path, lines: list[dict]) -> int:
    """Append the lines not already in the file (same content, any order of keys); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seen = set()
    if path.is_file():
        seen = {json.dumps(json.loads(x), sort_keys=True) for x in path.read_text().splitlines() if x.strip()}
    new = [line for line in lines if json.dumps(line, sort_keys=True) not in seen]
    with path.open("a") as f:
        for line in new:
            f.write(json.dumps(line) + "\n")
    return len(new)


def dev_seconds(run: Path, here: str) -> float | None:
    """Seconds to run the dev set through the run's saved model (measured once per machine)."""
    record = read_record(run)
    if record.get("dev_seconds") is not None and record.get("dev_seconds_machine") == here:
        return record["dev_seconds"]
    if not (run / "student" / "config.json").is_file():
        return None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fadkd.report.summary import dev_batches, measure_speed
    from fadkd.run.distributed import resolve_device

    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    model = AutoModelForSequenceClassification.from_pretrained(run / "student")
    batches = dev_batches(cfg, AutoTokenizer.from_pretrained(run / "student"))
    speed = measure_speed(model, batches, resolve_device(cfg["train"]["device"]))
    seconds = sum(len(b["input_ids"]) for b in batches) / speed["examples_per_s"]
    write_record(run, {**record, "dev_seconds": seconds, "dev_seconds_machine": here})
    return seconds


def scored(x: dict) -> dict:
    """The metrics a line's table cell shows: a student's after its last epoch; the teacher's of the checkpoint it
    saved, the one that teaches the students (fadkd keeps the best dev step, which need not be the last), so that
    '% of teacher' is measured against the model that taught."""
    return (x.get("best_metrics") or x["metrics"]) if x["row"] == "teacher" else x["metrics"]


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def build_table(ns, rows: list[str], lines: list[dict], speeds: dict, params: dict) -> tuple[list[str], list[list]]:
    """(header, cells) of the ablation table: one line per row, every task's metrics across."""
    names = {t: next((list(x["metrics"]) for x in lines if x["task"] == t), []) for t in ns.tasks}
    header = ["row", *[f"{t.upper()} {m}" for t in ns.tasks for m in names[t]], "n seeds", "params (M)"]
    header += [f"{t.upper()} dev s" for t in ns.tasks]
    cells = []
    for row in rows:
        mine = [x for x in lines if x["row"] == row]
        line = [LABELS.get(row, row)]
        line += [cell([scored(x)[m] for x in mine if x["task"] == t]) for t in ns.tasks for m in names[t]]
        counts = [sum(x["task"] == t for x in mine) for t in ns.tasks]
        line.append(str(counts[0]) if len(set(counts)) == 1 else " / ".join(map(str, counts)))
        p = params.get(row)
        line.append("–" if p is None else f"{p / 1e6:.1f}")
        line += ["–" if speeds.get((t, row)) is None else f"{speeds[(t, row)]:.2f}" for t in ns.tasks]
        cells.append(line)
    return header, cells


def write_markdown(ns, invocation: str, rows: list[str], lines: list[dict], header, cells, here: str) -> None:
    first = {(x["task"], x["row"]): x for x in reversed(lines)}  # the first seed's line of each row
    out = [
        f"# Quality suite: {', '.join(t.upper() for t in ns.tasks)}",
        "",
        f"- command: `{invocation}`",
        f"- commit: `{commit()}` (each run's own commit: bench/results/quality.jsonl)",
        f"- machine: {here}",
        f"- date: {now()}",
        f"- teacher `{ns.teacher}` fine-tuned once per task; student `{ns.student}` {ns.student_label}; seeds "
        f"{', '.join(map(str, ns.seeds))}; {ns.epochs} epoch(s); train={ns.train}",
        "",
        "Dev metrics ×100 after the last epoch (no choice made on the dev set they are scored on), "
        "mean ± sample standard deviation over the seeds (the teacher: one run, its saved checkpoint, the one that "
        "teaches: its best dev step). "
        "Dev s: seconds to run the whole dev set through the row's model (batch train.eval_batch_size, "
        "forward passes only, best of several passes, on this machine; measure on an otherwise idle machine).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(line) + " |" for line in cells],
        "",
        *paired_section(ns, lines),
        *magnitudes_section(ns, lines),
        "## Commands (first seed of each row)",
        "",
        *[f"- {t} {r}: `{first[(t, r)]['command']}`" for t in ns.tasks for r in rows if (t, r) in first],
        "",
        "## Every run",
        "",
        "| task | row | seed | " + " | ".join(["metrics ×100"]) + " | commit |",
        "|---|---|---|---|---|",
        *[
            f"| {x['task']} | {x['row']} | {x['seed']} | "
            + ", ".join(f"{k} {100 * v:.2f}" for k, v in x["metrics"].items())
            + f" | {x['commit']} |"
            for x in lines
        ],
    ]
    ns.md.parent.mkdir(parents=True, exist_ok=True)
    ns.md.write_text("\n".join(out) + "\n")


# Paired comparisons (same seed, same data order): the row, then the baseline it is measured against.
PAIRS = [
    ("kd_only", "student_alone"),
    ("recipe", "student_alone"),
    ("recipe", "kd_only"),
    ("kd_only_data", "student_alone"),
    ("recipe_data", "student_alone"),
    ("recipe_data", "kd_only"),
    ("recipe_data", "kd_only_data"),
    ("full", "student_alone"),
    ("full", "kd_only"),
]
BEST_KD_DATA = "best of kd_only_data, kd_only_data_long"


def pairs_for(rows: list[str], lines: list[dict], task: str) -> list[tuple[str, str]]:
    """PAIRS, then each further row against student_alone, kd_only and the KD rows on its own data: the KD
    controls with the recipe's epochs (issue 25's fair control) and the better of the two on the task."""
    pairs = list(PAIRS)
    for row in rows:
        if (
            row in ("teacher", "student_alone", "kd_only", "kd_only_data")
            or row.startswith("kd_only_")
            and row.endswith("_long")
        ):
            if row.endswith("_long"):
                pairs.append((row, row.removesuffix("_long")))
            continue
        bases = ["student_alone", "kd_only", "kd_only_long"]
        if is_data_row(row):
            bases += ["kd_only_data", "kd_only_data_long", BEST_KD_DATA]
        pairs += [(row, base) for base in bases if (row, base) not in pairs]
    return pairs


def best_kd_data(lines: list[dict], task: str) -> str:
    """kd_only_data or kd_only_data_long, whichever has the higher mean main metric on the task."""
    means = {}
    for row in ("kd_only_data", "kd_only_data_long"):
        values = [x["metrics"][main_metric(task)] for x in lines if x["task"] == task and x["row"] == row]
        if values:
            means[row] = statistics.fmean(values)
    return max(means, key=means.get) if means else "kd_only_data"


def paired_differences(lines: list[dict], task: str, row: str, base: str) -> list[tuple[int, float]]:
    """(seed, row − base on the task's main metric, ×100) for every seed both rows have."""
    base = best_kd_data(lines, task) if base == BEST_KD_DATA else base
    by_seed = {(x["row"], x["seed"]): x["metrics"] for x in lines if x["task"] == task}
    metric = main_metric(task)
    seeds = sorted(s for r, s in by_seed if r == row and (base, s) in by_seed)
    return [(s, 100 * (by_seed[(row, s)][metric] - by_seed[(base, s)][metric])) for s in seeds]


def paired_section(ns, lines: list[dict]) -> list[str]:
    """Markdown lines: each row minus its baseline, seed by seed, and the mean ± std of those differences."""
    out = []
    rows = list(dict.fromkeys(x["row"] for x in lines))
    for task in ns.tasks:
        for row, base in pairs_for(rows, lines, task):
            diffs = paired_differences(lines, task, row, base)
            if not diffs:
                continue
            values = [d for _, d in diffs]
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            per_seed = ", ".join(f"{s}: {d:+.2f}" for s, d in diffs)
            if base == BEST_KD_DATA:
                base = f"{best_kd_data(lines, task)} (the better KD on this data)"
            out.append(f"| {task} | {row} − {base} | {per_seed} | {statistics.fmean(values):+.2f}{spread} |")
    if not out:
        return []
    head = [
        "## Paired differences (same seed, the task's main metric, ×100)",
        "",
        "| task | rows | per seed | mean ± std |",
    ]
    return [*head, "|---|---|---|---|", *out, ""]


PREDICTION_TERMS = ("kd", "ce")
BOOKKEEPING = ("step", "loss", "lr", "grad_norm", "samples_per_s", "feature_scale", "prediction_scale", "epoch")


def term_magnitudes(steps: Path) -> dict[str, float]:
    """Each logged (unweighted) term's mean over the steps where its stage is on: the feature terms where
    feature_scale > 0, KD and the task loss where prediction_scale > 0 (all steps when a run has no stages)."""
    sums, counts = {}, {}
    for raw in steps.read_text().splitlines() if steps.is_file() else []:
        row = json.loads(raw)
        for key, value in row.items():
            if key in BOOKKEEPING or "/" in key or not isinstance(value, (int, float)):
                continue
            scale = row.get("prediction_scale" if key in PREDICTION_TERMS else "feature_scale", 1.0)
            if scale > 0:
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def magnitudes_section(ns, lines: list[dict]) -> list[str]:
    """Markdown: the unweighted terms' magnitudes of each feature row's first seed, in the stage each is on."""
    out = []
    for task in ns.tasks:
        for row in dict.fromkeys(x["row"] for x in lines if x["task"] == task and x.get("features")):
            first = min((x for x in lines if x["task"] == task and x["row"] == row), key=lambda x: x["seed"])
            seed, terms = first["seed"], first.get("terms")
            terms = terms or term_magnitudes(ns.out / task / row / f"seed{seed}" / "steps.jsonl")
            if terms:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(terms.items()))
                out.append(f"| {task} | {row} | {seed} | {shown} |")
    if not out:
        return []
    head = [
        "## Term magnitudes (unweighted, mean over the logged steps of the stage where each term is on)",
        "",
        "| task | row | seed | terms |",
        "|---|---|---|---|",
    ]
    return [*head, *out, ""]


def print_table(header, cells, title: str) -> None:
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for line in cells:
        table.add_row(*line)
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["mrpc", "rte"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--full", default="ablation_full", help="experiment config of the full row")
    p.add_argument("--rows", nargs="*", default=[], metavar="NAME=EXPERIMENT", help="extra rows, e.g. x=ablation_x")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="ROW",
        help="train only these rows (and the teacher); the table has every finished run",
    )
    p.add_argument("--teacher", default="mpnet-base", help="teacher preset (fine-tuned with `fadkd finetune model=`)")
    p.add_argument("--student", default="minilm-l6", help="student preset")
    p.add_argument("--train", default="pretrained", help="train config group of every run")
    p.add_argument("--teacher-lr", default="2e-5")
    p.add_argument("--data-dir", default="../shared/data/glue", help="GLUE folder (task.data_dir)")
    p.add_argument("--out", type=Path, default=Path("outputs/quality"), help="run folders: OUT/<task>/<row>/seed<k>")
    p.add_argument("--jsonl", type=Path, default=Path("bench/results/quality.jsonl"))
    p.add_argument("--md", type=Path, help="default: bench/results/quality_<tasks>.md")
    p.add_argument("--extra", nargs="*", default=[], metavar="OVERRIDE", help="more overrides for every run")
    p.add_argument(
        "--shrink",
        action="store_true",
        help="issue 18's rows: student_alone, kd_only, recipe, kd_only_data, recipe_data (lines carry suite=shrink)",
    )
    p.add_argument("--student-extra", nargs="*", default=[], metavar="OVERRIDE", help="overrides of the student rows")
    p.add_argument("--student-label", default="", help="--shrink: the student's description in quality.jsonl")
    p.add_argument("--data-extra", nargs="*", default=[], metavar="OVERRIDE", help="overrides of the *_data rows only")
    p.add_argument("--fadkd", default=str(Path(sys.executable).parent / "fadkd"), help="the fadkd executable")
    p.add_argument("--no-speed", action="store_true", help="leave out the dev-set inference times")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the missing runs, run nothing")
    p.add_argument(
        "--report-only", action="store_true", help="run nothing; the table and lines of the finished runs alone"
    )
    ns = p.parse_args(argv)
    ns.md = ns.md or Path(f"bench/results/quality_{'_'.join(ns.tasks)}.md")
    ns.long_extra = recipe_intermediate_epochs(ns.extra) if ns.shrink else 0  # the _long rows' extra epochs
    return ns


def main(argv: list[str] | None = None) -> None:
    ns = parse_args(argv)
    invocation = shlex.join(["scripts/glue_suite.py", *(sys.argv[1:] if argv is None else argv)])
    row_configs = parse_rows(ns.full, ns.rows, ns.shrink)
    unknown = sorted(set(ns.only or []) - set(row_configs))
    if unknown:
        raise SystemExit(f"--only {' '.join(unknown)}: no such row; the rows are {', '.join(row_configs)}")
    cached = {row: uses_cache(experiment, ns.extra) for row, experiment in row_configs.items()}
    for row in (r for r, c in cached.items() if not c):
        console.print(f"[yellow]{row}: loss.attn=relations, which the teacher cache does not hold: a live teacher")
    recorded = recorded_lines(ns)
    for task in ns.tasks if not ns.report_only else []:
        runs = [
            (row, seed, run, row_args(ns, task, row, experiment, seed, cached[row]))
            for seed in ns.seeds
            for row, experiment in row_configs.items()
            if not ns.only or row in ns.only
            for run in [ns.out / task / row / f"seed{seed}"]
        ]
        todo = [
            (row, seed, run, args)
            for row, seed, run, args in runs
            if not recorded_run(recorded, task, row, seed, args, run)
        ]
        if len(todo) < len(runs):
            console.print(
                f"[dim]{task}: {len(runs) - len(todo)} run(s) recorded in {ns.jsonl} (their folders are not here)"
            )
        if not todo:
            continue
        ensure_run(ns, "finetune", teacher_args(ns, task), ns.out / task / "teacher")
        check_teacher(ns, recorded, task)
        for row, _, run, args in todo:
            ensure_run(ns, "train", args, run)
            if (run / "metrics.json").is_file():  # each run's line as it finishes: a cut-off suite loses none
                append_lines(ns.jsonl, [run_line(ns, task, row, run)])
    if ns.dry_run:
        return
    here = machine()
    rows = ["teacher", *row_configs]
    lines, speeds, params = [], {}, {}
    for task in ns.tasks:
        runs = [("teacher", 42, ns.out / task / "teacher")]
        runs += [(row, seed, ns.out / task / row / f"seed{seed}") for seed in ns.seeds for row in row_configs]
        for row, seed, run in runs:
            if (run / "metrics.json").is_file():
                lines.append(run_line(ns, task, row, run))
                if (task, row) not in speeds:  # the first run of a row (all seeds share the architecture)
                    speeds[(task, row)] = None if ns.no_speed else dev_seconds(run, here)
            elif (task, row, seed) in recorded:
                lines.append(recorded[(task, row, seed)])  # recorded earlier; its folder is not here
            if lines and lines[-1]["row"] == row and lines[-1].get("params") and row not in params:
                params[row] = lines[-1]["params"]
    rows = [row for row in rows if any(x["row"] == row for x in lines)]
    appended = append_lines(ns.jsonl, lines)
    header, cells = build_table(ns, rows, lines, speeds, params)
    write_markdown(ns, invocation, rows, lines, header, cells, here)
    print_table(header, cells, f"quality suite: {' '.join(ns.tasks)} (dev ×100, mean ± std over seeds)")
    console.print(f"{ns.md} written; {appended} new line(s) in {ns.jsonl} ({len(lines) - appended} already there)")


if __name__ == "__main__":
    main()
