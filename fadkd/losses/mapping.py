"""Student-to-teacher layer mapping, kept as plain data.

Index convention (same as Hugging Face ``output_hidden_states``/``output_attentions``):
``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` the output of
transformer layer ``i`` (1-based, ``1..L``). Attention maps exist only for transformer
layers: ``attentions[i - 1]`` belongs to layer ``i``. Layer 0 is therefore valid in a
pair but such a pair contributes to the hidden-state terms (cos, mse) only, never to the
attention term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fadkd.errors import FadkdError

STRATEGIES = ("uniform", "last", "explicit")


@dataclass(frozen=True)
class LayerPair:
    student: int  # 1-based transformer layer; 0 = embedding output (hidden only)
    teacher: int
    weight: float = 1.0  # λ_l in the objective


class MappingError(FadkdError):
    """An invalid layer mapping (a ValueError); the message says what is wrong and how to fix it."""


def pair_key(pair: LayerPair) -> str:
    """Stable name of a pair, e.g. ``"s2_t4"`` (used for projections and logged terms)."""
    return f"s{pair.student}_t{pair.teacher}"


def _arrow(pair: LayerPair) -> str:
    return f"[{pair.student}, {pair.teacher}]"


def _uniform(student_layers: int, teacher_layers: int) -> list[LayerPair]:
    # Student layer i <-> teacher layer round(i * Lt / Ls), rounding halves up, i.e.
    # int(i*Lt/Ls + 0.5). Integer arithmetic gives exactly that without float error.
    # Clamped to >= 1 so a student deeper than twice the teacher never maps to embeddings.
    return [
        LayerPair(i, max(1, (2 * i * teacher_layers + student_layers) // (2 * student_layers)))
        for i in range(1, student_layers + 1)
    ]


def _explicit(pairs: list | None) -> list[LayerPair]:
    if not pairs:
        raise MappingError(
            "mapping strategy 'explicit' needs a non-empty list of pairs, "
            "e.g. pairs: [[1, 2], [2, 4, 0.5]] ([student, teacher] or [student, teacher, weight])"
        )
    out = []
    for raw in pairs:
        if isinstance(raw, LayerPair):
            out.append(raw)
            continue
        items = list(raw) if isinstance(raw, (list, tuple)) else None
        if items is None or len(items) not in (2, 3):
            raise MappingError(f"mapping pair {raw!r}: expected [student, teacher] or [student, teacher, weight]")
        s, t = items[0], items[1]
        for name, v in (("student", s), ("teacher", t)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise MappingError(f"mapping pair {raw!r}: {name} layer {v!r} must be an integer layer index")
        w = items[2] if len(items) == 3 else 1.0
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise MappingError(f"mapping pair {raw!r}: weight {w!r} must be a number")
        out.append(LayerPair(s, t, float(w)))
    return out


def _check_depth(name: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MappingError(f"{name} must be a positive number of transformer layers, got {n!r}")


def build_mapping(
    strategy: str,
    student_layers: int,
    teacher_layers: int,
    pairs: list | None = None,
    layer_weights: list[float] | None = None,
    include_embeddings: bool = False,
) -> list[LayerPair]:
    """Build and validate the list of (student, teacher, λ) layer pairs.

    strategy: "uniform" (student layer i <-> teacher layer int(i*Lt/Ls + 0.5)),
    "last" ([(Ls, Lt)]) or "explicit" (``pairs`` = list of [s, t] or [s, t, weight]).
    include_embeddings prepends the pair (0, 0). layer_weights, if given, holds one λ
    per resulting pair (embedding pair included) and overrides any weights in ``pairs``.
    Raises MappingError on any invalid input.
    """
    _check_depth("student_layers", student_layers)
    _check_depth("teacher_layers", teacher_layers)
    if strategy == "uniform":
        result = _uniform(student_layers, teacher_layers)
    elif strategy == "last":
        result = [LayerPair(student_layers, teacher_layers)]
    elif strategy == "explicit":
        result = _explicit(pairs)
    else:
        raise MappingError(f"unknown mapping strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if include_embeddings:
        result = [LayerPair(0, 0), *result]

    if layer_weights is not None:
        if len(layer_weights) != len(result):
            listing = ", ".join(_arrow(p) for p in result)
            raise MappingError(
                f"layer_weights has {len(layer_weights)} values but the mapping has "
                f"{len(result)} pairs ({listing}); give exactly {len(result)} weights, one per pair"
            )
        result = [LayerPair(p.student, p.teacher, float(w)) for p, w in zip(result, layer_weights)]

    seen = set()
    for p in result:
        for name, idx, depth in (
            ("student", p.student, student_layers),
            ("teacher", p.teacher, teacher_layers),
        ):
            if not 0 <= idx <= depth:
                raise MappingError(
                    f"mapping pair {_arrow(p)}: {name} layer {idx} is out of range; the {name} "
                    f"has {depth} layers (valid 1..{depth}, 0 = embeddings)"
                )
        if (p.student, p.teacher) in seen:
            hint = " (drop include_embeddings or the explicit [0, 0])" if p.student == 0 == p.teacher else ""
            raise MappingError(f"mapping pair {_arrow(p)} appears twice; list each pair once{hint}")
        seen.add((p.student, p.teacher))
        if isinstance(p.weight, bool) or not math.isfinite(p.weight) or p.weight < 0:
            raise MappingError(f"mapping pair {_arrow(p)}: weight {p.weight!r} must be a finite number >= 0")
    if all(p.weight == 0 for p in result):
        raise MappingError("all layer weights are 0, so no layer would be aligned; give at least one pair a weight > 0")
    return result


def describe(pairs: list[LayerPair]) -> str:
    """One line per pair, e.g. ``student 1 <- teacher 2 (λ=1.0)``, for printing at start."""
    lines = []
    for p in pairs:
        note = "  [embeddings: hidden-state terms only]" if 0 in (p.student, p.teacher) else ""
        lines.append(f"student {p.student} <- teacher {p.teacher} (λ={p.weight}){note}")
    return "\n".join(lines)
