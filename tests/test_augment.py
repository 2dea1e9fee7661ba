"""task.augment: teacher-labelled perturbed copies of the training rows (fadkd/data/augment.py)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from fadkd.config.checks import ConfigError
from fadkd.config.schema import Config, LossConfig, TaskConfig, TrainConfig
from fadkd.data.augment import UNLABELLED, augment_rows, perturb
from fadkd.losses.terms import task_loss
from fadkd.run.train import train

ROWS = [
    {"sentence1": "the cat sat on the mat today", "sentence2": "a cat was sitting on a mat", "label": 1},
    {"sentence1": "stocks fell sharply in early trading", "sentence2": "it rained all day", "label": 0},
]


def test_perturb_drops_and_swaps_words_but_keeps_some():
    rng = random.Random(0)
    text = "one two three four five six seven eight nine ten"
    outs = [perturb(text, 0.3, rng) for _ in range(50)]
    assert all(out.split() and set(out.split()) <= set(text.split()) for out in outs)
    assert any(len(out.split()) < 10 for out in outs)  # deletions happen
    assert any(out.split() != sorted(out.split(), key=text.split().index) for out in outs)  # and swaps
    assert perturb("single", 0.9, rng) == "single"
    assert all(perturb("a b", 0.99, random.Random(s)) for s in range(20))  # never empty


def test_copies_follow_the_rows_without_labels_and_repeat_with_the_seed():
    out = augment_rows(ROWS, ("sentence1", "sentence2"), 2, 0.2, seed=3, regression=False)
    assert out[:2] == ROWS and len(out) == 6
    assert [r["label"] for r in out[2:]] == [UNLABELLED] * 4
    assert out == augment_rows(ROWS, ("sentence1", "sentence2"), 2, 0.2, seed=3, regression=False)
    assert out != augment_rows(ROWS, ("sentence1", "sentence2"), 2, 0.2, seed=4, regression=False)
    reg = augment_rows(
        [{"sentence1": "a b c", "sentence2": "d e f", "label": 2.5}],
        ("sentence1", "sentence2"),
        1,
        0.2,
        seed=0,
        regression=True,
    )
    assert math.isnan(reg[1]["label"])


def test_task_loss_skips_unlabelled_rows():
    logits = torch.randn(4, 2, requires_grad=True)
    labels = torch.tensor([1, UNLABELLED, 0, UNLABELLED])
    assert task_loss(logits, labels, False).item() == pytest.approx(
        F.cross_entropy(logits[[0, 2]], labels[[0, 2]]).item()
    )
    none = task_loss(logits, torch.full((4,), UNLABELLED), False)
    none.backward()
    assert none.item() == 0 and torch.all(logits.grad == 0)  # a batch of copies: no task signal, no NaN
    pred = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([2.0, float("nan"), 1.0])
    assert task_loss(pred, target, True).item() == pytest.approx((1 + 4) / 2)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="only a teacher term"):
        Config(task=TaskConfig(data_dir="sample", augment=1), loss=LossConfig(alpha=0, beta=0, gamma=0, delta=0))
    with pytest.raises(ConfigError, match="augment_p"):
        TaskConfig(data_dir="sample", augment=1, augment_p=1.5)
    with pytest.raises(ConfigError, match=">= 0"):
        TaskConfig(data_dir="sample", augment=-1)
    with pytest.raises(ConfigError, match="packed text"):
        TaskConfig(name="lm_sst2", data_dir="sample", augment=1)


def test_a_run_trains_on_rows_and_copies(tmp_path):
    cfg = Config(
        loss=LossConfig(alpha=1, beta=0.1, gamma=0.1, delta=0.1),
        task=TaskConfig(data_dir="sample", max_train_samples=16, max_eval_samples=8, augment=1),
        train=TrainConfig(epochs=1, batch_size=8, log_every=1, save_student=False),
    )
    train(cfg, tmp_path)
    steps = (tmp_path / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 4  # 16 rows + 16 copies, batch 8, one epoch
