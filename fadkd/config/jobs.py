"""What the command line of `fadkd train` holds, checked before Hydra runs anything.

- `check_yaml`: the YAML files of the user's own config folders (`--config-dir DIR`) that the
  command picks (`experiment=mine`, the primary config) parse; a mistake is reported as
  file:line:column, not as PyYAML's traceback from inside Hydra.
- `check_jobs`: every job of a `-m` sweep of Hydra's basic sweeper is composed and converted to the
  schema before the first one starts: the basic sweeper starts job 0 before it composes job 1, so
  `-m train.lr=0.001,-1` would otherwise train job 0 fully before refusing job 1. A sweep value Hydra
  cannot expand (`range(0,1,0)`) is named too. Other sweepers (Optuna's search) choose values as
  they go, within the ranges they are given.
"""

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from fadkd.config.schema import register_configs, to_config
from fadkd.errors import FadkdError

ALL_JOBS = 64  # sweeps up to this many jobs are checked job by job; larger ones value by value


def config_dirs(args: list[str]) -> list[Path]:
    """The folders given with --config-dir / -cd (either `--config-dir DIR` or `--config-dir=DIR`)."""
    dirs = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]).expanduser())
        elif arg.startswith(("--config-dir=", "-cd=")):
            dirs.append(Path(arg.split("=", 1)[1]).expanduser())
    return dirs


def overrides_only(args: list[str]) -> list[str]:
    """The key=value arguments, without Hydra's flags and their values."""
    flags_with_value = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--cfg", "-c")
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in flags_with_value:
            skip = True
        elif not arg.startswith("-") and "=" in arg:
            out.append(arg)
    return out


def check_yaml(args: list[str], config_name: str) -> None:
    """The chosen files of the user's config folders are valid YAML, or one line with file:line:column."""
    for folder in config_dirs(args):
        chosen = [folder / f"{config_name}.yaml"]
        for arg in overrides_only(args):
            key, value = arg.split("=", 1)
            group = key.lstrip("+~").split("@")[0]
            if "." not in group and value and "," not in value:
                chosen.append(folder / group / f"{value}.yaml")
        for path in chosen:
            if path.is_file():
                _parse(path)


def _parse(path: Path) -> None:
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = err.problem or err.context or "cannot be parsed"
        tabs = " (YAML indents with spaces, never tabs)" if "\t" in path.read_text(encoding="utf-8") else ""
        raise FadkdError(f"{where}: not valid YAML: {problem}{tabs}; fix the file and run again") from None
    except yaml.YAMLError as err:
        raise FadkdError(f"{path}: not valid YAML ({err}); fix the file and run again") from None
    except UnicodeDecodeError as err:
        raise FadkdError(f"{path}: not valid UTF-8 ({err.reason}); save it as UTF-8") from None


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The overrides of each job the basic sweeper would run, in its order."""
    overrides = overrides_only(args)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        return BasicSweeper.split_arguments(parsed, None)[0]
    except Exception as err:  # noqa: BLE001 - Hydra's grammar and Python's range() raise several types
        bad = next((o for o in overrides if _fails(o)), " ".join(overrides))
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise FadkdError(
            f"-m {bad}: Hydra cannot expand this sweep ({reason}); write a,b,c or range(start,stop,step) with a "
            "step that is not 0"
        ) from None


def _fails(override: str) -> bool:
    try:
        BasicSweeper.split_arguments(OverridesParser.create().parse_overrides([override]), None)
    except Exception:  # noqa: BLE001 - as in sweep_jobs
        return True
    return False


def _to_check(jobs: list[list[str]]) -> list[int]:
    """Every job of a small sweep; of a large one, the jobs that bring a value no earlier checked job had."""
    if len(jobs) <= ALL_JOBS:
        return list(range(len(jobs)))
    seen, picked = set(), []
    for number, job in enumerate(jobs):
        if not set(job) <= seen:
            picked.append(number)
            seen.update(job)
    return picked


def check_jobs(conf_dir: str, config_name: str, args: list[str]) -> None:
    """Compose and convert each job of a basic `-m` sweep; the first bad one is named before any starts."""
    given = overrides_only(args)
    if any(a.split("=", 1)[0].lstrip("+~") in ("hparams_search", "hydra/sweeper") for a in given):
        return  # Optuna's search: its sweeper picks the values
    jobs = sweep_jobs(args)
    if len(jobs) < 2:
        return
    extra = [f"hydra.searchpath=[{','.join('file://' + str(d.absolute()) for d in config_dirs(args))}]"]
    extra = extra if config_dirs(args) else []
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        for number in _to_check(jobs):
            job = [o for o in jobs[number] if not o.startswith("hydra.")]
            try:
                composed = compose(config_name=config_name, overrides=[*job, *extra])
            except Exception:  # noqa: BLE001 - a group option Hydra cannot find: Hydra says so, in its words
                break
            try:
                to_config(composed)
            except FadkdError as err:
                raise FadkdError(
                    f"job {number} of the sweep's {len(jobs)} ({' '.join(job)}): {err}; no job was started"
                ) from None
    GlobalHydra.instance().clear()
