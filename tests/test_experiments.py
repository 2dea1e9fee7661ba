"""Every shipped experiment composes to the same values as before conf/ became a menu (issue 19).

tests/fixtures/experiments.json holds, for the commit before the reorganisation, the composed
config of the plain defaults ("config", every leaf) and, for `fadkd finetune` and each
experiment, the leaves that differ from it (job config plus hydra.sweeper, hydra.sweep and
hydra.callbacks; interpolations unresolved). It was written by running this file as a script
on that commit: `python tests/test_experiments.py tests/fixtures/experiments.json`.
"""

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fadkd.cli import CONF_DIR
from fadkd.config.schema import register_configs
from fadkd.config.sweeps import register_resolvers

FIXTURE = Path(__file__).parent / "fixtures" / "experiments.json"
ABSENT = "<absent>"
# What an entry of the fixture is composed from now, where that changed.
NOW = {"experiment=search_weights": ["hparams_search=weights"]}


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]: node}
    out = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def composed(entry: str, overrides: list[str]) -> dict:
    """Every leaf of the composed config (hydra: sweeper, sweep, callbacks), interpolations kept."""
    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        name = "finetune" if entry == "finetune" else "config"
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    out = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    hydra = out.pop("hydra")
    out["hydra"] = {k: hydra[k] for k in ("sweeper", "sweep", "callbacks")}
    return _flat(out)


def _diff(leaves: dict, base: dict) -> dict:
    out = {k: v for k, v in leaves.items() if base.get(k, ABSENT) != v}
    return out | {k: ABSENT for k in base.keys() - leaves.keys()}


def _entries() -> dict[str, list[str]]:
    entries = {"config": [], "finetune": []}
    for path in sorted((Path(CONF_DIR) / "experiment").glob("*.yaml")):
        entries[f"experiment={path.stem}"] = [f"experiment={path.stem}"]
    return entries


def write_fixture(path: Path) -> None:
    base = composed("config", [])
    result = {"config": base}
    for entry, overrides in _entries().items():
        if entry != "config":
            result[entry] = _diff(composed(entry, overrides), base)
    path.write_text(json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


EXPECTED = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}


@pytest.mark.parametrize("entry", sorted(EXPECTED))
def test_experiment_composes_as_before(entry: str):
    now = composed(entry, NOW.get(entry, [entry] if "=" in entry else []))
    base = EXPECTED["config"]
    before = base if entry == "config" else {k: v for k, v in (base | EXPECTED[entry]).items() if v != ABSENT}
    changed = {k: (before.get(k, ABSENT), now.get(k, ABSENT)) for k in before.keys() | now.keys()}
    assert {k: pair for k, pair in changed.items() if pair[0] != pair[1]} == {}


def test_every_experiment_is_in_the_fixture():
    """A new experiment is added to the fixture by hand (its expected leaves), not by rewriting it."""
    assert len(EXPECTED) >= 30
    assert set(_entries()) <= set(EXPECTED)


if __name__ == "__main__":
    write_fixture(Path(sys.argv[1]))
