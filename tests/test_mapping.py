import pytest

from fadkd.errors import FadkdError
from fadkd.losses.mapping import LayerPair, MappingError, build_mapping, describe, pair_key


def st(pairs):
    return [(p.student, p.teacher) for p in pairs]


@pytest.mark.parametrize(
    ("ls", "lt", "expected"),
    [
        (2, 4, [(1, 2), (2, 4)]),
        (3, 12, [(1, 4), (2, 8), (3, 12)]),
        (6, 12, [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]),
        (4, 6, [(1, 2), (2, 3), (3, 5), (4, 6)]),  # 1.5 -> 2, 4.5 -> 5: halves round up
        (4, 4, [(1, 1), (2, 2), (3, 3), (4, 4)]),
        (
            6,
            2,
            [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)],
        ),  # 1/3+0.5 = 0 clamped to 1
        (5, 1, [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]),  # 1*1/5+0.5 = 0 clamped to 1
    ],
)
def test_uniform(ls, lt, expected):
    pairs = build_mapping("uniform", ls, lt)
    assert st(pairs) == expected
    assert all(p.weight == 1.0 for p in pairs)


def test_uniform_matches_int_rounding():
    for ls in range(1, 13):
        for lt in range(ls, 25):
            assert st(build_mapping("uniform", ls, lt)) == [(i, int(i * lt / ls + 0.5)) for i in range(1, ls + 1)]


def test_last():
    assert build_mapping("last", 2, 4) == [LayerPair(2, 4, 1.0)]


def test_explicit_with_and_without_weights():
    pairs = build_mapping("explicit", 4, 12, pairs=[[1, 3], (4, 12, 0.5), LayerPair(2, 6, 2.0)])
    assert pairs == [LayerPair(1, 3, 1.0), LayerPair(4, 12, 0.5), LayerPair(2, 6, 2.0)]


def test_include_embeddings_prepends_zero_pair():
    pairs = build_mapping("uniform", 2, 4, include_embeddings=True)
    assert st(pairs) == [(0, 0), (1, 2), (2, 4)]


def test_layer_weights_override():
    pairs = build_mapping("explicit", 2, 4, pairs=[[1, 2, 7.0], [2, 4]], layer_weights=[0.5, 0.0])
    assert [p.weight for p in pairs] == [0.5, 0.0]
    pairs = build_mapping("uniform", 2, 4, include_embeddings=True, layer_weights=[0.1, 0.2, 0.3])
    assert [p.weight for p in pairs] == [0.1, 0.2, 0.3]


E = "explicit"


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (("skip", 2, 4), {}, "uniform, last, explicit"),
        ((E, 2, 4), {}, "non-empty"),
        ((E, 2, 4), {"pairs": []}, "non-empty"),
        (
            (E, 4, 6),
            {"pairs": [[5, 3]]},
            (
                "mapping pair [5, 3]: student layer 5 is out of range; "
                "the student has 4 layers (valid 1..4, 0 = embeddings)"
            ),
        ),
        ((E, 4, 6), {"pairs": [[1, 7]]}, "teacher layer 7 is out of range"),
        ((E, 4, 6), {"pairs": [[-1, 2]]}, "student layer -1 is out of range"),
        ((E, 4, 6), {"pairs": [[1, 2], [1, 2]]}, "appears twice"),
        (
            (E, 4, 6),
            {"pairs": [[0, 0]], "include_embeddings": True},
            "drop include_embeddings",
        ),
        ((E, 4, 6), {"pairs": [[1]]}, "expected [student, teacher]"),
        ((E, 4, 6), {"pairs": [[1.5, 2]]}, "must be an integer"),
        ((E, 4, 6), {"pairs": [[1, 2, "x"]]}, "must be a number"),
        ((E, 4, 6), {"pairs": [[1, 2, -1.0]]}, ">= 0"),
        (("uniform", 2, 4), {"layer_weights": [0.0, 0.0]}, "all layer weights are 0"),
        (
            ("uniform", 2, 4),
            {"layer_weights": [1.0]},
            "layer_weights has 1 values but the mapping has 2 pairs",
        ),
        (
            ("uniform", 2, 4),
            {"layer_weights": [1.0, 1.0], "include_embeddings": True},
            "give exactly 3 weights",
        ),
        (("uniform", 0, 4), {}, "student_layers must be a positive"),
        (("last", 2, -3), {}, "teacher_layers must be a positive"),
    ],
)
def test_errors(args, kwargs, needle):
    with pytest.raises(MappingError) as info:
        build_mapping(*args, **kwargs)
    assert needle in str(info.value)
    assert isinstance(info.value, FadkdError)


def test_describe_and_key():
    pairs = build_mapping("uniform", 2, 4, include_embeddings=True, layer_weights=[1.0, 0.5, 1.0])
    lines = describe(pairs).splitlines()
    assert lines[1] == "student 1 <- teacher 2 (λ=0.5)"
    assert lines[2] == "student 2 <- teacher 4 (λ=1.0)"
    assert lines[0].startswith("student 0 <- teacher 0 (λ=1.0)") and "hidden-state terms only" in lines[0]
    assert pair_key(pairs[2]) == "s2_t4"
