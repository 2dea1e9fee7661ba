"""fadkd's command line: `fadkd <verb> [overrides]`.

train     Hydra main over conf/config.yaml (overrides, -m multirun, --help, --cfg job all work)
finetune  the same loop with hard labels only, over conf/finetune.yaml: model=<teacher preset>
eval   re-evaluate a run's saved student:  fadkd eval run_dir=<run folder> [task.data_dir=...]
table  results table over run folders:     fadkd table <multirun dir | run dirs...> [--out DIR]
"""

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console

from fadkd.errors import FadkdError

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


def _usage() -> str:
    lines = ["usage: fadkd <verb> [args]", "", "verbs:"]
    lines += [f"  {verb:<6} {text}" for verb, text in VERBS.items()]
    lines += ["", "fadkd <verb> --help shows each verb's options (train: Hydra's config groups)."]
    return "\n".join(lines)


def _fail(err: FadkdError) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False)
    sys.exit(2)


def train_main(config_name: str = "config") -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from fadkd.config import register_configs, to_config
    from fadkd.search import record_failure, register_resolvers, threads_per_job

    register_configs()
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=config_name)
    def _train(cfg) -> float:
        from fadkd.train import train

        hydra_cfg = HydraConfig.get()
        try:
            config = to_config(cfg)
            if config.train.num_threads == 0:  # parallel jobs split the cores (fadkd/search.py)
                config.train.num_threads = threads_per_job(hydra_cfg)
            metrics = train(config, Path(hydra_cfg.runtime.output_dir))
        except FadkdError as err:
            if record_failure(hydra_cfg):
                raise  # a failed job of a parallel launcher or an Optuna search (fadkd/search.py)
            _fail(err)
        return metrics["student"][metrics["main_metric"]]

    _train()


def eval_main(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from fadkd.evaluate import evaluate
    from fadkd.models import ModelError
    from fadkd.tasks.glue import get_task, load_split
    from fadkd.tasks.lm import is_lm_task
    from fadkd.train import resolve_data_dir, resolve_device

    if not args or args[0] in ("-h", "--help"):
        print("usage: fadkd eval run_dir=<run folder> [task.data_dir=<dir>] [train.eval_batch_size=N]")
        return
    try:
        overrides = OmegaConf.from_dotlist(args)
    except Exception as err:  # noqa: BLE001 - omegaconf raises several grammar errors
        raise FadkdError(f"cannot parse {args}: {err}; write key=value pairs") from None
    if "run_dir" not in overrides:
        raise FadkdError("fadkd eval needs run_dir=<a run's output folder>")
    run_dir = Path(overrides.pop("run_dir"))
    if not (run_dir / "config.yaml").is_file():
        raise FadkdError(f"{run_dir} is not a fadkd run folder (no config.yaml); give the folder `fadkd train` printed")
    if not (run_dir / "student" / "config.json").is_file():
        raise ModelError(
            f"{run_dir} has no saved student (student/config.json); was it trained with train.save_student=false?"
        )
    cfg = OmegaConf.merge(OmegaConf.load(run_dir / "config.yaml"), overrides)
    if is_lm_task(cfg.task.name):  # causal LM: perplexity, BLEU, ROUGE, CER (fadkd/lm_run.py)
        from fadkd.lm_run import eval_lm_run

        print(json.dumps(eval_lm_run(run_dir, cfg, resolve_device(cfg.train.device))))
        return
    task = get_task(cfg.task.name)
    rows = load_split(task, "dev", resolve_data_dir(cfg.task.data_dir), cfg.task.max_eval_samples).to_list()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = resolve_device(cfg.train.device)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").to(device)
    tok = AutoTokenizer.from_pretrained(run_dir / "student")
    metrics = evaluate(model, rows, tok, task, cfg.task.max_length, cfg.train.eval_batch_size, device)
    (run_dir / "eval.json").write_text(json.dumps({"task": task.name, "split": "dev", **metrics}, indent=2) + "\n")
    print(json.dumps(metrics))


def table_main(args: list[str]) -> None:
    from fadkd.results import write_table

    parser = argparse.ArgumentParser(prog="fadkd table", description=VERBS["table"])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders or a multirun folder")
    parser.add_argument("--out", type=Path, help="where results.md / results.csv go")
    parser.add_argument(
        "--layout", choices=("default", "paper"), default="default",
        help="paper: causal-LM runs as Model | Perplexity | BLEU | ROUGE-L | CER (+ vs teacher), paper.md / paper.csv",
    )  # fmt: skip
    ns = parser.parse_args(args)
    write_table(ns.paths, ns.out, ns.layout)


def plot_main(args: list[str]) -> None:
    from fadkd.plots import plot_path

    parser = argparse.ArgumentParser(prog="fadkd plot", description=VERBS["plot"])
    parser.add_argument("path", type=Path, help="a run folder or a multirun folder")
    for png in plot_path(parser.parse_args(args).path):
        print(png)


def report_main(args: list[str]) -> None:
    from fadkd.report import write_report

    parser = argparse.ArgumentParser(prog="fadkd report", description=VERBS["report"])
    parser.add_argument("run", type=Path, help="a finished run folder (with metrics.json)")
    print(write_report(parser.parse_args(args).run))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"fadkd: unknown verb '{verb}'\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    try:
        if verb in ("train", "finetune"):
            from fadkd.distributed import hydra_overrides_for_workers

            rest = hydra_overrides_for_workers(rest)  # torchrun: ranks > 0 write no Hydra files
        if verb == "train":
            sys.argv = [f"{sys.argv[0]} train", *rest]  # Hydra parses sys.argv
            train_main()
        elif verb == "finetune":
            rest = [f"teacher@student={a[6:]}" if a.startswith("model=") else a for a in rest]
            sys.argv = [f"{sys.argv[0]} finetune", *rest]
            train_main("finetune")
        elif verb == "eval":
            eval_main(rest)
        elif verb == "plot":
            plot_main(rest)
        elif verb == "report":
            report_main(rest)
        else:
            table_main(rest)
    except FadkdError as err:
        _fail(err)


if __name__ == "__main__":
    main()
