"""Settings that are valid but do nothing in the run as configured: one warning line each.

`config_warnings` is pure (a Config in, lines out); the CLI prints each line before the run
starts. A key is reported only when its value differs from the schema's default, since a default
cannot tell whether the user wrote it.
"""

import dataclasses

from fadkd.config.choices import AttnTerm, FeatureSchedule, KDTerm
from fadkd.config.schema import Config
from fadkd.data.glue_tasks import TASKS


def _default(section, name: str):
    field = next(f for f in dataclasses.fields(section) if f.name == name)
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _changed(section, name: str) -> bool:
    return getattr(section, name) != _default(section, name)


def config_warnings(cfg: Config) -> list[str]:
    """One line per setting that the run as configured ignores: the key, why, and what to change."""
    t, loss, out = cfg.task, cfg.loss, []
    if t.augment == 0 and (t.augment_lm is not None or t.augment_method != _default(t, "augment_method")):
        key, value = ("augment_lm", t.augment_lm) if t.augment_lm is not None else ("augment_method", t.augment_method)
        out.append(
            f"task.{key}={value} is not used: task.augment=0 makes no copies; set task.augment=N, or leave it out"
        )
    inert = [
        ("jsd_beta", loss.kd != KDTerm.jsd, "loss.kd=jsd"),
        ("relation_heads", loss.attn != AttnTerm.relations, "loss.attn=relations"),
        ("relations", loss.attn != AttnTerm.relations, "loss.attn=relations"),
        ("feature_until", loss.feature_schedule in (FeatureSchedule.constant, FeatureSchedule.staged),
         "loss.feature_schedule=linear or cosine"),
        ("temperature", loss.alpha == 0, "loss.alpha > 0 (the KD term)"),
        ("dkd_alpha", loss.kd != KDTerm.dkd, "loss.kd=dkd"),
        ("dkd_beta", loss.kd != KDTerm.dkd, "loss.kd=dkd"),
        ("contrast_temperature", loss.contrast == 0, "loss.contrast > 0"),
        ("contrast_queue", loss.contrast == 0, "loss.contrast > 0"),
    ]  # fmt: skip
    for name, unused, needs in inert:
        if unused and _changed(loss, name):
            out.append(f"loss.{name}={getattr(loss, name)} is not used: it applies only with {needs}")
    glue_task = TASKS.get(t.name)
    if glue_task is not None and glue_task.is_regression and _changed(loss, "kd"):
        out.append(
            f"loss.kd={loss.kd} is not used: {t.name} is a regression task, whose output term is the MSE of the "
            "student's and the teacher's scores; leave loss.kd out"
        )
    epochs = cfg.train.epochs if cfg.train.max_steps < 0 else None
    if loss.feature_schedule == FeatureSchedule.staged and epochs is not None and loss.intermediate_epochs > epochs:
        out.append(
            f"loss.intermediate_epochs={loss.intermediate_epochs} is longer than train.epochs={epochs}: the run trains "
            f"{loss.intermediate_epochs} epoch(s) of β, γ, δ alone, then {epochs} of α and ce "
            f"({loss.intermediate_epochs + epochs} in all); lower loss.intermediate_epochs if train.epochs was "
            "meant as the whole run"
        )
    return out
