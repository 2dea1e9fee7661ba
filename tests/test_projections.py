"""Learned projections: least-squares start and their own learning rate."""

import torch
from torch import nn

from fadkd.config.schema import Config, LossConfig, ModelConfig, TaskConfig, TrainConfig
from fadkd.losses.projections import fit_feature_norm, fit_linear, param_groups
from fadkd.run.train import train


def test_fit_linear_recovers_a_linear_map():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=gen)
    w, b = torch.randn(16, 8, generator=gen), torch.randn(16, generator=gen)
    layer = nn.Linear(8, 16)
    fit_linear(x, x @ w.T + b, layer, ridge=1e-9)
    torch.testing.assert_close(layer.weight, w, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(layer.bias, b, atol=1e-4, rtol=1e-4)


def test_fit_linear_ridge_is_scale_free():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 8, generator=gen), torch.randn(50, 4, generator=gen)
    small, large = nn.Linear(8, 4), nn.Linear(8, 4)
    fit_linear(x, y, small, ridge=0.1)
    fit_linear(100 * x, y, large, ridge=0.1)  # same map once the input scale is undone
    torch.testing.assert_close(large.weight * 100, small.weight, atol=1e-4, rtol=1e-4)


def test_param_groups_give_projections_their_own_lr():
    student, loss = nn.Linear(2, 2), nn.ModuleDict({"p": nn.Linear(2, 3)})
    groups = param_groups(student, loss, 1e-5, 1e-3)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    assert [len(g["params"]) for g in groups] == [2, 2]
    assert [g["lr"] for g in param_groups(student, loss, 1e-5, None)] == [1e-5, 1e-5]
    assert len(param_groups(student, nn.ModuleDict(), 1e-5, 1e-3)) == 1


def _cfg(**loss) -> Config:
    return Config(
        teacher=ModelConfig(num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128),
        loss=LossConfig(alpha=0.0, beta=1.0, gamma=1.0, delta=0.0, **loss),
        task=TaskConfig(data_dir="sample", max_train_samples=32, max_eval_samples=8),
        train=TrainConfig(max_steps=1, batch_size=16, log_every=1, save_student=False),
    )


def test_lstsq_start_lowers_the_first_feature_loss(tmp_path):
    """Same seed and batch: the fitted projection starts closer to the teacher than a random one."""
    first = {}
    for init in ("random", "lstsq"):
        train(_cfg(projection_init=init, projection_lr=1e-3), tmp_path / init)
        first[init] = next(iter(__import__("json").loads(line) for line in (tmp_path / init / "steps.jsonl").open()))
    assert first["lstsq"]["mse"] < 0.5 * first["random"]["mse"]
    assert first["lstsq"]["cos"] < first["random"]["cos"]


def _outputs(hidden: dict, mask: torch.Tensor):
    from fadkd.models.capture import Outputs

    return Outputs(logits=torch.zeros(len(mask), 2), hidden=hidden, attentions={}, mask=mask)


def _standardized_loss(feature_tokens: str = "all"):
    from fadkd.losses.distill import DistillLoss, LossWeights
    from fadkd.losses.kd import TermChoice
    from fadkd.losses.mapping import LayerPair

    choice = TermChoice(feature_norm="standardize", feature_tokens=feature_tokens)
    weights = LossWeights(alpha=0.0, beta=1.0, gamma=1.0, delta=0.0, ce=0.0)
    return DistillLoss(weights, [LayerPair(1, 2)], {1: 4}, {2: 6}, False, choice=choice)


def test_standardize_compares_teacher_states_per_dimension_standardised():
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(3, 5)
    mask[0, 3:] = 0
    teacher = torch.randn(3, 5, 6, generator=gen) * torch.tensor([1.0, 1, 1, 1, 1, 500]) + 7  # one huge dimension
    teacher[0, 3:] = float("nan")  # padding never reaches the statistics or the terms
    student = torch.randn(3, 5, 4, generator=gen)
    loss = _standardized_loss()
    spread = fit_feature_norm(loss, _outputs({2: teacher}, mask))
    real = mask.bool()
    mean, std = teacher[real].mean(0), teacher[real].std(0, unbiased=False)
    torch.testing.assert_close(loss.norm_t2, torch.stack([mean, std]))
    assert spread["t2"] > 100  # the log says how much one dimension dominated
    _, terms = loss(_outputs({1: student}, mask), _outputs({2: teacher}, mask))
    s = (loss.projections["s1_t2"](student[real]) - mean) / std
    t = (teacher[real] - mean) / std
    torch.testing.assert_close(terms["mse"], (s - t).pow(2).mean())
    torch.testing.assert_close(terms["cos"], (1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)).mean())
    assert torch.isfinite(terms["mse"])


def test_standardize_statistics_follow_feature_tokens_first():
    teacher = torch.arange(2 * 3 * 6, dtype=torch.float).reshape(2, 3, 6)
    loss = _standardized_loss("first")
    fit_feature_norm(loss, _outputs({2: teacher}, torch.ones(2, 3)))
    torch.testing.assert_close(loss.norm_t2[0], teacher[:, 0].mean(0))


def test_standardize_trains_and_logs_the_spread(tmp_path, capsys):
    train(_cfg(feature_norm="standardize", projection_init="lstsq"), tmp_path)
    out = capsys.readouterr().out
    assert "standardised per dimension" in out and "least squares" in out
