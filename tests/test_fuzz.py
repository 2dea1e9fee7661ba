"""Fuzz-style: corrupted TSV rows and malformed configs give a message, never a traceback."""

import random
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException

from fadkd.cli import CONF_DIR
from fadkd.config.ranges import RANGES
from fadkd.config.schema import register_configs, to_config
from fadkd.data.glue import load_split
from fadkd.data.glue_tasks import get_task
from fadkd.errors import FadkdError
from fadkd.losses.mapping import build_mapping

TASKS = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}
JUNK = ["", "\t", "\t\t", '"', "nan", "-1", "7", "1.5", "é", "\x00", "x" * 500, "\r", "entailment", "5.01"]


def _corrupt(line: str, rng: random.Random) -> str:
    cells = line.rstrip("\n").split("\t")
    action = rng.randrange(6)
    if action == 0 and len(cells) > 1:
        cells.pop(rng.randrange(len(cells)))  # a missing column
    elif action == 1:
        cells.insert(rng.randrange(len(cells) + 1), rng.choice(JUNK))  # an extra one
    elif action == 2:
        cells[-1] = rng.choice(JUNK)  # the label (last column in most tasks)
    elif action == 3:
        cells[rng.randrange(len(cells))] = rng.choice(JUNK)
    elif action == 4:
        return ""  # a blank line
    else:
        return line[: rng.randrange(len(line) + 1)]  # cut short
    return "\t".join(cells) + "\n"


@pytest.mark.parametrize("seed", range(300))
def test_corrupted_tsv_row_loads_or_says_where(seed, tmp_path):
    rng = random.Random(seed)
    name = rng.choice(sorted(TASKS))
    folder = tmp_path / TASKS[name]
    shutil.copytree(FIXTURES / TASKS[name], folder)
    path = folder / "train.tsv"
    raw = path.read_bytes()
    if rng.random() < 0.1:  # bytes that are not UTF-8
        cut = rng.randrange(len(raw))
        path.write_bytes(raw[:cut] + b"\xff\xfe" + raw[cut:])
    else:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            lines[i] = _corrupt(lines[i], rng)
        path.write_text("".join(lines), encoding="utf-8")
    try:
        load_split(get_task(name), "train", str(tmp_path))
    except FadkdError as err:
        assert "train.tsv" in str(err)  # names the file


KEYS = {
    "loss.alpha": ["-1", "0", "1e309", "abc", "[1]", "null"],
    "loss.temperature": ["0", "-2", "inf", "x"],
    "loss.delta": ["-0.5", "2", "true"],
    "train.batch_size": ["0", "-3", "1.5", "many", "null"],
    "train.lr": ["0", "-1e-3", "big"],
    "train.epochs": ["0", "-1", "two"],
    "train.warmup_ratio": ["1", "-0.1", "2"],
    "train.on_nonfinite": ["ignore", "", "123"],
    "mapping.strategy": ["diagonal", "UNIFORM", "123"],
    "mapping.pairs": ["[[1,9]]", "[[0,0],[0,0]]", "[]", "[[1]]", "[[a,b]]", "[[-1,2]]", "[[1,2,3,4]]"],
    "mapping.layer_weights": ["[1,2,3]", "[-1,1]", "[0,0]", "[x]"],
    "task.name": ["nope", "SST-2", "mnli-mm", ""],
    "task.max_length": ["0", "-5", "long"],
    "student.num_heads": ["0", "3", "-2"],
    "student.hidden_size": ["0", "33", "x"],
    "nonsense.key": ["1"],
}


# 150 seeds, ~0.8 s each (a Hydra composition): the first 15 in `make test`, the rest with the slow tests
@pytest.mark.parametrize("seed", [s if s < 15 else pytest.param(s, marks=pytest.mark.slow) for s in range(150)])
def test_malformed_config_fails_with_a_message(seed):
    rng = random.Random(seed)
    overrides = [f"{k}={rng.choice(KEYS[k])}" for k in rng.sample(sorted(KEYS), rng.randint(1, 3))]
    if any(o.startswith("mapping.pairs") for o in overrides):
        overrides.append("mapping.strategy=explicit")
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = to_config(compose(config_name="config", overrides=overrides))
        if cfg.loss.layerwise:
            m = cfg.mapping
            build_mapping(m.strategy, cfg.student.num_layers, cfg.teacher.num_layers, m.pairs, m.layer_weights)
        get_task(cfg.task.name)
    except (FadkdError, HydraException) as err:  # Hydra prints its own composition errors plainly
        assert str(err).strip(), overrides


def _numeric_keys() -> list[tuple[str, str, bool]]:
    """(override key, RANGES key, is an int) for every int / float field of the schema."""
    import dataclasses

    from fadkd.config.ranges import numeric_fields
    from fadkd.config.schema import Config

    out = []
    for f in dataclasses.fields(Config):
        kind = "model" if f.name in ("teacher", "student") else f.name
        out += [(f"{f.name}.{name}", f"{kind}.{name}", is_int) for name, is_int in numeric_fields(f.type)]
    return out


def test_every_numeric_field_has_a_range():
    from fadkd.config.ranges import RANGES

    missing = [key for key, rule, _ in _numeric_keys() if rule not in RANGES]
    assert not missing, f"add these to fadkd/config/ranges.py RANGES: {missing}"
    assert len(_numeric_keys()) >= 50


def _outside(rule, is_int: bool) -> list[str]:
    """Values just outside the range, and non-finite ones for floats."""
    step = 1 if is_int else 1e-6
    values = []
    if rule.low is not None:
        values.append(rule.low if rule.low_open else rule.low - step)
    if rule.high is not None:
        values.append(rule.high if rule.high_open else rule.high + step)
    text = [str(int(v)) if is_int else repr(float(v)) for v in values]
    return text + ([] if is_int else ["nan", "inf", "-inf"])


def _compose(overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose(config_name="config", overrides=overrides))


NUMERIC = [(key, value) for key, rule_key, is_int in _numeric_keys() for value in _outside(RANGES[rule_key], is_int)]


@pytest.mark.slow  # 160 cases: with the slow tests, so `make test` stays under 5 minutes (CI runs both)
@pytest.mark.parametrize("key, value", NUMERIC)
def test_numeric_field_outside_its_range_is_refused(key, value):
    """Every numeric field, every edge of its range: refused with the key and the value in the message."""
    lm = ["task=lm_sst2", "teacher=tiny-llama", "student=tiny-llama-half"]
    extra = lm if key.startswith("task.") else []
    if key == "student.every_k":
        extra = [*lm, "student.init=from_teacher"]
    with pytest.raises(FadkdError) as err:
        _compose([*extra, f"{key}={value}"])
    name = key.split(".", 1)[1]
    assert name in str(err.value), (key, value, str(err.value))


RUN_DIRS = ["a-file", "a-file/below", "x" * 256, "ok/" + "é" * 130, "/sys/fadkd-fuzz", "/proc/fadkd-fuzz", "fine/run"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_run_folder_paths_are_created_or_refused_in_one_line(seed, tmp_path):
    """hydra.run.dir / hydra.sweep.dir of every kind: made and writable, or a FadkdError naming it."""
    from fadkd.preflight import check_run_dir

    rng = random.Random(seed)
    (tmp_path / "a-file").write_text("x")
    path = rng.choice(RUN_DIRS)
    if rng.random() < 0.5 and not path.startswith("/"):
        path = path + "/" + rng.choice(RUN_DIRS[1:4])
    full = path if path.startswith("/") else str(tmp_path / path)
    multirun = rng.random() < 0.3
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    args = [*(["-m"] if multirun else []), f"{key}={full}", "loss.alpha=0,1" if multirun else "loss.alpha=1"]
    try:
        check_run_dir(args)
    except FadkdError as err:
        assert key in str(err) and "\n" not in str(err)
    else:
        assert Path(full).is_dir()
