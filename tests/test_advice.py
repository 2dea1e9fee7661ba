"""Settings that are valid but do nothing get one warning line (fadkd/config/advice.py), and only those."""

import pytest

from fadkd.cli import main
from fadkd.config.advice import config_warnings
from fadkd.config.schema import Config, LossConfig, TaskConfig, TrainConfig

WARNED = {
    "augment-lm-unused": (dict(task=TaskConfig(data_dir="sample", augment_method="lm", augment_lm="/nonexistent")),
                          "task.augment_lm=/nonexistent is not used: task.augment=0 makes no copies"),
    "jsd-beta-unused": (dict(loss=LossConfig(jsd_beta=0.3)),
                        "loss.jsd_beta=0.3 is not used: it applies only with loss.kd=jsd"),
    "relation-heads-unused": (dict(loss=LossConfig(relation_heads=2)), "loss.relation_heads=2 is not used"),
    "feature-until-unused": (dict(loss=LossConfig(feature_until=0.5)), "loss.feature_until=0.5 is not used"),
    "temperature-unused": (dict(loss=LossConfig(alpha=0, temperature=4.0)), "loss.temperature=4.0 is not used"),
    "dkd-beta-unused": (dict(loss=LossConfig(dkd_beta=4.0)),
                        "loss.dkd_beta=4.0 is not used: it applies only with loss.kd=dkd"),
    "contrast-queue-unused": (dict(loss=LossConfig(contrast_queue=64)),
                              "loss.contrast_queue=64 is not used: it applies only with loss.contrast > 0"),
    "kd-form-on-regression": (dict(task=TaskConfig(name="stsb", data_dir="sample"), loss=LossConfig(kd="dkd")),
                              "loss.kd=dkd is not used: stsb is a regression task"),
    "stage-longer-than-run": (
        dict(loss=LossConfig(feature_schedule="staged", intermediate_epochs=50), train=TrainConfig(epochs=1)),
        "loss.intermediate_epochs=50 is longer than train.epochs=1: the run trains 50 epoch(s) of β, γ, δ alone, "
        "then 1 of α and ce (51 in all)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(WARNED))
def test_ineffective_setting_is_warned_once(case):
    sections, expected = WARNED[case]
    lines = config_warnings(Config(**sections))
    assert len(lines) == 1 and expected in lines[0]


def test_defaults_and_effective_settings_are_not_warned():
    assert config_warnings(Config()) == []
    used = Config(
        task=TaskConfig(data_dir="sample", augment=1, augment_method="lm", augment_lm="/x"),
        loss=LossConfig(kd="jsd", jsd_beta=0.3, feature_schedule="linear", feature_until=0.5),
        train=TrainConfig(epochs=3),
    )
    assert config_warnings(used) == []
    dkd = Config(loss=LossConfig(kd="dkd", dkd_beta=4.0, contrast=1.0, contrast_queue=64))
    assert config_warnings(dkd) == []
    staged = Config(loss=LossConfig(feature_schedule="staged", intermediate_epochs=2), train=TrainConfig(epochs=3))
    assert config_warnings(staged) == []


def test_cli_prints_the_warning_before_the_run(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_train(cfg, out_dir):
        seen["ran"] = True
        return {"student": {"accuracy": 0.5}, "main_metric": "accuracy"}

    monkeypatch.setattr("fadkd.run.train.train", fake_train)
    main(["train", "task.augment_lm=/nonexistent", f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert seen["ran"] and err.count("warning:") == 1
    assert "task.augment_lm=/nonexistent is not used" in " ".join(err.split())
