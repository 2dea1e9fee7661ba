"""What every section of the typed config (fadkd/config/schema.py) checks with: its error and two helpers.

Each check raises ConfigError with a message that names the key, the bad value and a fix. The
checks of one section live next to its dataclass (fadkd/config/model.py, task.py, loss.py,
train.py); the range of every number in fadkd/config/ranges.py.
"""

from typing import Any

from fadkd.config.choices import Choice
from fadkd.errors import FadkdError


class ConfigError(FadkdError):
    """A configuration value is invalid."""


def check_positive(key: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{key}={value} must be a positive integer")


def choose(kind: type[Choice], key: str, value: Any) -> Choice:
    """`value` as a member of `kind`, or a ConfigError naming the key, the value and the allowed words."""
    try:
        return kind(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}='{value}' is unknown; choose {kind.words()}") from None
