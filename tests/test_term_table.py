"""The term table (fadkd/losses/table.py) is the one place a loss term is named: everything else derives from it."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from fadkd.cli import CONF_DIR
from fadkd.config.loss import WEIGHTS, LossConfig
from fadkd.config.ranges import RANGES
from fadkd.help import config_help
from fadkd.losses import table
from fadkd.losses.distill import FUNCTIONS, DistillLoss, LossWeights
from fadkd.losses.mapping import LayerPair
from fadkd.losses.spec import WEIGHTS as SPEC_KEYS
from fadkd.models.capture import Outputs
from fadkd.report import plots
from fadkd.run import guards, logs

ROOT = Path(__file__).resolve().parents[1]
B, L = 4, 5
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
PAIRS = [LayerPair(1, 2, 1.0), LayerPair(2, 4, 0.5)]


def _outputs(width, heads, layers, grad=False):
    hidden = {i: torch.randn(B, L, width, requires_grad=grad) for i in range(layers + 1)}
    maps = {i: torch.softmax(torch.randn(B, heads, L, L), -1).requires_grad_(grad) for i in range(1, layers + 1)}
    return Outputs(torch.randn(B, 3, requires_grad=grad), hidden, maps, MASK.clone())


def _every_term_on(**extra):
    weights = {t.weight: 0.5 for t in table.TERMS}
    return DistillLoss(
        LossWeights(**weights, **extra), PAIRS, {i: 8 for i in range(3)}, {i: 16 for i in range(5)}, False
    )


def test_every_weight_list_is_the_table():
    keys = [t.weight for t in table.TERMS]
    assert list(WEIGHTS) == keys
    assert set(keys) <= {f.name for f in dataclasses.fields(LossConfig)}
    assert set(keys) <= {f.name for f in dataclasses.fields(LossWeights)}
    assert set(SPEC_KEYS) == {f.name for f in dataclasses.fields(LossWeights)}  # spec builds every field
    assert all(f"loss.{k}" in RANGES for k in keys)
    names = [t.name for t in table.TERMS]
    assert list(logs.LOSS_TERMS) == names
    assert list(guards.TERM_NAMES) == names
    assert list(plots.TERM_WEIGHTS) == names and list(plots.TERM_COLORS) == names
    assert set(plots.LAYER_TERMS) == {t.name for t in table.TERMS if t.layers}


def test_every_record_names_a_pure_function():
    for t in table.TERMS:
        assert callable(FUNCTIONS[t.name]) and FUNCTIONS[t.name].__name__ == t.fn.split(".")[1]
        assert t.stage == ("feature" if t.layers else "prediction")


def test_the_objective_reports_exactly_the_terms_that_are_on():
    torch.manual_seed(0)
    loss = _every_term_on()
    total, terms = loss(_outputs(8, 2, 2, grad=True), _outputs(16, 4, 4), torch.tensor([0, 2, 1, 0]))
    top = {k for k in terms if "/" not in k}
    assert top == {t.name for t in table.TERMS}
    assert {k.split("/")[0] for k in terms if "/" in k} == {t.name for t in table.TERMS if t.layers}
    torch.testing.assert_close(total.detach(), sum(0.5 * terms[t.name] for t in table.TERMS))
    text = str(loss)
    assert all(f"0.5*{label}" in text for label in ("KL(τ=2.0)", "cos", "mse", "attn", "InfoNCE(τ=0.1)", "ce"))


def test_a_term_without_its_record_is_refused():
    loss = _every_term_on()
    with pytest.raises(ValueError, match="no record in fadkd/losses/table.py"):
        loss.combine({"ce": torch.tensor(1.0), "hint": torch.tensor(2.0)}, {}, 1.0, 1.0)


def test_the_objective_names_no_term_outside_the_table():
    """Static: every key the objective writes into its values (values["name"]) has a record."""
    tree = ast.parse((ROOT / "fadkd/losses/distill.py").read_text())
    named = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in ("values", "FUNCTIONS")
        if isinstance(node.slice, ast.Constant)
    }
    assert named and named <= set(table.BY_NAME), named - set(table.BY_NAME)


def test_the_feature_rule_is_written_once():
    """ "a feature term is on" lives in table.layerwise; nobody spells it out from the weights again."""
    for path in (ROOT / "fadkd").rglob("*.py"):
        text = path.read_text()
        assert "beta > 0 or" not in text and "gamma > 0 or" not in text, path
    assert LossConfig(alpha=0, beta=0, gamma=0, delta=0, contrast=1.0).layerwise
    assert not LossConfig(beta=0, gamma=0, delta=0).layerwise
    assert table.uses_teacher({"contrast": 1.0}) and not table.uses_teacher({"ce": 1.0})
    assert table.positional({"beta": 1.0}) and not table.positional({"contrast": 1.0})


def test_train_help_lists_every_term_and_setting():
    text = config_help(CONF_DIR, "config", [])
    keys = [*WEIGHTS, "kd", "dkd_alpha", "dkd_beta", "contrast_temperature", "contrast_queue", "balance"]
    for key in keys:
        line = next((ln for ln in text.splitlines() if ln.split()[:1] == [f"loss.{key}"]), None)
        assert line is not None and len(line.split()) > 2, key  # the key, its default and what it means
    assert "dkd" in next(ln for ln in text.splitlines() if ln.split()[:1] == ["loss.kd"])
