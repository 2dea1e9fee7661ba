"""student.prune: the target shape of a student pruned from the teacher (student.init=pruned, fadkd/models/prune.py).

Each field left null keeps the teacher's value. What a shape must satisfy for the teacher's family (heads
that divide the width, whole key/value groups, nothing larger than the teacher) is checked against the
teacher's config before any model is loaded (fadkd/models/prune_shape.py).
"""

from dataclasses import dataclass
from typing import Any

from fadkd.config.checks import ConfigError


@dataclass
class PruneConfig:
    """Minitron's width and depth pruning: keep the most important units, measured on calibration rows."""

    # Transformer layers kept: a count (the layers that change their input most, 1 − cos(input, output)) or a
    # list of 0-based teacher layers. A count is replaced by the chosen list once pruned (mapping=kept reads it).
    layers: Any = None
    heads: int | None = None  # attention heads kept in every layer (Llama: whole key/value groups)
    ffn: int | None = None  # feed-forward (intermediate) neurons kept in every layer
    hidden: int | None = None  # hidden (embedding) channels kept, the same in every layer
    calibration_rows: int = 1024  # training rows the teacher reads to measure importance

    def __post_init__(self) -> None:
        for key in ("heads", "ffn", "hidden"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"student.prune.{key}={value} must be a positive whole number, or null (keep all)")
        rows = self.calibration_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ConfigError(f"student.prune.calibration_rows={rows} must be a positive whole number, e.g. 1024")
        self.layers = _layers(self.layers)


def _layers(layers: Any) -> int | list[int] | None:
    if layers is None:
        return None
    if isinstance(layers, int) and not isinstance(layers, bool):
        if layers < 1:
            raise ConfigError(f"student.prune.layers={layers}: keep at least one layer (a count, or a list [0,2,5])")
        return layers
    items = list(layers) if isinstance(layers, (list, tuple)) or hasattr(layers, "__iter__") else None
    ok = items is not None and items and all(isinstance(k, int) and not isinstance(k, bool) for k in items)
    if not ok or any(k < 0 for k in items) or items != sorted(set(items)):
        raise ConfigError(
            f"student.prune.layers={layers} must be a count (e.g. 4) or 0-based teacher layers in increasing "
            "order, each once (e.g. [0,2,5])"
        )
    return items
