"""Every shipped config composes into the typed schema, and bad values fail clearly."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fadkd.cli import CONF_DIR
from fadkd.config.schema import Config, ConfigError, LossConfig, TrainConfig, register_configs, to_config

# Groups whose options need a value the user must give (a path); supplied here.
NEEDS = {
    "teacher=hf": ["teacher.path=/some/folder"],
    "student=hf": ["student.path=/some/folder"],
    # causal-LM presets go with causal-LM tasks; lm_text needs its files
    "teacher=tiny-llama": ["task=lm_sst2"],
    "student=tiny-llama": ["task=lm_sst2"],
    "student=tiny-llama-half": ["task=lm_sst2"],
    "student=smollm2-135m-third": ["task=lm_sst2"],
    "task=lm_text": ["task.train_file=train.txt", "task.eval_file=dev.txt"],
}


def _compose(overrides: list[str]) -> Config:
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose(config_name="config", overrides=overrides))


def _options() -> list[str]:
    out = []
    for group in ("teacher", "student", "task", "mapping", "loss", "train", "experiment", "hparams_search"):
        for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            out.append(f"{group}={path.stem}")
    return out


@pytest.mark.parametrize("choice", _options())
def test_every_config_composes(choice: str):
    overrides = [choice, *NEEDS.get(choice, [])]
    if choice.startswith("task=") and choice != "task=sst2":
        overrides.append("task.data_dir=/some/glue")
    cfg = _compose(overrides)
    assert isinstance(cfg, Config)
    assert isinstance(cfg.loss, LossConfig)


def test_default_config_is_the_demo():
    cfg = _compose([])
    assert cfg.task.name == "sst2" and cfg.task.data_dir == "sample"
    assert cfg.teacher.path is None and cfg.student.path is None
    assert cfg.student.num_layers < cfg.teacher.num_layers


def test_experiment_pins_the_ablation_row():
    cfg = _compose(["experiment=ablation_kd_only"])
    assert cfg.loss.alpha > 0 and cfg.loss.beta == cfg.loss.gamma == cfg.loss.delta == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.beta=-1", "negative"),
        ("loss.temperature=0", "must be > 0"),
        ("train.lr=0", "train.lr"),
        ("train.batch_size=0", "positive"),
    ],
)
def test_bad_values_fail_with_a_message(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        _compose([override])


def test_a_word_outside_a_choice_fails_with_the_allowed_words():
    """OmegaConf refuses it while composing; fadkd's own message comes from preflight, before Hydra."""
    from hydra.errors import ConfigCompositionException

    from fadkd.preflight import check_keys

    with pytest.raises(ConfigCompositionException, match="diagonal"):
        _compose(["mapping.strategy=diagonal"])
    with pytest.raises(ConfigError, match="mapping.strategy='diagonal' is unknown; choose one of uniform, last"):
        check_keys(["mapping.strategy=diagonal"])
    with pytest.raises(ConfigError, match="loss.kd='kl' is unknown"):
        check_keys(["-m", "loss.kd=jsd,kl"])  # each word of a sweep
    check_keys(["loss.kd=jsd", "loss.kd='uld'", "loss.kd=choice(jsd,uld)", "train.logger=${oc.env:LOGGER}"])
    with pytest.raises(ConfigError, match="train.precision='fp8' is unknown; choose fp32 or bf16"):
        TrainConfig(precision="fp8")  # objects built in code: the same message


def test_all_weights_zero_is_refused():
    with pytest.raises(ConfigError, match="nothing to train"):
        _compose(["loss.alpha=0", "loss.beta=0", "loss.gamma=0", "loss.delta=0", "loss.ce=0"])


def test_task_without_data_dir_says_how_to_fix():
    with pytest.raises(ConfigError, match="task.data_dir=hub"):
        _compose(["task=mrpc"])


def test_type_errors_name_the_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="train.batch_size=many"):
        _compose(["train.batch_size=many"])


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")))
def test_experiment_values_reach_the_config(name: str):
    """Each value an experiment writes, and each loss preset it overrides, is in the composed config.

    A defaults list that does not compose as meant (an experiment overriding /experiment itself)
    would silently give the plain defaults; this catches it."""
    cfg = OmegaConf.structured(_compose([f"experiment={name}"]))
    for key, value in _expected(name).items():
        assert OmegaConf.select(cfg, key) == value, f"experiment={name}: {key}"


def _expected(name: str, group: str = "experiment") -> dict:
    """The values a config file sets, its loss / experiment defaults included (its own win)."""
    written = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / group / f"{name}.yaml"))
    prefix = "loss." if group == "loss" else ""
    own = {prefix + k: v for k, v in _leaves(written) if not k.startswith(("hydra.", "defaults"))}
    expected = {}
    for entry in written.get("defaults", []):
        if group == "loss" and isinstance(entry, str) and entry != "_self_":  # a preset built on another
            expected |= _expected(entry, "loss")
        for key, option in entry.items() if isinstance(entry, dict) else []:
            if key in ("override /loss", "override /experiment", "/experiment"):
                expected |= _expected(option, key.split("/")[-1])
    return expected | own
