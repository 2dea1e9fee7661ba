"""fadkd's command line: `fadkd <verb> [overrides]`.

train     Hydra main over conf/config.yaml (overrides, -m multirun, --help, --cfg job all work)
finetune  the same loop with hard labels only, over conf/finetune.yaml: model=<teacher preset>
eval, table, plot, report: a run's dev metrics again (run_dir=<run>), a results table, its figures, report.md

Each verb imports its own modules when it runs (the one place fadkd imports inside functions): the
training stack loads torch and transformers, seconds that `fadkd --help`, a mistyped argument or
`fadkd table` must not wait for. Everything below the verbs imports at the top of its module.
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from safetensors import SafetensorError

from fadkd.errors import FadkdError
from fadkd.help import EVAL_HELP, config_help
from fadkd.preflight import (
    check_eval_keys,
    check_keys,
    check_model_files,
    check_run_dir,
    explain,
    hydra_record,
    out_folder,
    out_of_memory,
)

CONF_DIR = os.environ.get("FADKD_CONF_DIR", str(Path(__file__).resolve().parents[1] / "conf"))
VERBS = {
    "train": "distil a teacher into a student (Hydra overrides, -m for sweeps)",
    "finetune": "train one model alone on a task (a teacher, or the student-alone baseline): model=<preset>",
    "eval": "re-evaluate a run's saved student on the task's dev split: run_dir=<dir>",
    "table": "results table (terminal, results.md, results.csv) over run or multirun folders",
    "plot": "PNGs of a run (loss terms, layer pairs, dev metric) or a multirun (metric vs swept values)",
    "report": "report.md for a run: config, objective, mapping, sizes, speed vs teacher, metrics, plots",
}
console = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths stay copyable


def _warn(lines: list[str]) -> None:
    """Printed here, not in `_train`: joblib/submitit pickle `_train` by value, and `console` holds a lock."""
    for line in lines:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)


def _interrupted(out: Path) -> None:
    """A second Ctrl-C, or one before the loop (the cache build): say how to go on, exit 130."""
    from fadkd.report.runs import overrides_of
    from fadkd.report.summary import resume_command

    if any((out / "checkpoints").glob("step-*")):
        hint = f"resume from its last checkpoint with:\n  {resume_command(out, overrides_of(out))}"
    else:
        hint = f"{out} has no checkpoint yet, so nothing to resume: add train.overwrite=true to start it again"
    console.print(f"[yellow]interrupted:[/] stopped at once, without writing a checkpoint; {hint}", highlight=False)
    sys.exit(130)


def _usage() -> str:
    lines = ["usage: fadkd <verb> [args]", "", "verbs:"]
    width = max(map(len, VERBS))  # finetune is the longest verb: every description starts in one column
    lines += [f"  {verb:<{width}}  {text}" for verb, text in VERBS.items()]
    lines += ["", "fadkd <verb> --help shows each verb's options (train: Hydra's config groups)."]
    return "\n".join(lines)


def _fail(err: FadkdError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # [qq,kk] stays text
    sys.exit(2)


def _plain(err: Exception) -> FadkdError:
    """An OSError or a model file's read error as one FadkdError line (fadkd/preflight.py)."""
    if isinstance(err, FadkdError):
        return err
    if isinstance(err, OSError) and err.filename is not None:
        return explain(err)
    return FadkdError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


USER_ERRORS = (FadkdError, OSError, SafetensorError)  # one line each: user errors, OS errors, bad model files


def train_main(config_name: str = "config") -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from fadkd.config.advice import config_warnings
    from fadkd.config.schema import register_configs, to_config
    from fadkd.config.sweeps import record_failure, register_resolvers, threads_per_job
    from fadkd.preflight import register_dirname_resolver
    from fadkd.report.runs import overrides_of
    from fadkd.report.summary import resume_command
    from fadkd.run.folder import RunDirError
    from fadkd.run.train import train

    register_configs()
    register_resolvers()
    register_dirname_resolver()

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
    def _train(cfg) -> float:
        hydra_cfg = HydraConfig.get()
        config = None
        try:
            config = to_config(cfg)
            check_model_files(config)
            _warn(config_warnings(config) if os.environ.get("RANK", "0") == "0" else [])
            if config.train.num_threads == 0:  # parallel jobs split the cores (fadkd/config/sweeps.py)
                config.train.num_threads = threads_per_job(hydra_cfg)
            metrics = train(config, Path(hydra_cfg.runtime.output_dir))
        except BrokenPipeError:
            raise  # stdout closed (`| head`): main() ends quietly
        except KeyboardInterrupt:  # a second Ctrl-C (fadkd/run/guards.py), or one before the loop (the cache build)
            _interrupted(Path(hydra_cfg.runtime.output_dir))
        except RunDirError as err:  # the folder held another run: its Hydra record stays its own
            for path, data in HYDRA_RECORD.items():
                path.write_bytes(data)
            if err.run_dir is not None:
                err = RunDirError(f"{err}:\n  {resume_command(err.run_dir, overrides_of(err.run_dir))}")
            _fail(err)
        except (RuntimeError, MemoryError) as err:  # a student or batch too large: one line, not the allocator's
            oom = out_of_memory(err, config, Path(hydra_cfg.runtime.output_dir)) if config else None
            if oom is None or record_failure(hydra_cfg):
                raise
            _fail(oom)
        except USER_ERRORS as err:
            if record_failure(hydra_cfg):
                raise  # a failed job of a parallel launcher or an Optuna search (fadkd/config/sweeps.py)
            _fail(_plain(err))
        return metrics["student"][metrics["main_metric"]]

    _train()


def eval_main(args: list[str]) -> None:
    from transformers.utils import logging as hf_logging

    from fadkd.data.lm_text import is_lm_task
    from fadkd.eval.glue import eval_glue_run
    from fadkd.models.load import ModelError
    from fadkd.run.distributed import resolve_device
    from fadkd.run.lm import eval_lm_run

    if not args or args[0] in ("-h", "--help") or "--help" in args:
        print(EVAL_HELP)
        return
    hf_logging.disable_progress_bar()  # no weight-loading bar: the result is the output
    hf_logging.set_verbosity_error()
    try:
        overrides = OmegaConf.from_dotlist(args)
    except Exception as err:  # noqa: BLE001 - omegaconf raises several grammar errors
        raise FadkdError(f"cannot parse {args}: {err}; write key=value pairs") from None
    if "run_dir" not in overrides:
        raise FadkdError("fadkd eval needs run_dir=<a run's output folder>")
    if not overrides.run_dir:
        raise FadkdError(
            "fadkd eval run_dir= is empty; give the folder `fadkd train` printed, e.g. run_dir=outputs/run"
        )
    run_dir = Path(str(overrides.pop("run_dir")))
    if not (run_dir / "config.yaml").is_file():
        raise FadkdError(f"{run_dir} is not a fadkd run folder (no config.yaml); give the folder `fadkd train` printed")
    if not (run_dir / "student" / "config.json").is_file():
        raise ModelError(
            f"{run_dir} has no saved student (student/config.json); was it trained with train.save_student=false?"
        )
    saved = OmegaConf.load(run_dir / "config.yaml")
    check_eval_keys(args, saved, run_dir)
    cfg = OmegaConf.merge(saved, overrides)
    # causal LM: perplexity, BLEU, ROUGE, CER (fadkd/run/lm.py); GLUE: the task's metrics (fadkd/eval/glue.py)
    evaluate = eval_lm_run if is_lm_task(cfg.task.name) else eval_glue_run
    _print_eval(run_dir, cfg.task.name, evaluate(run_dir, cfg, resolve_device(cfg.train.device)))


def _print_eval(run_dir: Path, task: str, metrics: dict) -> None:
    """A readable line on stderr; the JSON line, last on stdout, for scripts."""
    shown = "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    console.print(f"{task} dev, student of {run_dir}: {shown}", highlight=False)
    print(json.dumps(metrics), flush=True)


def table_main(args: list[str]) -> None:
    from fadkd.report.results import write_table

    parser = argparse.ArgumentParser(prog="fadkd table", description=VERBS["table"])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or a multirun folder")
    parser.add_argument("--out", type=Path, help="where results.md / results.csv go")
    parser.add_argument(
        "--layout", choices=("default", "paper"), default="default",
        help="paper: causal-LM runs as Model | Perplexity | BLEU | ROUGE-L | CER (+ vs teacher), paper.md / paper.csv",
    )  # fmt: skip
    ns = parser.parse_args(args)
    write_table(ns.paths, out_folder(ns.out), ns.layout)


def plot_main(args: list[str]) -> None:
    from fadkd.report.plots import plot_path

    parser = argparse.ArgumentParser(prog="fadkd plot", description=VERBS["plot"])
    parser.add_argument("path", type=Path, help="a run folder or a multirun folder")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: <run>/plots/), e.g. for a read-only run")
    ns = parser.parse_args(args)
    try:
        written = plot_path(ns.path, out_folder(ns.out))
    except OSError as err:  # a read-only run folder: --out writes elsewhere
        raise FadkdError(f"{explain(err)}; or write the plots elsewhere with --out DIR") from None
    print("\n".join(map(str, written)))


def report_main(args: list[str]) -> None:
    from fadkd.report.summary import write_report

    parser = argparse.ArgumentParser(prog="fadkd report", description=VERBS["report"])
    parser.add_argument("run", type=Path, help="a finished run folder (with metrics.json)")
    parser.add_argument("--out", type=Path, help="where report.md and its plots/ go (default: the run folder)")
    ns = parser.parse_args(args)
    try:
        print(write_report(ns.run, out_folder(ns.out)))
    except OSError as err:
        raise FadkdError(f"{explain(err)}; or write the report elsewhere with --out DIR") from None


HYDRA_RECORD: dict[Path, bytes] = {}  # an existing run's .hydra/ files (fadkd/preflight.py hydra_record)
HYDRA_INFO_FLAGS = ("--cfg", "-c", "--info", "-i", "--hydra-help", "--shell-completion", "-sc")


def _train_verb(verb: str, rest: list[str]) -> None:
    """train / finetune: our --help, the checks Hydra cannot make, then Hydra's main."""
    from fadkd.config.jobs import check_jobs, check_yaml
    from fadkd.run.distributed import hydra_overrides_for_workers

    config_name = "config" if verb == "train" else "finetune"
    if verb == "finetune":
        rest = [f"teacher@student={a[6:]}" if a.startswith("model=") else a for a in rest]
    if "--help" in rest or "-h" in rest:
        given = [a for a in rest if "=" in a and not a.startswith(("-", "hydra"))]
        print(config_help(CONF_DIR, config_name, given))
        return
    check_keys(rest)
    rest = hydra_overrides_for_workers(rest)  # torchrun: ranks > 0 write no Hydra files
    check_yaml(rest, config_name)
    if not any(a in HYDRA_INFO_FLAGS for a in rest):
        check_run_dir(rest)
        if "-m" in rest or "--multirun" in rest:
            check_jobs(CONF_DIR, config_name, rest)
    HYDRA_RECORD.clear()
    HYDRA_RECORD.update(hydra_record(rest))
    sys.argv = [f"{sys.argv[0]} {verb}", *rest]  # Hydra parses sys.argv
    train_main(config_name)


def _dispatch(verb: str, rest: list[str]) -> None:
    if verb in ("train", "finetune"):
        _train_verb(verb, rest)
    elif verb == "eval":
        eval_main(rest)
    elif verb == "plot":
        plot_main(rest)
    elif verb == "report":
        report_main(rest)
    else:
        table_main(rest)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    if argv[0] in ("--version", "-V", "version"):
        from importlib.metadata import version

        print(f"fadkd {version('fadkd')}")
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"fadkd: unknown verb '{verb}'\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    try:
        _dispatch(verb, rest)
        sys.stdout.flush()
    except SystemExit as stop:
        if stop.code in (130, 143):  # stopped by a signal, checkpoint written: a late Ctrl-C must not kill the exit
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # (Python's finalisation would reset it to the default)
        raise
    except BrokenPipeError:  # `fadkd ... | head`: the reader left; end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:  # a second Ctrl-C (fadkd/run/guards.py), or one before the loop started
        console.print(
            "[yellow]interrupted:[/] stopped at once, without writing a checkpoint; a run folder keeps its "
            "last checkpoint (resume it with train.resume=true)",
            highlight=False,
        )
        sys.exit(130)
    except USER_ERRORS as err:
        _fail(_plain(err))


if __name__ == "__main__":
    main()
