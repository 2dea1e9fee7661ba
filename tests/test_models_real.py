"""The real pretrained presets (fetched by `make models`) and the script that fetches them.

The slow test needs the models in $FADKD_ASSETS (default ~/.cache/fadkd-assets) and skips,
saying so, where they are absent; the fast ones need nothing fetched.
"""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fadkd.cli import CONF_DIR
from fadkd.config.schema import ModelConfig, register_configs, to_config
from fadkd.models.load import ModelError, depth, load_classifier, load_tokenizer, width

ROOT = Path(__file__).resolve().parents[1]
FETCH = ROOT / "scripts" / "fetch_models.py"
# The BERT-like presets in conf/teacher and conf/student: layers x hidden size.
SHAPES = {"mpnet-base": (12, 768), "minilm-l6": (6, 384), "minilm-l3": (3, 384)}
SENTENCE = "The quick brown fox jumps over the lazy dog, doesn't it?"


def _preset(group: str, name: str) -> ModelConfig:
    """conf/<group>/<name>.yaml composed and resolved as `fadkd train` does (env included)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return getattr(to_config(compose(config_name="config", overrides=[f"{group}={name}"])), group)


def _recipes() -> dict:
    """scripts/model_recipes.py's RECIPES: what fetch_models.py builds."""
    sys.path.insert(0, str(FETCH.parent))
    try:
        return importlib.import_module("model_recipes").RECIPES
    finally:
        sys.path.remove(str(FETCH.parent))


@pytest.mark.slow
def test_real_presets_load_with_their_shapes():
    cfgs = {name: _preset("teacher", name) for name in SHAPES}
    absent = [c.path for c in cfgs.values() if not (Path(c.path) / "DONE").is_file()]
    if absent:
        pytest.skip(f"real models not fetched ({', '.join(absent)}): run `make models`")
    assert {name: _preset("student", name).path for name in SHAPES} == {n: c.path for n, c in cfgs.items()}

    ids = {}
    for name, cfg in cfgs.items():
        tokenizer = load_tokenizer(cfg, "teacher")
        model = load_classifier(cfg, "teacher", 2, len(tokenizer), "eager")  # MPNet has no SDPA
        assert (depth(model), width(model)) == SHAPES[name], name
        ids[name] = tokenizer(SENTENCE, add_special_tokens=False)["input_ids"]
    # Same split of the text; MPNet's vocabulary is BERT's behind <s> <pad> </s> <unk>.
    assert len(ids["minilm-l6"]) > 10
    assert ids["mpnet-base"] == [i + 4 for i in ids["minilm-l6"]]
    assert ids["minilm-l3"] == ids["minilm-l6"]


@pytest.mark.parametrize("name", list(_recipes()))
def test_missing_real_model_says_how_to_fetch_it(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FADKD_ASSETS", str(tmp_path / "assets"))
    cfg = ModelConfig(name=name, path=str(tmp_path / "assets" / name))
    with pytest.raises(ModelError, match="make models") as err:
        load_tokenizer(cfg, "student")
    assert f"scripts/fetch_models.py --only {name}" in str(err.value)


def test_missing_preset_folder_says_make_models(tmp_path, monkeypatch):
    monkeypatch.setenv("FADKD_ASSETS", str(tmp_path / "nowhere"))
    cfg = _preset("teacher", "mpnet-base")
    assert cfg.path == str(tmp_path / "nowhere" / "mpnet-base")
    fetch = "run `make models` (or `python scripts/fetch_models.py --only mpnet-base`)"
    with pytest.raises(ModelError, match=re.escape(fetch)):
        load_classifier(cfg, "teacher", 2, 30527, "eager")


def test_other_missing_folder_keeps_the_generic_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FADKD_ASSETS", str(tmp_path / "assets"))
    with pytest.raises(ModelError, match="the folder does not exist") as err:
        load_tokenizer(ModelConfig(path=str(tmp_path / "my-model")), "teacher")
    assert "make models" not in str(err.value)


def test_fetch_models_list_reads_done_markers(tmp_path):
    recipe = next(iter(_recipes().values()))
    (tmp_path / recipe.name).mkdir()
    (tmp_path / recipe.name / "DONE").write_text(json.dumps({"version": recipe.version}))
    proc = subprocess.run(
        [sys.executable, str(FETCH), "--dest", str(tmp_path), "--list"], capture_output=True, text=True, check=True
    )
    rows = [line.split() for line in proc.stdout.splitlines() if not line.startswith((" ", "folder:"))]
    states = {row[0]: row[1] for row in rows}
    assert states == {name: "done" if name == recipe.name else "-" for name in _recipes()}, proc.stdout
