from __future__ import annotations

import pytest

from glassbench.analysis import DEFAULT_CUTOFFS, canonical_pair, parse_cutoffs


def test_defaults_and_order():
    assert dict(DEFAULT_CUTOFFS) == {
        "P-S": 2.6,
        "P-O": 2.0,
        "P-P": 2.5,
        "S-S": 2.5,
        "Na-S": 3.6,
        "Na-O": 3.1,
    }
    assert parse_cutoffs([]) == dict(DEFAULT_CUTOFFS)
    with pytest.raises(TypeError):
        DEFAULT_CUTOFFS["P-S"] = 1.0  # type: ignore[index]


def test_overrides_merge_with_defaults_any_order():
    got = parse_cutoffs(["S-P=2.5", "O-Na = 3.0", "p-p=2.4"])
    assert got == {**DEFAULT_CUTOFFS, "P-S": 2.5, "Na-O": 3.0, "P-P": 2.4}
    assert list(got) == list(DEFAULT_CUTOFFS)


def test_later_spec_wins():
    assert parse_cutoffs(["P-S=2.5", "S-P=2.7"])["P-S"] == 2.7


@pytest.mark.parametrize("name", ["P-S", "S-P", "s-p", " P - S "])
def test_canonical_pair(name):
    assert canonical_pair(name) == "P-S"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("P-S", "expected PAIR=VALUE"),
        ("P-X=2", "unknown pair"),
        ("Na-P=2", "unknown pair"),
        ("PS=2", "two elements"),
        ("P-S=abc", "not a number"),
        ("P-S=", "not a number"),
        ("P-S=0", "positive"),
        ("P-S=-1", "positive"),
        ("P-S=nan", "positive"),
        ("P-S=inf", "positive"),
        ("Na-S=8.01", "above the maximum of 8"),
        ("Na-S=1e6", "above the maximum of 8"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_cutoffs([spec])
    assert repr(spec) in str(err.value)


def test_cutoffs_up_to_the_maximum_are_accepted():
    from glassbench.analysis.cutoffs import MAX_CUTOFF_A

    assert parse_cutoffs([f"Na-S={MAX_CUTOFF_A}"])["Na-S"] == MAX_CUTOFF_A
