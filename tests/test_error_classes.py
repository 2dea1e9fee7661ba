"""fadkd's error classes: one base, outside ValueError, so wrapping a library's error never wraps ours."""

import importlib
import pkgutil
from pathlib import Path

import pytest
from transformers import BertConfig, BertForSequenceClassification

import fadkd
from fadkd.config.schema import ModelConfig
from fadkd.errors import FadkdError
from fadkd.models.load import ModelError, load_classifier


def _error_classes() -> list[type]:
    """Every exception class defined in a fadkd module (their modules imported)."""
    for info in pkgutil.walk_packages(fadkd.__path__, "fadkd."):
        if info.name not in ("fadkd.__main__",):
            importlib.import_module(info.name)
    found, todo = [], [BaseException]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("fadkd."):
                found.append(sub)
    return found


def test_every_fadkd_error_is_a_fadkd_error_and_not_a_value_error():
    classes = _error_classes()
    assert len(classes) >= 8  # ConfigError, ModelError, TaskError, MappingError, CacheError, RunDirError, ...
    for cls in classes:
        assert issubclass(cls, FadkdError), cls
        assert not issubclass(cls, ValueError), cls


def test_a_model_error_raised_while_loading_is_prefixed_once(tmp_path: Path):
    """load_classifier turns transformers' ValueError into a ModelError; its own ModelError passes as it is."""
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)  # fmt: skip
    config.architectures = ["BertForSequenceClassification"]
    BertForSequenceClassification(config).save_pretrained(tmp_path / "three")
    cfg = ModelConfig(name="t", path=str(tmp_path / "three"))
    with pytest.raises(ModelError) as info:
        load_classifier(cfg, "teacher", num_labels=2, vocab_size=100, attn_implementation=None)
    message = str(info.value)
    assert message.startswith(f"teacher.path={tmp_path / 'three'} was fine-tuned with 3 labels")
    assert "cannot load" not in message  # before: "teacher: cannot load a model from ...: teacher.path=..."
