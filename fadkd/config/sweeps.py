"""Many runs at once: Hydra's launchers and the Optuna sweeper, and what fadkd adds to them.

- `threads_per_job`: parallel jobs share the machine's cores, so each gets cores // parallel
  jobs torch threads (train.num_threads=0 means exactly this), never every core each.
- `direction`: the resolver `${fadkd_direction:${task.name}}` behind hparams_search=weights's
  hydra.sweeper.direction: maximize the task's main metric, minimize it for causal-LM tasks
  (perplexity, lower is better).
- `BestTrial`: a Hydra callback that, when a sweep ends, writes <sweep dir>/best.yaml (the best
  job's folder, metric, value and overrides, and the command that reruns it) and
  <sweep dir>/best_config.yaml (that job's whole composed config).
"""

import json
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fadkd.data.lm_text import LOWER_IS_BETTER, is_lm_task


def threads_per_job(hydra_cfg) -> int:
    """torch threads for one job of a sweep: cores // jobs running at once (at least 1); 0 = torch's default.

    joblib runs `hydra.launcher.n_jobs` jobs at once (-1: one per core); submitit gives each job
    `hydra.launcher.cpus_per_task` cores when set. Other launchers run one job at a time.
    """
    launcher = hydra_cfg.launcher if "launcher" in hydra_cfg else {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        n_jobs = launcher.get("n_jobs", -1)
        parallel = cores if n_jobs is None or n_jobs < 1 else n_jobs
        return max(1, cores // parallel)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return 0


def record_failure(hydra_cfg) -> bool:
    """Whether a job's FadkdError should be raised for Hydra to record, rather than end the process.

    In a worker of a parallel launcher (joblib, submitit) exiting would break its pool; in an
    Optuna search a failed trial (e.g. diverged at a high learning rate) is one failed trial.
    A plain run or a basic sweep stops with the one-line message.
    """
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return False
    launcher = str(hydra_cfg.launcher.get("_target_", "")) if "launcher" in hydra_cfg else ""
    sweeper = str(hydra_cfg.sweeper.get("_target_", "")) if "sweeper" in hydra_cfg else ""
    return "BasicLauncher" not in launcher or "optuna" in sweeper.lower()


def direction(task_name: str) -> str:
    """maximize, or minimize for causal-LM tasks (their main metric is perplexity)."""
    lower = is_lm_task(task_name) or task_name in LOWER_IS_BETTER
    return "minimize" if lower else "maximize"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fadkd_direction"):
        OmegaConf.register_new_resolver("fadkd_direction", direction)


class BestTrial(Callback):
    """At the end of a sweep: best.yaml and best_config.yaml in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        written = write_best(sweep)
        if written is not None:
            run, metric, value = written["run"], written["metric"], written["value"]
            print(f"best run: {run} ({metric}={value:.4f}); its config: {sweep / 'best_config.yaml'}")


def _overrides(run: Path) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


def write_best(sweep: Path) -> dict | None:
    """Pick the sweep's best finished job by its main dev metric; write best.yaml / best_config.yaml."""
    runs = []
    for metrics_file in sorted(sweep.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        value = (metrics.get("student") or {}).get(metrics["main_metric"])
        if value is not None:
            runs.append((metrics_file.parent, metrics["main_metric"], value))
    if not runs:
        return None
    lower = runs[0][1] in LOWER_IS_BETTER
    run, metric, value = (min if lower else max)(runs, key=lambda r: r[2])  # ties: the first job
    optuna = sweep / "optimization_results.yaml"  # the Optuna sweeper's pick, where it wrote one
    if optuna.exists():
        wanted = {f"{k}={v}" for k, v in (OmegaConf.load(optuna).get("best_params") or {}).items()}
        run, metric, value = next((r for r in runs if wanted <= set(_overrides(r[0]))), (run, metric, value))
    overrides = _overrides(run)
    best = {
        "run": str(run),
        "metric": metric,
        "value": value,
        "direction": "minimize" if lower else "maximize",
        "overrides": overrides,
        "command": " ".join(["fadkd train", *(f"'{o}'" if "," in o or " " in o else o for o in overrides)]),
    }
    (sweep / "best.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(best)))
    if (run / "config.yaml").exists():
        (sweep / "best_config.yaml").write_text((run / "config.yaml").read_text())
    return best
