"""Per-pair bond cutoffs: defaults, normalisation of pair names, parsing of ``PAIR=VALUE``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

# Order matters: it is the order in which cutoffs are printed and stored.
DEFAULT_CUTOFFS: Mapping[str, float] = MappingProxyType(
    {
        "P-S": 2.6,
        "P-O": 2.0,
        "P-P": 2.5,
        "S-S": 2.5,
        "Na-S": 3.6,
        "Na-O": 3.1,
    }
)


# Pair names are matched without regard to order or case ("s-p", "S-P" and "P-S" are one pair).
def _pair_key(a: str, b: str) -> tuple[str, str]:
    lo, hi = sorted((a.lower(), b.lower()))
    return lo, hi


_CANONICAL: dict[tuple[str, str], str] = {
    _pair_key(*name.split("-")): name for name in DEFAULT_CUTOFFS
}


def canonical_pair(name: str) -> str:
    """Return the canonical spelling of a pair name (``"S-P"`` -> ``"P-S"``).

    Raises ValueError for anything that is not one of the pairs in `DEFAULT_CUTOFFS`.
    """
    parts = [p.strip() for p in str(name).split("-")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"bad pair {name!r}: expected two elements like 'P-S'")
    try:
        return _CANONICAL[_pair_key(parts[0], parts[1])]
    except KeyError:
        known = ", ".join(DEFAULT_CUTOFFS)
        raise ValueError(f"unknown pair {name!r} (known pairs: {known})") from None


# The longest bond cutoff a Na-P-S-O analysis needs is Na-S (3.6 Å by default); a cutoff far
# beyond any bond only grows the neighbour list, as (cutoff)^3, until memory runs out (a 100 Å
# cutoff on a 1,000-atom glass asks for ~10^8 pairs). 8 Å leaves room for second shells.
MAX_CUTOFF_A = 8.0


def _check_value(pair: str, value: object) -> float:
    try:
        v = float(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"cutoff for {pair} is not a number: {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"cutoff for {pair} must be a positive finite number of Å, got {value!r}")
    if v > MAX_CUTOFF_A:
        raise ValueError(
            f"cutoff for {pair} is {v:g} Å, above the maximum of {MAX_CUTOFF_A:g} Å "
            "(no bond of these glasses is that long; the neighbour list would grow without bound)"
        )
    return v


def resolve_cutoffs(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Defaults updated with ``overrides`` (pair names in any order), in canonical order."""
    out = dict(DEFAULT_CUTOFFS)
    for name, value in (overrides or {}).items():
        pair = canonical_pair(name)
        out[pair] = _check_value(pair, value)
    return out


def parse_cutoffs(specs: Iterable[str]) -> dict[str, float]:
    """Parse ``["P-S=2.5", ...]`` into a full cutoff table (defaults for the pairs not given).

    A later spec for the same pair wins. Raises ValueError with a message naming the bad spec.
    """
    overrides: dict[str, float] = {}
    for spec in specs:
        name, sep, value = str(spec).partition("=")
        if not sep:
            raise ValueError(f"bad cutoff {spec!r}: expected PAIR=VALUE, e.g. 'P-S=2.5'")
        try:
            pair = canonical_pair(name)
            overrides[pair] = _check_value(pair, value.strip())
        except ValueError as exc:
            raise ValueError(f"bad cutoff {spec!r}: {exc}") from None
    return resolve_cutoffs(overrides)


def cutoff_table(cutoffs: Mapping[str, float] | Iterable[str] | None) -> dict[str, float]:
    """The full cutoff table from ``{"P-S": 2.5}`` or ``["P-S=2.5"]`` (defaults for the rest).

    Raises :class:`~glassbench.errors.BadInput` on the field ``cutoffs`` (the CLI's
    ``--cutoff``): this is where user-given cutoffs enter every analysis.
    """
    from glassbench.errors import BadInput

    try:
        if isinstance(cutoffs, Mapping):
            return resolve_cutoffs(cutoffs)
        return parse_cutoffs(cutoffs or ())
    except ValueError as exc:
        raise BadInput(str(exc), field="cutoffs") from None
