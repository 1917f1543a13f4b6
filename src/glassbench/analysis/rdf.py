"""Partial radial distribution functions and cutoffs suggested from their first minimum."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from glassbench.analysis.cutoffs import DEFAULT_CUTOFFS
from glassbench.analysis.neighbours import _volume, half_pairs, normalise_geometry

_Z = {"Na": 11, "P": 15, "S": 16, "O": 8}


@dataclass(frozen=True)
class RDF:
    """g(r) per pair on a common grid; ``r`` are bin centres in Å, ``g[pair]`` the values.

    ``normalised`` is False for frames without a periodic volume: the curves then have the
    right shape (pair counts over shell volume) but an arbitrary scale.
    """

    r: NDArray[np.float64]
    g: dict[str, NDArray[np.float64]]
    counts: dict[str, NDArray[np.int64]]
    normalised: bool


def _pair_elements(pair: str | Sequence[str]) -> tuple[str, str]:
    a, b = pair.split("-") if isinstance(pair, str) else pair
    a, b = a.strip(), b.strip()
    for el in (a, b):
        if el not in _Z:
            raise ValueError(f"unknown element {el!r} in pair {pair!r} (known: {', '.join(_Z)})")
    return a, b


def partial_rdf(
    numbers: ArrayLike,
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | ArrayLike,
    pairs: Iterable[str | Sequence[str]] = tuple(DEFAULT_CUTOFFS),
    *,
    r_max: float = 6.0,
    bin_width: float = 0.02,
    require_periodic: bool = True,
) -> RDF:
    """Partial g(r) for ``pairs`` (names like "P-S"), from one neighbour search at ``r_max``.

    g_AB(r) = V n_AB(r) / (N_A N_B' shell(r)), N_B' = N_B - 1 when A == B, n_AB counting
    ordered pairs. ``r_max`` may exceed half the cell: periodic images are included.
    Raises ValueError for a non-periodic frame unless ``require_periodic`` is False.
    """
    if not (r_max > 0 and bin_width > 0 and math.isfinite(r_max)):
        raise ValueError("r_max and bin_width must be positive")
    z = np.asarray(numbers)
    pos, box, periodic = normalise_geometry(positions, cell, pbc)
    if len(z) != len(pos):
        raise ValueError(f"{len(z)} atomic numbers but {len(pos)} positions")
    normalised = all(periodic)
    if not normalised and require_periodic:
        raise ValueError("g(r) needs a fully periodic cell (its volume normalises g)")
    volume = abs(_volume(box.tolist())) if normalised else 1.0

    n_bins = math.ceil(r_max / bin_width)
    edges = np.arange(n_bins + 1) * bin_width
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    found = half_pairs(pos, box, periodic, n_bins * bin_width)
    zi, zj = z[found.i], z[found.j]
    bins = np.minimum((found.distances / bin_width).astype(np.intp), n_bins - 1)

    g: dict[str, NDArray[np.float64]] = {}
    counts: dict[str, NDArray[np.int64]] = {}
    for pair in pairs:
        a, b = _pair_elements(pair)
        za, zb = _Z[a], _Z[b]
        if za == zb:
            mask = (zi == za) & (zj == za)
        else:
            mask = ((zi == za) & (zj == zb)) | ((zi == zb) & (zj == za))
        hist = np.bincount(bins[mask], minlength=n_bins)
        n_a = int(np.count_nonzero(z == za))
        n_b = int(np.count_nonzero(z == zb)) - (1 if za == zb else 0)
        # Ordered pairs: a half list holds each A-A pair once but g counts it from both ends.
        ordered = hist * (2 if za == zb else 1)
        norm = n_a * n_b * shell / volume
        name = f"{a}-{b}"
        g[name] = np.divide(ordered, norm, out=np.zeros(n_bins), where=norm > 0)
        counts[name] = hist
    return RDF(r=(edges[:-1] + edges[1:]) / 2, g=g, counts=counts, normalised=normalised)


def smooth(g: NDArray[np.float64], smooth_bins: int = 5) -> NDArray[np.float64]:
    """Moving average over ``smooth_bins`` bins (zero beyond the ends), as every peak and
    minimum of this module is found."""
    k = max(1, int(smooth_bins))
    return np.convolve(g, np.ones(k) / k, mode="same")


def first_peak_index(gs: NDArray[np.float64]) -> int | None:
    """Index of the first local maximum of ``gs`` reaching a fifth of its highest value.

    Noise in the tail stays below a fifth of the main peak. None if there is none.
    """
    if len(gs) < 3 or not np.any(gs > 0):
        return None
    top = float(gs.max())
    rising = np.flatnonzero((gs[1:-1] >= gs[:-2]) & (gs[1:-1] > gs[2:]) & (gs[1:-1] >= 0.2 * top))
    return int(rising[0]) + 1 if len(rising) else None


def flat_top_middle(r: NDArray[np.float64], gs: NDArray[np.float64], peak: int) -> float:
    """r of the middle of the top of the peak at index ``peak`` (points within 1e-3 of the
    curve's maximum below it, next to each other): a single sharp contact, spread by the
    moving average into a plateau, is found at its own bin, not at the plateau's edge."""
    tol = 1e-3 * float(gs.max())
    lo = hi = peak
    while lo > 0 and gs[lo - 1] >= gs[peak] - tol:
        lo -= 1
    while hi + 1 < len(gs) and gs[hi + 1] >= gs[peak] - tol:
        hi += 1
    return float((r[lo] + r[hi]) / 2)


def first_minimum(
    r: NDArray[np.float64], g: NDArray[np.float64], *, smooth_bins: int = 5
) -> float | None:
    """r of the first minimum after the first peak of ``g``, or None if there is none.

    The first peak is the first local maximum reaching a fifth of the highest value (noise in
    the tail stays below that). ``g`` is smoothed by a moving average of ``smooth_bins``; where
    the minimum is flat (a gap with g = 0 between shells) the middle of the flat part is taken.
    """
    if len(g) < 3 or not np.any(g > 0):
        return None
    gs = smooth(g, smooth_bins)
    tol = 1e-3 * float(gs.max())
    peak = first_peak_index(gs)
    if peak is None:
        return None
    # Walk down from the peak to the point where g starts to rise again.
    k = peak
    while k + 1 < len(gs) and gs[k + 1] <= gs[k] + tol:
        k += 1
    if k + 1 >= len(gs):
        return None
    floor = gs[peak : k + 1].min()
    basin = np.flatnonzero(gs[peak : k + 1] <= floor + tol) + peak
    return float((r[basin[0]] + r[basin[-1]]) / 2)


def suggest_cutoffs(
    numbers: ArrayLike,
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | ArrayLike,
    pairs: Iterable[str] = tuple(DEFAULT_CUTOFFS),
    *,
    r_max: float = 6.0,
    bin_width: float = 0.02,
) -> dict[str, float]:
    """Cutoffs at the first minimum after the first peak of each pair's g(r), in Å.

    Pairs with no pair inside ``r_max``, or no minimum before it, are left out. Works for
    non-periodic frames too (the minimum does not depend on g's scale).
    """
    rdf = partial_rdf(
        numbers,
        positions,
        cell,
        pbc,
        pairs,
        r_max=r_max,
        bin_width=bin_width,
        require_periodic=False,
    )
    out: dict[str, float] = {}
    for name, g in rdf.g.items():
        rmin = first_minimum(rdf.r, g)
        if rmin is not None:
            out[name] = round(rmin, 3)
    return out
