"""`fadkd train --help`, `fadkd finetune --help` and `fadkd eval --help`: the groups and keys that matter.

The defaults are the composed config's (conf/ with the overrides given so far), the one-line
descriptions are the schema's own field comments (fadkd/config/schema.py), so neither can drift.
"""

import dataclasses
import inspect
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fadkd.config.ranges import RANGES
from fadkd.config.schema import Config, register_configs

GROUPS = ("teacher", "student", "task", "mapping", "loss", "train", "experiment", "hparams_search")
HEADS = {
    "config": "usage: fadkd train [group=option ...] [key=value ...] [-m: one run per combination of a,b values]\n"
    "Distil a teacher into a student. Pick a file of each group, then change any key.",
    "finetune": "usage: fadkd finetune model=<teacher preset> [group=option ...] [key=value ...]\n"
    "Train one model alone on a task with hard labels (e.g. to make a teacher): model= picks it from the\n"
    "teacher presets, its keys are then student.*. The run's student/ is usable as teacher.path=<run>/student.",
}
FOOT = (
    "Hydra's own flags: --cfg job (print the composed config), -m (sweep), --hydra-help.\n"
    "Examples: fadkd train task=mrpc task.data_dir=../shared/data/glue loss.beta=0.5\n"
    "          fadkd train experiment=ablation_kd_only train.max_steps=100 hydra.run.dir=outputs/kd"
)
EVAL_HELP = """usage: fadkd eval run_dir=<run folder> [key=value ...]
Re-evaluate a run's saved student (<run>/student) on its task's dev split; prints the metrics
(one JSON line on stdout, last) and writes <run>/eval.json. Keys, defaults from the run's config.yaml:
  run_dir                 (required) the folder `fadkd train` printed
  task.data_dir           where the task's data is (e.g. ../shared/data/glue, hub, sample)
  task.max_eval_samples   the first N dev rows (null = all)
  task.max_length         tokens per example
  train.eval_batch_size   examples per forward pass
  train.device            auto | cpu | cuda | cuda:N | mps"""


def field_docs(cls) -> dict[str, str]:
    """Each field's comment in the class source: the one on its line, else the one just above."""
    docs, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        match = re.match(r"(\w+): [^=]+=.*?(?:  # (.*))?$", text)
        if match:
            docs[match.group(1)] = match.group(2) or " ".join(above)
        above = []
    return docs


def _options(conf_dir: Path, group: str) -> str:
    return ", ".join(sorted(p.stem for p in (conf_dir / group).glob("*.yaml")))


def config_help(conf_dir: str, config_name: str, overrides: list[str]) -> str:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    lines = [HEADS[config_name], "", "config groups (group=option; the current choice first):"]
    for group in GROUPS:
        key = "teacher@student" if config_name == "finetune" and group == "student" else group
        if key not in choices:  # not in this config's defaults list (finetune has no hparams_search)
            continue
        label = "model" if key == "teacher@student" else group
        options = _options(Path(conf_dir), "teacher" if label == "model" else group)
        chosen = choices.get(key) or "null"
        lines.append(f"  {label + ':':<16} {chosen:<16} options: {options}")
    lines += ["", "keys (section.key=value; the composed default, then what it means):"]
    for f in dataclasses.fields(Config):
        kind = "model" if f.name in ("teacher", "student") else f.name
        docs = {k: r.means for k, r in ((k.split(".")[1], r) for k, r in RANGES.items() if k.startswith(kind + "."))}
        docs.update({k: v for k, v in field_docs(f.type).items() if v})
        section = OmegaConf.to_container(cfg[f.name], resolve=True)
        lines.append(f"  {f.name}:")
        for name, value in section.items():
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"    {f.name + '.' + name:<32} {shown:<14} {docs.get(name, '')}".rstrip())
    return "\n".join([*lines, "", FOOT])
