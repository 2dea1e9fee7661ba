"""Each Enum of the schema (fadkd/config/choices.py) matches the code that dispatches on it, so they cannot drift."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import fadkd
from fadkd.config import choices
from fadkd.config.choices import (
    CacheDtype,
    Choice,
    FeatureSchedule,
    KDTerm,
    Logger,
    MappingStrategy,
    ModelArch,
)
from fadkd.config.schema import Config, ConfigError, LossConfig, to_config
from fadkd.errors import FadkdError
from fadkd.losses.kd import KD_TERMS, kd_label, kd_term
from fadkd.losses.mapping import STRATEGIES, build_mapping
from fadkd.losses.spec import feature_scale
from fadkd.run.logs import LOGGERS
from fadkd.teacher.cache import DTYPES

ENUMS = [v for v in vars(choices).values() if isinstance(v, type) and issubclass(v, Choice) and v is not Choice]


def _choice_fields() -> dict[str, set[str]]:
    """Field name -> the words its Enum allows, over every section of the schema (two fields of one name,
    mapping.strategy and train.strategy: the words of either)."""
    out: dict[str, set[str]] = {}
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.type):
            if isinstance(f.type, type) and issubclass(f.type, Choice):
                out.setdefault(f.name, set()).update(m.value for m in f.type)
    return out


@pytest.mark.parametrize("kind", ENUMS, ids=lambda k: k.__name__)
def test_a_member_is_its_word(kind: type[Choice]):
    for member in kind:
        assert member.name == member.value == str(member) == f"{member}" and member == member.value


def test_the_kd_registry_has_exactly_the_kd_words():
    assert list(KDTerm) == list(KD_TERMS)
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    for kind in KDTerm:
        assert torch.isfinite(kd_term(kind, s, t, 2.0)) and kd_label(kind, 2.0, 0.5)
    with pytest.raises(ValueError, match="unknown kd term"):
        kd_term("kl", s, t, 2.0)


def test_each_mapping_strategy_is_built():
    assert set(MappingStrategy) == {*STRATEGIES, "kept"}  # kept: explicit pairs from the kept layers (run/train.py)
    for strategy in STRATEGIES:
        assert build_mapping(strategy, 2, 4, [[1, 2]])


def test_each_feature_schedule_has_a_factor():
    for schedule in FeatureSchedule:
        assert 0 <= feature_scale(schedule, 0.5, 3, 10, stage1_steps=2) <= 1
    with pytest.raises(FadkdError):
        feature_scale("step", 0.5, 3, 10)


def test_loggers_and_cache_dtypes_match_their_tables():
    assert list(Logger) == list(LOGGERS)
    assert list(CacheDtype) == list(DTYPES)


def _compared_words(tree: ast.AST):
    """(attribute, word, line) of each `<x>.<attribute> ==/!=/in/not in "word"` (or a tuple of words)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or not isinstance(node.left, ast.Attribute):
            continue
        for op, right in zip(node.ops, node.comparators):
            if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                continue
            items = right.elts if isinstance(right, (ast.Tuple, ast.List, ast.Set)) else [right]
            for item in items:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    yield node.left.attr, item.value, node.lineno


def test_code_compares_choice_fields_only_with_their_words():
    """A word the code tests for (`cfg.loss.attn == "relations"`) is one the schema lets through."""
    fields, seen, wrong = _choice_fields(), set(), []
    for path in sorted(Path(fadkd.__file__).parent.rglob("*.py")):
        for attr, word, line in _compared_words(ast.parse(path.read_text())):
            if attr in fields:
                seen.add(attr)
                if word not in fields[attr]:
                    words = sorted(fields[attr])
                    wrong.append(f"{path.name}:{line}: .{attr} compared with {word!r}, not one of {words}")
    assert not wrong
    assert {"kd", "attn", "init", "precision", "on_nonfinite", "strategy"} <= seen  # the scan finds them


@pytest.mark.parametrize("kind", ENUMS, ids=lambda k: k.__name__)
def test_config_yaml_holds_the_word_and_reloads(kind: type[Choice]):
    """A run folder's config.yaml (asdict -> OmegaConf -> YAML, fadkd/run/folder.py) holds the plain word,
    and loads back into the schema: resume and `fadkd eval` read it."""
    cfg = Config()
    text = OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))
    fields = [
        (s.name, f.name) for s in dataclasses.fields(Config) for f in dataclasses.fields(s.type) if f.type is kind
    ]
    for section, name in fields:
        assert f"  {name}: {getattr(getattr(cfg, section), name)}\n" in text
    again = to_config(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(text)))
    assert again == cfg
    assert kind is choices.Relation or fields  # each Enum but Relation types a field (relations: list[str])


def test_objects_built_in_code_get_the_same_check():
    assert LossConfig(kd="jsd").kd is KDTerm.jsd
    with pytest.raises(ConfigError, match="loss.kd='kl' is unknown; choose one of forward_kl, reverse_kl"):
        LossConfig(kd="kl")
    with pytest.raises(ConfigError, match="model 'm': arch='gpt' is unknown; choose bert or llama"):
        dataclasses.replace(Config().student, name="m", arch="gpt")
    assert ModelArch("llama") is ModelArch.llama
