"""`fadkd plot`: PNGs that show what the distillation did, from a run's own files.

For a run folder (written to <run>/plots/):
  loss_terms.png  every loss term over steps, unweighted and weighted (term × its weight);
  layer_pairs.png each layer pair's feature / attention loss at the first vs the last logged
                  step: did alignment improve at every pair?
  dev_metric.png  dev metrics over steps (evals.jsonl), the teacher's score as a reference;
  balance.png     loss.balance=magnitude|gradnorm: each term's factor over steps (steps.jsonl balance_<term>).
For a multirun folder, each run's plots plus <multirun>/plots/sweep.png: the dev main metric
against every swept value.

Everything is read from steps.jsonl, evals.jsonl, metrics.json, config.yaml and
.hydra/overrides.yaml, so plots can be drawn for any finished (or running) run.
"""

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, works on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from fadkd.errors import FadkdError  # noqa: E402
from fadkd.losses.table import TERMS  # noqa: E402
from fadkd.report.runs import find_runs, metric_family, overrides_of, read_metrics  # noqa: E402

# Logged term -> the loss weight that multiplies it (config.yaml, loss.<weight>).
TERM_WEIGHTS = {t.name: t.weight for t in TERMS}
TERM_LABELS = {t.name: t.title for t in TERMS}
TERM_COLORS = {t.name: t.color for t in TERMS}
LAYER_TERMS = tuple(t.name for t in TERMS if t.layers)  # logged per layer pair too
# Overrides that name the idea of a run go first in titles; the ones that size it follow.
IDEA_KEYS = ("experiment", "loss", "mapping", "teacher", "student", "task=", "cache")
# Overrides that hold paths or only shrink a run: left out of titles, they name no idea.
QUIET_KEYS = ("task.data_dir", "teacher.path", "student.path", "teacher.tokenizer", "student.tokenizer", "hydra.")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a jsonl log; none when the file is absent (train.logger=none)."""
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    rows = []
    for n, line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            if n == lines[-1][0]:  # the last line of a run stopped while writing it: the rows before it stand
                break
            raise FadkdError(f"{path}:{n}: not a JSON row ({err}); the log is damaged: rerun the run") from None
    return rows


def run_title(run: Path) -> str:
    """The run's key overrides (what makes it differ from the defaults), wrapped for a title."""
    keys = [o for o in overrides_of(run) if not o.lstrip("+~").startswith(QUIET_KEYS)]
    keys.sort(key=lambda o: not o.lstrip("+~").startswith(IDEA_KEYS))  # stable: order kept within each
    text = " ".join(keys) if keys else "default config"
    return "\n".join(textwrap.wrap(text, 90))


def loss_weights(run: Path) -> dict[str, float]:
    """Each term's weight from the run's composed config (config.yaml)."""
    loss = OmegaConf.load(run / "config.yaml").loss
    return {term: float(loss.get(key, 0.0)) for term, key in TERM_WEIGHTS.items()}  # a key newer than the run: 0


def _figure(ncols: int, title: str, width: float = 6.5, height: float = 4.5):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    # About ten characters an inch at this size: rewrap so a narrow figure does not cut its title.
    fig.suptitle("\n".join(textwrap.wrap(" ".join(title.split("\n")), int(9.5 * width * ncols))), fontsize=11)
    return fig, axes[0]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _step_axis(ax) -> None:
    """Steps are whole numbers; a short run should not show step 2.25."""
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _use_log_scale(ax, series: list[list[float]]) -> None:
    """Terms differ by orders of magnitude; a log axis shows all of them when it can."""
    values = [v for s in series for v in s]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")


def plot_loss_terms(run: Path, steps: list[dict], out: Path) -> Path:
    """Unweighted terms (what each term measures) beside weighted ones (what the optimiser sees)."""
    weights = loss_weights(run)
    terms = [t for t in TERM_WEIGHTS if any(t in row for row in steps)]
    x = [row["step"] for row in steps]
    fig, (raw, weighted) = _figure(2, f"Loss terms — {run_title(run)}")

    def scaled(row: dict, t: str) -> float:  # what the optimiser saw: × loss.balance's factor when logged
        return weights[t] * row.get(f"balance_{t}", 1.0) * row.get(t, float("nan"))

    for term in terms:
        ys = [row.get(term, float("nan")) for row in steps]
        color = TERM_COLORS[term]  # the same colour for a term in every plot
        raw.plot(x, ys, marker=".", color=color, label=TERM_LABELS[term])
        weighted.plot(
            x, [scaled(row, term) for row in steps], marker=".", color=color, label=f"{weights[term]:g} × {term}"
        )
    weighted.plot(x, [row["loss"] for row in steps], "k--", label="total L")
    _use_log_scale(raw, [[row[t] for row in steps if t in row] for t in terms])
    _use_log_scale(weighted, [[scaled(row, t) for row in steps if t in row] for t in terms])
    raw.set_title("unweighted terms")
    weighted.set_title("weighted (term × weight), and the total")
    for ax in (raw, weighted):
        _step_axis(ax)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return _save(fig, out / "loss_terms.png")


def pair_terms(row: dict) -> dict[str, dict[str, float]]:
    """{"cos": {"s1_t2": 0.3, ...}, ...} from a row's "cos/s1_t2" keys, pairs in logged order."""
    found: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if "/" in key:
            kind, pair = key.split("/", 1)
            found.setdefault(kind, {})[pair] = value
    return found


def plot_layer_pairs(run: Path, steps: list[dict], out: Path) -> Path | None:
    """First vs last logged value of each pair's term; None when no layer term was on."""
    first, last = pair_terms(steps[0]), pair_terms(steps[-1])
    kinds = [k for k in LAYER_TERMS if k in first and k in last]
    if not kinds:
        return None
    start, end = steps[0]["step"], steps[-1]["step"]
    fig, axes = _figure(len(kinds), f"Per layer pair, step {start} vs step {end} — {run_title(run)}", width=5)
    for ax, kind in zip(axes, kinds):
        pairs = list(first[kind])
        xs = range(len(pairs))
        ax.bar([i - 0.2 for i in xs], [first[kind][p] for p in pairs], 0.4, label=f"step {start}", color="#bbbbbb")
        ends = [last[kind].get(p, float("nan")) for p in pairs]
        colors = ["#2a9d4b" if e < first[kind][p] else "#d1495b" for p, e in zip(pairs, ends)]
        ax.bar([i + 0.2 for i in xs], ends, 0.4, label=f"step {end}", color=colors)
        for i, p, e in zip(xs, pairs, ends):
            change = (e - first[kind][p]) / first[kind][p] if first[kind][p] else float("nan")
            ax.annotate(f"{change:+.1%}", (i + 0.2, e), ha="center", va="bottom", fontsize=9)
        tallest = max([first[kind][p] for p in pairs] + [e for e in ends if e == e])
        ax.set_ylim(0, tallest * 1.3)  # headroom: the legend and the % labels sit above the bars
        ax.set_xticks(list(xs), [p.replace("_", "↔") for p in pairs])
        ax.set_title(f"{TERM_LABELS[kind]}: green = improved, red = worse", fontsize=10)
        ax.set_xlabel("layer pair (student ↔ teacher)")
        ax.set_ylabel(f"{kind} loss (unweighted)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=9, loc="upper left", ncol=2)
    return _save(fig, out / "layer_pairs.png")


def plot_balance(run: Path, steps: list[dict], out: Path) -> Path | None:
    """loss.balance's factor on each term over steps; None when the run logged none."""
    terms = [t for t in TERM_WEIGHTS if any(f"balance_{t}" in row for row in steps)]
    if not terms:
        return None
    fig, (ax,) = _figure(1, f"Balance factors (|reference| / |term|, detached) — {run_title(run)}", width=8)
    for term in terms:
        rows = [row for row in steps if f"balance_{term}" in row]
        ys = [r[f"balance_{term}"] for r in rows]
        ax.plot([r["step"] for r in rows], ys, marker=".", color=TERM_COLORS[term], label=TERM_LABELS[term])
    _use_log_scale(ax, [[r[f"balance_{t}"] for r in steps if f"balance_{t}" in r] for t in terms])
    _step_axis(ax)
    ax.set_ylabel("factor on the term")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return _save(fig, out / "balance.png")


def plot_dev_metric(run: Path, evals: list[dict], metrics: dict, out: Path) -> Path | None:
    """Dev metrics at each evaluation, one panel per family (GLUE: one); the main one bold, the teacher dashed."""
    if not evals:
        return None
    main = metrics.get("main_metric")
    families: dict[str, list[str]] = {}
    for name in (k for k in evals[0] if k != "step"):
        if (family := metric_family(name)) is not None:
            families.setdefault(family, []).append(name)
    x = [row["step"] for row in evals]
    fig, axes = _figure(len(families), f"Dev metrics — {run_title(run)}", width=8 if len(families) == 1 else 5)
    for ax, (family, names) in zip(axes, families.items()):
        for name in names:
            style = {"lw": 2.5 if name == main else 1, "ls": ":" if name.endswith("_vs_teacher") else "-"}
            ax.plot(x, [row.get(name) for row in evals], marker="o", label=f"student {name}", **style)
        teacher = (metrics.get("teacher") or {}).get(main) if main in names else None
        if teacher is not None:
            ax.axhline(teacher, color="k", ls="--", lw=1, label=f"teacher {main} = {teacher:.3f}")
        _step_axis(ax)
        ax.set_ylabel(f"{family} (main: {main})" if main in names else family)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out / "dev_metric.png")


def plot_run(run: Path, out: Path | None = None) -> list[Path]:
    """Every plot a run's files allow, into `out` (default <run>/plots/)."""
    steps = read_jsonl(run / "steps.jsonl")
    evals = read_jsonl(run / "evals.jsonl")
    metrics = read_metrics(run) if (run / "metrics.json").is_file() else {}  # a damaged one: one line naming it
    if not steps and not evals:
        raise FadkdError(
            f"{run} has no steps.jsonl or evals.jsonl to plot (trained with train.logger=none?); "
            "train with train.logger=jsonl or train.logger=tensorboard"
        )
    out = out or run / "plots"
    written = [plot_loss_terms(run, steps, out), plot_layer_pairs(run, steps, out)] if steps else []
    written += [plot_balance(run, steps, out)] if steps else []
    written.append(plot_dev_metric(run, evals, metrics, out))
    return [p for p in written if p is not None]


def _as_number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def sweep_points(runs: list[Path]) -> tuple[list[str], list[tuple[dict[str, str], float, str, float]]]:
    """Swept keys (values that differ between runs) and, per run, (overrides, main score,
    metric, teacher's main score)."""
    points = []
    for run in runs:
        m = read_metrics(run)
        score = (m.get("student") or {}).get(m["main_metric"])
        teacher = (m.get("teacher") or {}).get(m["main_metric"])
        overrides = dict(o.lstrip("+~").split("=", 1) for o in overrides_of(run) if "=" in o)
        points.append((overrides, score, m["main_metric"], teacher))
    keys = sorted({k for p in points for k in p[0]})
    swept = [k for k in keys if len({p[0].get(k) for p in points}) > 1]
    return swept, points


def shared_overrides(swept: list[str], points: list[tuple]) -> str:
    """What every run of the sweep was given (the sweep's fixed setting), for the title."""
    first = points[0][0]
    shared = [f"{k}={v}" for k, v in first.items() if k not in swept and not k.startswith(QUIET_KEYS)]
    return "\n".join(textwrap.wrap("all runs: " + " ".join(shared), 100)) if shared else "all runs: defaults"


def plot_sweep(root: Path, runs: list[Path], out: Path | None = None) -> Path | None:
    """Dev main metric against each swept value; one line per setting of the other swept keys."""
    swept, points = sweep_points(runs)
    if not swept:
        return None
    metric = points[0][2]
    title = f"Sweep over {', '.join(swept)}: {len(runs)} runs in {root.name}\n{shared_overrides(swept, points)}"
    fig, axes = _figure(len(swept), title, width=max(6.5, 9 / len(swept)))
    teachers = {p[3] for p in points}
    for ax, key in zip(axes, swept):
        others = [k for k in swept if k != key]
        groups: dict[str, list[tuple]] = {}
        for overrides, score, *_ in points:
            if score is not None and key in overrides:
                label = " ".join(f"{k}={overrides.get(k, '-')}" for k in others) or "student"
                groups.setdefault(label, []).append((_as_number(overrides[key]), score))
        numeric = all(isinstance(v, float) for pts in groups.values() for v, _ in pts)
        categories = sorted({str(v) for pts in groups.values() for v, _ in pts})
        for label, pts in sorted(groups.items()):
            pts.sort(key=lambda p: p[0] if numeric else str(p[0]))
            xs = [v if numeric else categories.index(str(v)) for v, _ in pts]
            ax.plot(xs, [s for _, s in pts], marker="o", label=label)
        if not numeric:
            ax.set_xticks(range(len(categories)), categories, rotation=20)
        if len(teachers) == 1 and None not in teachers:  # one teacher for the whole sweep: a reference line
            ax.axhline(next(iter(teachers)), color="k", ls="--", lw=1, label="teacher")
        ax.set_xlabel(key)
        ax.set_ylabel(f"student dev {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, (out or root / "plots") / "sweep.png")


def plot_path(path: Path, out: Path | None = None) -> list[Path]:
    """A run folder -> its plots; a multirun folder -> each run's plots and the sweep plot.

    `out` (fadkd plot --out): where they go instead of <run>/plots/ (a multirun's runs under out/<run>/).
    """
    if not path.is_dir():
        raise FadkdError(f"{path} does not exist or is not a folder; give a run folder or a multirun folder")
    if (path / "config.yaml").is_file():
        return plot_run(path, out)
    runs = find_runs([path])
    written = [p for run in runs for p in plot_run(run, out / run.relative_to(path) if out else None)]
    sweep = plot_sweep(path, runs, out) if len(runs) > 1 else None
    return written + ([sweep] if sweep else [])
