"""GLUE metrics, delegated to scikit-learn and SciPy.

Kept apart from the loaders so that the metric definitions (which decide what a
reported number means) can be read in one place, and so that importing the task
registry does not pull in scikit-learn or SciPy until a metric is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, predictions))


def _f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of class 1, as GLUE reports it for MRPC ("equivalent") and QQP ("duplicate")."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predictions, average="binary", pos_label=1, zero_division=0))


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, predictions))


def _pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (SciPy warns), since r is undefined there."""
    from scipy.stats import pearsonr

    return float(pearsonr(predictions, labels)[0])


def _spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(predictions, labels)[0])


METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _pearson,
    "spearmanr": _spearman,
}


def as_1d_array(values: Sequence, *, what: str, regression: bool) -> np.ndarray:
    """Turn predictions/labels into a flat array, refusing logits and ragged input.

    A 2-D array here almost always means un-argmaxed logits; silently flattening it
    would produce a meaningless score, so it is rejected with a hint instead.
    """
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        hint = "squeeze the regression output" if regression else "take argmax over the class axis first"
        raise ValueError(f"{what} must be one value per example, got shape {array.shape}; {hint}")
    if regression:
        return array.astype(np.float64)
    if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        example = array[np.mod(array, 1) != 0][0]
        raise ValueError(f"{what} must be class indices, got non-integer values such as {example}")
    return array.astype(np.int64)


def compute(metric_names: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Evaluate each named metric; plain floats so results serialize to JSON unchanged."""
    return {name: METRIC_FUNCTIONS[name](predictions, labels) for name in metric_names}
