"""LossWeights: the objective's weights, one field per record of fadkd/losses/table.py, then τ and the
settings of the contrast term and of the balancer. Plain values (the config converts into this); no torch."""

import math
from dataclasses import field, fields, make_dataclass

from fadkd.config.loss import check_weights
from fadkd.errors import FadkdError
from fadkd.losses.table import TERMS, layerwise


def _check_weights(self) -> None:
    for key in (*(t.weight for t in TERMS), "temperature", "contrast_temperature"):  # floats: print as 1.0
        value = float(getattr(self, key))
        if not math.isfinite(value):  # the config's ranges catch these before a run; code may not
            raise FadkdError(f"loss.{key}={value} is not a finite number")
        object.__setattr__(self, key, value)
    object.__setattr__(self, "balance", str(self.balance))
    check_weights({f.name: getattr(self, f.name) for f in fields(self)})  # the config's own check


LossWeights = make_dataclass(
    "LossWeights",
    [
        *((t.weight, float, field(default=t.default)) for t in TERMS[:1]),
        ("temperature", float, field(default=2.0)),  # second, as before the table: LossWeights(1.0, 2.0, ...)
        *((t.weight, float, field(default=t.default)) for t in TERMS[1:]),
        ("contrast_temperature", float, field(default=0.1)),
        ("contrast_queue", int, field(default=0)),
        ("balance", str, field(default="none")),  # none | magnitude | gradnorm (fadkd/losses/balance.py)
    ],
    frozen=True,
    namespace={"__post_init__": _check_weights, "layerwise": property(layerwise)},
)
LossWeights.__module__ = __name__
LossWeights.__doc__ = "Weights of the objective (fadkd/losses/table.py), τ, and the contrast and balance settings."
