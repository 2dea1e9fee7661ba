"""The experiments of the new terms (recipe_contrast, recipe_balanced, kd_only_dkd) and loss.balance=gradnorm from the
CLI on tiny models: a few steps, finite losses, their terms logged, the printed formula naming them, `fadkd plot`
drawing the factors."""

import json
import math

import pytest
from conftest import FAST, run_cli

# The tiny 4-layer teacher shrunk to layers 0 and 2: what experiment=recipe does to a real one.
TINY_RECIPE = ["student=from-teacher", "student.keep_layers=[0,2]", "train.num_threads=1"]
CASES = {
    "recipe_contrast": (["loss.contrast_queue=8"], "contrast", "InfoNCE(τ=0.1, queue 8)"),
    "recipe_balanced": ([], "balance_cos", "[balance=magnitude"),
    "kd_only_dkd": ([], "kd", "DKD(a=1.0, b=8.0, τ=2.0)"),
}
SLOW = {"recipe_contrast", "kd_only_dkd"}  # recipe_balanced runs in the fast suite


@pytest.mark.parametrize("experiment", [pytest.param(e, marks=[pytest.mark.slow] if e in SLOW else []) for e in CASES])
def test_experiment_trains_from_the_cli(experiment, tmp_path):
    extra, logged, formula = CASES[experiment]
    done = run_cli("train", f"experiment={experiment}", *TINY_RECIPE, *FAST, *extra, f"hydra.run.dir={tmp_path}")
    rows = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["loss"]) and math.isfinite(r[logged]) for r in rows if logged in r)
    assert any(logged in r for r in rows)
    assert formula in json.loads((tmp_path / "metrics.json").read_text())["loss_formula"]
    assert formula in done.stdout  # printed too: rich took "[balance=...]" for markup and dropped it
    if experiment == "recipe_balanced":
        run_cli("plot", str(tmp_path))
        assert (tmp_path / "plots" / "balance.png").is_file()


def test_gradnorm_trains_from_the_cli_and_is_documented(tmp_path):
    """loss.balance=gradnorm on the tiny models: its factors logged and finite, named in the formula and in
    `fadkd train --help`, drawn by `fadkd plot`."""
    done = run_cli("train", "loss.balance=gradnorm", "train.num_threads=1", *FAST, f"hydra.run.dir={tmp_path}")
    rows = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for name in ("kd", "cos", "mse", "attn"):
        assert all(math.isfinite(r[f"balance_{name}"]) and r[f"balance_{name}"] > 0 for r in rows), name
    assert "balance_ce" not in rows[0]  # the reference keeps its weight
    formula = json.loads((tmp_path / "metrics.json").read_text())["loss_formula"]
    assert "[balance=gradnorm: each term × ‖∇z ce‖ / ‖∇z term‖, z = student hidden_states[0]" in formula
    assert formula in " ".join(done.stdout.split())
    run_cli("plot", str(tmp_path))
    assert (tmp_path / "plots" / "balance.png").is_file()
    assert "none | magnitude | gradnorm" in run_cli("train", "--help").stdout
