"""Finished run folders: finding them, their metrics.json, the overrides Hydra recorded, the metric families."""

import json
from pathlib import Path

from omegaconf import OmegaConf

from fadkd.errors import FadkdError


def find_runs(paths: list[Path]) -> list[Path]:
    """Every run folder (one holding metrics.json) at or below `paths`, sorted, no duplicates."""
    runs: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise FadkdError(f"{path} does not exist; give run folders or a multirun folder")
        runs.update(p.parent for p in path.rglob("metrics.json"))
    if not runs:
        raise FadkdError(
            f"no finished runs (folders with metrics.json) under {', '.join(map(str, paths))}; "
            "train first with `fadkd train` or `fadkd train -m ...`"
        )
    return sorted(runs)


def overrides_of(run: Path) -> list[str]:
    """The command-line overrides Hydra recorded for the run (empty when not run by Hydra)."""
    path = run / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.exists() else []


def read_metrics(run: Path) -> dict:
    """A run's metrics.json, or one line saying it is damaged (a run cut off while writing it)."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise FadkdError(f"{run / 'metrics.json'} is not valid JSON ({err}); rerun the run, or remove it") from None
    if not isinstance(metrics, dict):
        raise FadkdError(f"{run / 'metrics.json'} holds no metrics object; rerun the run, or remove it")
    return metrics


FAMILIES = (("perplexity", "perplexity"), ("bleu", "BLEU"), ("rouge", "ROUGE"), ("cer", "CER"),
            ("tokens_per_s", "speed (tokens/s)"), ("score_tokens_per_s", "speed (tokens/s)"))  # fmt: skip


def metric_family(name: str) -> str | None:
    """The panel a dev metric goes on: causal-LM metrics by kind (BLEU, ROUGE, CER, ...); None: not plotted."""
    if name == "params":
        return None  # a constant, not a score
    return next((label for prefix, label in FAMILIES if name.startswith(prefix)), "dev metric")
