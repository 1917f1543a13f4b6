"""Speciation of Na-P-S-O glasses from one neighbour search per frame.

Definitions are those of docs/speciation.md. Every count is a
count of *contacts* found through periodic images, so an atom bonded twice to the same
neighbour through two different images (possible only in cells smaller than twice a cutoff)
has two neighbours, as it does in the infinite crystal.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from glassbench.analysis.cutoffs import resolve_cutoffs
from glassbench.analysis.neighbours import half_pairs, normalise_geometry

if TYPE_CHECKING:
    from ase import Atoms

# Species codes; 0 is "anything else" and takes part in no bond.
_NA, _P, _S, _O = 1, 2, 3, 4
_NCODE = 5
_Z_TO_CODE = np.zeros(256, dtype=np.intp)
_Z_TO_CODE[[11, 15, 16, 8]] = [_NA, _P, _S, _O]
_SYMBOL_CODE = {"Na": _NA, "P": _P, "S": _S, "O": _O}

# A pair of atoms with codes (a, b) has the ordered key a * _NCODE + b. Its type is the key of
# the same pair ordered lo <= hi, and _FLIP marks keys given in the opposite order.
_KEYS = np.arange(_NCODE * _NCODE)
_FLIP = (_KEYS // _NCODE) > (_KEYS % _NCODE)
_TYPE = np.where(_FLIP, (_KEYS % _NCODE) * _NCODE + _KEYS // _NCODE, _KEYS)
_T_NA_S = _NA * _NCODE + _S
_T_NA_O = _NA * _NCODE + _O
_T_P_P = _P * _NCODE + _P
_T_P_S = _P * _NCODE + _S
_T_P_O = _P * _NCODE + _O
_T_S_S = _S * _NCODE + _S

# Pairs of P atoms bonded to one anion, which the edge-sharing flag and the P-P bond rule
# compare pairwise (~100 bytes each): one per bridging anion in a real glass (two P each), far fewer than the atoms.
# A P-S cutoff at the 8 Å maximum bonds every anion to ~15 P (~100 pairs each): a 2,600-atom
# glass then has ~1.6e5, a 50,000-atom one ~3e6.
_MAX_SHARED = 5_000_000

# First g(r) peak of Na-S / Na-O from the contacts within the cutoff (docs/speciation.md): bins
# and smoothing as `rdf.suggest_cutoffs`. The first shell spans ~30 bins; below 50 contacts
# (under two per bin) the smoothed maximum is set by single contacts, not by the shell.
PEAK_BIN_A = 0.02
PEAK_SMOOTH_BINS = 5
PEAK_MIN_CONTACTS = 50

P_KEYS = ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other", "P2ES", "PPchain")
ANION_KEYS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class PUnits:
    """P classes (P0..P_other are disjoint; P2ES and PPchain are flags on top of them)."""

    P0: int = 0
    P1: int = 0
    P2: int = 0
    P3: int = 0
    P4: int = 0
    P1P: int = 0
    PPend: int = 0
    P3c: int = 0
    P_other: int = 0
    P2ES: int = 0
    PPchain: int = 0

    def to_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in P_KEYS}


@dataclass(frozen=True)
class AnionUnits:
    """S and O atoms by number of P neighbours: 0 free, 1 non-bridging, 2 bridging, 3+ over."""

    BS: int = 0
    NBS: int = 0
    BO: int = 0
    NBO: int = 0
    free_S: int = 0
    free_O: int = 0
    over_S: int = 0
    over_O: int = 0

    def to_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in ANION_KEYS}


@dataclass(frozen=True)
class SSChains:
    """Connected components of the S-S bond graph with two or more S (``chains``: length -> n).

    ``fraction`` is over all S atoms and ``mean_length`` over chains; both are 0.0 when there is
    nothing to average. ``long_share``: chains of more than two S over all chains (None without
    chains). A chain that closes on its own periodic image counts its distinct atoms.
    """

    S_in_chains: int = 0
    fraction: float = 0.0
    mean_length: float = 0.0
    chains: dict[int, int] = field(default_factory=dict)
    long_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "S_in_chains": int(self.S_in_chains),
            "fraction": float(self.fraction),
            "mean_length": float(self.mean_length),
            "chains": {str(k): int(v) for k, v in sorted(self.chains.items())},
            "long_share": _opt_float(self.long_share),
        }


@dataclass(frozen=True)
class NaCoordination:
    """Na coordination by S and O: means over all Na (0.0 without Na), histogram of the total.

    ``s_share``: Na-S contacts over Na-S + Na-O contacts (None without contacts); ``peak_S``,
    ``peak_O``: first g(r) peak in Å from those contacts (None below `PEAK_MIN_CONTACTS`).
    """

    n: int = 0
    cn_mean: float = 0.0
    cn_S_mean: float = 0.0
    cn_O_mean: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)
    s_share: float | None = None
    peak_S: float | None = None
    peak_O: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": int(self.n),
            "cn_mean": float(self.cn_mean),
            "cn_S_mean": float(self.cn_S_mean),
            "cn_O_mean": float(self.cn_O_mean),
            "histogram": {str(k): int(v) for k, v in sorted(self.histogram.items())},
            "s_share": _opt_float(self.s_share),
            "peak_S": _opt_float(self.peak_S),
            "peak_O": _opt_float(self.peak_O),
        }


@dataclass(frozen=True)
class FrameAnalysis:
    """Everything `analyze_frame` finds in one frame, with the cutoffs it used."""

    n_atoms: int
    cutoffs: dict[str, float]
    p: PUnits
    anions: AnionUnits
    ss: SSChains
    na: NaCoordination
    n_P: int = 0
    n_S: int = 0
    n_O: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of ``glassbench analyze`` (plain Python types only)."""
        return {
            "n_atoms": int(self.n_atoms),
            "cutoffs": {k: float(v) for k, v in self.cutoffs.items()},
            "P": self.p.to_dict(),
            "anions": self.anions.to_dict(),
            "SS": self.ss.to_dict(),
            "Na": self.na.to_dict(),
        }

    def unit_counts(self) -> dict[str, int]:
        """Flat integer counts, for storage next to the frame."""
        out: dict[str, int] = {}
        out.update(self.p.to_dict())
        out.update(self.anions.to_dict())
        out["S_in_chains"] = int(self.ss.S_in_chains)
        out["n_P"] = int(self.n_P)
        out["n_S"] = int(self.n_S)
        out["n_O"] = int(self.n_O)
        out["n_Na"] = int(self.na.n)
        return out


@dataclass(frozen=True)
class UnitSites:
    """Where the P3c, edge-sharing, P-P chain and S-S chain units of `analyze_frame` are.

    Indices into the input arrays, foreign atoms included (what `locate_units` returns); the
    same definitions as the counts, from the same neighbour search.
    """

    p3c: tuple[int, ...] = ()  # three-coordinated P atoms
    edge_pairs: tuple[tuple[int, int], ...] = ()  # P pairs sharing >= 2 bridging anions
    pp_chains: tuple[tuple[int, ...], ...] = ()  # P of each P-P cluster of >= 3 P or infinite
    ss_chains: tuple[tuple[int, ...], ...] = ()  # S atoms of each S-S chain


@functools.lru_cache(maxsize=32)
def _cutoff_table(cutoffs: tuple[tuple[str, float], ...]) -> NDArray[np.float64]:
    # -1 so that no distance, not even a zero one from overlapping atoms, bonds other pairs.
    table = np.full(_NCODE * _NCODE, -1.0)
    for name, value in cutoffs:
        a, b = (_SYMBOL_CODE[s] for s in name.split("-"))
        table[a * _NCODE + b] = table[b * _NCODE + a] = value
    table.flags.writeable = False  # shared between calls through the cache
    return table


@dataclass(frozen=True)
class _Components:
    """Connected components of a multigraph over the atoms its edges touch."""

    nodes: NDArray[np.intp]  # atoms (analysis indices), sorted
    labels: NDArray[np.intp]  # component of each node
    sizes: NDArray[np.intp]  # atoms per component
    edges: NDArray[np.intp]  # edges per component

    def has_cycle(self) -> NDArray[np.bool_]:
        # At least as many edges as atoms means a cycle. With one or two atoms it can only run
        # through periodic images (the neighbour list has no duplicate contacts): the cluster
        # is infinite, whatever its size in the cell.
        return self.edges >= self.sizes

    def members(self, which: NDArray[np.bool_]) -> list[NDArray[np.intp]]:
        """Atoms of each component flagged in ``which``, in component order."""
        keep = which[self.labels]
        nodes, labels = self.nodes[keep], self.labels[keep]
        order = np.argsort(labels, kind="stable")
        nodes, labels = nodes[order], labels[order]
        return np.split(nodes, np.flatnonzero(np.diff(labels)) + 1) if len(nodes) else []


def _components(a: NDArray[np.intp], b: NDArray[np.intp]) -> _Components:
    """Connected components of the multigraph with edges (a, b) over the atoms it touches."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(nodes)
    ea, eb = inverse[: len(a)], inverse[len(a) :]
    graph = coo_matrix((np.ones(len(ea), dtype=np.int8), (ea, eb)), shape=(k, k)).tocsr()
    n_comp, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=n_comp)
    edges = np.bincount(labels[ea], minlength=n_comp)
    return _Components(nodes, labels.astype(np.intp), sizes, edges)


def _canonical(
    pa: NDArray[np.intp], pb: NDArray[np.intp], r: NDArray[np.int64]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.int64]]:
    """(P_a, P_b, r) and (P_b, P_a, -r) are one relation: orient every row one way."""
    r_neg = (r[:, 0] < 0) | ((r[:, 0] == 0) & ((r[:, 1] < 0) | ((r[:, 1] == 0) & (r[:, 2] < 0))))
    swap = (pa > pb) | ((pa == pb) & r_neg)
    return np.where(swap, pb, pa), np.where(swap, pa, pb), np.where(swap[:, None], -r, r)


def _relation_ids(
    pa: NDArray[np.intp], pb: NDArray[np.intp], r: NDArray[np.int64], n_atoms: int
) -> NDArray[np.int64]:
    """One integer per canonical relation, equal for equal rows (within one call)."""
    span = int(np.abs(r).max()) if len(r) else 0
    base = 2 * span + 1
    if float(n_atoms) ** 2 * float(base) ** 3 < 2.0**62:
        # One int64 per relation: sorting it is ~10x faster than unique rows.
        rel = (pa.astype(np.int64) * n_atoms + pb) * base**3
        rel += ((r[:, 0] + span) * base + r[:, 1] + span) * base + r[:, 2] + span
        return rel
    _, inverse = np.unique(np.column_stack([pa, pb, r]), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class _Sharing:
    """P pairs that share bridging anions, one row per relation "P_b's image r seen from P_a"
    (canonical orientation), with the number of shared anions behind it."""

    pa: NDArray[np.intp]
    pb: NDArray[np.intp]
    r: NDArray[np.int64]
    shared: NDArray[np.intp]


def _anion_sharing(
    p_of: NDArray[np.intp],
    a_of: NDArray[np.intp],
    image_of: Callable[[NDArray[np.intp]], NDArray[np.int64]],
    n_atoms: int,
    wanted: NDArray[np.int64],
) -> _Sharing:
    """Relations between P atoms through shared anions, for the pairs that matter.

    ``p_of``, ``a_of``: P and anion index of every P-anion contact whose anion is bridging;
    ``image_of(rows)``: the image offsets (rows, 3) of those contacts' anions seen from their P.
    Two contacts on one anion relate P_a to the image ``t_a - t_b`` of P_b. Returned: every
    relation of a pair that shares two or more anions by index (edge candidates) or whose key
    ``min * n_atoms + max`` is in ``wanted`` (P-P contacts, which one shared anion unbonds).
    Offsets matter only in cells smaller than about twice the P...P distance, where anions can
    bridge P_a to different images of P_b, so they are fetched only for those pairs.
    """
    empty = _Sharing(
        np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros((0, 3), np.int64), np.zeros(0, np.intp)
    )
    if len(a_of) < 2:
        return empty
    per_anion = np.bincount(a_of)
    triples = int((per_anion * (per_anion - 1) // 2).sum())
    if triples > _MAX_SHARED:
        raise ValueError(
            f"{triples:,} pairs of P atoms sharing an anion (up to {int(per_anion.max())} P on "
            f"one S or O), above the limit of {_MAX_SHARED:,}: P-S/P-O cutoffs far longer than "
            "a bond, or a collapsed structure"
        )
    order = np.argsort(a_of, kind="stable")
    a_s = a_of[order]
    first_l, second_l = [], []
    # Contacts of one anion are adjacent after sorting; offset m pairs each with the m-th next.
    for m in range(1, len(a_s)):
        same = np.flatnonzero(a_s[:-m] == a_s[m:])
        if not len(same):
            break
        first_l.append(order[same])
        second_l.append(order[same + m])
    if not first_l:
        return empty
    ca, cb = np.concatenate(first_l), np.concatenate(second_l)
    pa, pb = p_of[ca], p_of[cb]
    # Cheap pre-filter on indices alone: most frames have no P pair sharing two anions and few
    # P-P contacts.
    pair_key = np.minimum(pa, pb).astype(np.int64) * n_atoms + np.maximum(pa, pb)
    ks = np.sort(pair_key)
    dup = ks[1:][ks[1:] == ks[:-1]]
    cand = np.flatnonzero(np.isin(pair_key, np.concatenate([dup, wanted])))
    if not len(cand):
        return empty
    ca, cb, pa, pb = ca[cand], cb[cand], pa[cand], pb[cand]
    pa, pb, r = _canonical(pa, pb, image_of(ca) - image_of(cb))
    _, first, counts = np.unique(
        _relation_ids(pa, pb, r, n_atoms), return_index=True, return_counts=True
    )
    return _Sharing(pa[first], pb[first], r[first], counts.astype(np.intp))


def _first_peak(distances: NDArray[np.float64], cutoff: float) -> float | None:
    """Position (Å) of the first g(r) peak of one pair from its contacts within ``cutoff``.

    Contacts in `PEAK_BIN_A` bins from 0 to the cutoff, divided by the shell volume (the
    shape of g(r); its scale does not matter), smoothed and searched as `rdf.first_minimum`
    searches its peak; a flat top gives its middle. None below `PEAK_MIN_CONTACTS` contacts,
    or when the peak lies within a smoothing window of the cutoff (g still rising there: the
    histogram stops before the real peak).
    """
    from glassbench.analysis.rdf import first_peak_index, flat_top_middle, smooth

    if len(distances) < PEAK_MIN_CONTACTS:
        return None
    n_bins = max(3, math.ceil(cutoff / PEAK_BIN_A - 1e-9))
    edges = np.arange(n_bins + 1) * PEAK_BIN_A
    bins = np.minimum((distances / PEAK_BIN_A).astype(np.intp), n_bins - 1)
    shell = edges[1:] ** 3 - edges[:-1] ** 3
    gs = smooth(np.bincount(bins, minlength=n_bins) / shell, PEAK_SMOOTH_BINS)
    peak = first_peak_index(gs)
    if peak is None or peak >= n_bins - PEAK_SMOOTH_BINS:
        return None
    return round(flat_top_middle((edges[:-1] + edges[1:]) / 2, gs, peak), 4)


def _analyse(
    numbers: ArrayLike,
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | ArrayLike,
    cutoffs: Mapping[str, float] | None,
    *,
    sites: bool,
) -> tuple[FrameAnalysis, UnitSites | None]:
    """The one code path of `analyze_frame` and `locate_units` (``sites``: also locate)."""
    used = resolve_cutoffs(cutoffs)
    z = np.asarray(numbers)
    if z.ndim != 1 or (z.size and not np.issubdtype(z.dtype, np.integer)):
        raise ValueError("numbers must be a 1-D array of integer atomic numbers")
    pos, box, periodic = normalise_geometry(positions, cell, pbc)
    if len(pos) != len(z):
        raise ValueError(f"{len(z)} atomic numbers but {len(pos)} positions")
    n_atoms = len(z)
    # mode="clip" sends out-of-table numbers to the ends of the table, both "other" (code 0).
    codes = np.take(_Z_TO_CODE, z, mode="clip")
    original = np.arange(n_atoms)
    if n_atoms and not codes.all():
        # Foreign atoms bond to nothing: leave them out of the neighbour search.
        keep_atoms = codes > 0
        codes, pos, original = codes[keep_atoms], pos[keep_atoms], original[keep_atoms]
    n = len(codes)

    table = _cutoff_table(tuple(used.items()))
    # copy=False: the pair arrays are consumed within this call, before any other search.
    pairs = half_pairs(pos, box, periodic, float(table.max()), copy=False)
    key = codes[pairs.i] * _NCODE + codes[pairs.j]
    sel = np.flatnonzero(pairs.distances <= table[key])
    key = key[sel]
    pi, pj = pairs.i[sel], pairs.j[sel]
    flip = _FLIP[key]
    ptype = _TYPE[key]
    # Orient every bond from the lower to the higher species code (Na < P < S < O).
    lo = np.where(flip, pj, pi)
    hi = np.where(flip, pi, pj)

    px = np.flatnonzero((ptype == _T_P_S) | (ptype == _T_P_O))
    p_of, a_of = lo[px], hi[px]
    n_anion = np.bincount(p_of, minlength=n)
    n_p_of_anion = np.bincount(a_of, minlength=n)
    bridging = np.flatnonzero(n_p_of_anion[a_of] >= 2)
    n_bridging = np.bincount(p_of[bridging], minlength=n)

    # P-P contacts: P_hi in image `shift` of P_lo (same species, never flipped).
    pp = np.flatnonzero(ptype == _T_P_P)
    pp_a, pp_b = lo[pp], hi[pp]
    pp_shift = pairs.shifts[sel[pp]].astype(np.int64)

    def anion_image(rows: NDArray[np.intp]) -> NDArray[np.int64]:
        # Image offset of the anion seen from its P for the given bridging contacts.
        contact = px[bridging[rows]]
        t = pairs.shifts[sel[contact]].astype(np.int64)
        t[flip[contact]] *= -1
        return t

    pp_keys = np.minimum(pp_a, pp_b).astype(np.int64) * n + np.maximum(pp_a, pp_b)
    sharing = _anion_sharing(p_of[bridging], a_of[bridging], anion_image, n, pp_keys)
    if len(pp) and len(sharing.pa):
        # Two P that share an anion (same image relation) are a corner or an edge, however
        # close: an O-O edge puts P...P at 2.4-2.6 Å, inside the P-P cutoff. Not a bond.
        ca, cb, cr = _canonical(pp_a, pp_b, pp_shift)
        ids = _relation_ids(
            np.concatenate([sharing.pa, ca]),
            np.concatenate([sharing.pb, cb]),
            np.concatenate([sharing.r, cr]),
            n,
        )
        bonded = ~np.isin(ids[len(sharing.pa) :], ids[: len(sharing.pa)])
        pp_a, pp_b = pp_a[bonded], pp_b[bonded]
    n_pp = np.bincount(pp_a, minlength=n) + np.bincount(pp_b, minlength=n)

    in_pp_chain = np.zeros(n, dtype=bool)
    pp_comp: _Components | None = None
    if len(pp_a):
        pp_comp = _components(pp_a, pp_b)
        chain_comp = (pp_comp.sizes >= 3) | pp_comp.has_cycle()
        in_pp_chain[pp_comp.nodes[chain_comp[pp_comp.labels]]] = True

    p_idx = np.flatnonzero(codes == _P)
    na_p, npp_p = n_anion[p_idx], n_pp[p_idx]
    tetra = (na_p == 4) & (npp_p == 0)
    pn = np.bincount(n_bridging[p_idx][tetra], minlength=5)
    one_pp = (na_p == 3) & (npp_p == 1)
    n_ppend = int(np.count_nonzero(one_pp & in_pp_chain[p_idx]))
    n_p1p = int(np.count_nonzero(one_pp)) - n_ppend
    p3c = p_idx[(na_p == 3) & (npp_p == 0)]

    edge = sharing.shared >= 2
    edge_a, edge_b = sharing.pa[edge], sharing.pb[edge]
    es = np.zeros(n, dtype=bool)
    es[edge_a] = es[edge_b] = True

    p_units = PUnits(
        P0=int(pn[0]),
        P1=int(pn[1]),
        P2=int(pn[2]),
        P3=int(pn[3]),
        P4=int(pn[4]),
        P1P=n_p1p,
        PPend=n_ppend,
        P3c=len(p3c),
        P_other=int(len(p_idx) - np.count_nonzero(tetra) - n_p1p - n_ppend - len(p3c)),
        P2ES=int(np.count_nonzero(es)),
        PPchain=int(np.count_nonzero(in_pp_chain)),
    )

    s_idx = np.flatnonzero(codes == _S)
    o_idx = np.flatnonzero(codes == _O)
    s_cls = np.bincount(np.minimum(n_p_of_anion[s_idx], 3), minlength=4)
    o_cls = np.bincount(np.minimum(n_p_of_anion[o_idx], 3), minlength=4)
    anions = AnionUnits(
        BS=int(s_cls[2]),
        NBS=int(s_cls[1]),
        BO=int(o_cls[2]),
        NBO=int(o_cls[1]),
        free_S=int(s_cls[0]),
        free_O=int(o_cls[0]),
        over_S=int(s_cls[3]),
        over_O=int(o_cls[3]),
    )

    is_ss = ptype == _T_S_S
    ss = SSChains()
    ss_chains: list[NDArray[np.intp]] = []
    if is_ss.any():
        ss_comp = _components(lo[is_ss], hi[is_ss])
        # A single S bonded to its own image is a chain too (an infinite one).
        is_chain = (ss_comp.sizes >= 2) | (ss_comp.edges >= 1)
        chain_sizes = ss_comp.sizes[is_chain]
        if len(chain_sizes):
            lengths, counts = np.unique(chain_sizes, return_counts=True)
            in_chains = int(chain_sizes.sum())
            ss = SSChains(
                S_in_chains=in_chains,
                fraction=in_chains / len(s_idx),
                mean_length=in_chains / len(chain_sizes),
                chains={int(k): int(v) for k, v in zip(lengths, counts, strict=True)},
                long_share=int(np.count_nonzero(chain_sizes > 2)) / len(chain_sizes),
            )
            if sites:
                ss_chains = ss_comp.members(is_chain)

    na_idx = np.flatnonzero(codes == _NA)
    na = NaCoordination()
    if len(na_idx):
        na_s, na_o = ptype == _T_NA_S, ptype == _T_NA_O
        cn_s = np.bincount(lo[na_s], minlength=n)[na_idx]
        cn_o = np.bincount(lo[na_o], minlength=n)[na_idx]
        hist = np.bincount(cn_s + cn_o)
        n_s_contacts, n_o_contacts = int(cn_s.sum()), int(cn_o.sum())
        n_contacts = n_s_contacts + n_o_contacts
        distances = pairs.distances[sel]
        na = NaCoordination(
            n=len(na_idx),
            cn_mean=n_contacts / len(na_idx),
            cn_S_mean=n_s_contacts / len(na_idx),
            cn_O_mean=n_o_contacts / len(na_idx),
            histogram={int(k): int(hist[k]) for k in np.flatnonzero(hist)},
            s_share=n_s_contacts / n_contacts if n_contacts else None,
            peak_S=_first_peak(distances[na_s], used["Na-S"]),
            peak_O=_first_peak(distances[na_o], used["Na-O"]),
        )

    analysis = FrameAnalysis(
        n_atoms=n_atoms,
        cutoffs=used,
        p=p_units,
        anions=anions,
        ss=ss,
        na=na,
        n_P=len(p_idx),
        n_S=len(s_idx),
        n_O=len(o_idx),
    )
    if not sites:
        return analysis, None

    def atoms(group: NDArray[np.intp]) -> tuple[int, ...]:
        return tuple(int(k) for k in np.sort(original[group]))

    pp_chains: list[NDArray[np.intp]] = []
    if pp_comp is not None:
        pp_chains = pp_comp.members((pp_comp.sizes >= 3) | pp_comp.has_cycle())
    edge_pairs = {
        (int(min(a, b)), int(max(a, b)))
        for a, b in zip(original[edge_a], original[edge_b], strict=True)
    }
    found = UnitSites(
        p3c=atoms(p3c),
        edge_pairs=tuple(sorted(edge_pairs)),
        pp_chains=tuple(sorted(atoms(c) for c in pp_chains)),
        ss_chains=tuple(sorted(atoms(c) for c in ss_chains)),
    )
    return analysis, found


def analyze_frame(
    numbers: ArrayLike,
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | ArrayLike,
    cutoffs: Mapping[str, float] | None = None,
) -> FrameAnalysis:
    """Speciation of one frame.

    numbers: atomic numbers (N,); positions: Cartesian Å (N, 3), wrapped or not; cell: (3, 3)
    rows are cell vectors (may be zero where not periodic); pbc: bool or three bools;
    cutoffs: overrides of `DEFAULT_CUTOFFS` by pair name ("S-P" == "P-S"), in Å; a pair is
    bonded when its distance is <= its cutoff.
    Elements other than Na, P, S, O are counted in ``n_atoms`` and otherwise ignored.
    Raises ValueError for inconsistent shapes, a singular periodic cell or bad cutoffs.
    """
    return _analyse(numbers, positions, cell, pbc, cutoffs, sites=False)[0]


def locate_units(
    numbers: ArrayLike,
    positions: ArrayLike,
    cell: ArrayLike | None,
    pbc: bool | ArrayLike,
    cutoffs: Mapping[str, float] | None = None,
) -> UnitSites:
    """Atoms of the P3c, edge-sharing, P-P chain and S-S chain units of one frame.

    The same search and definitions as `analyze_frame` (one code path); indices are into the
    input arrays, foreign atoms included. Arguments and errors as `analyze_frame`.
    """
    found = _analyse(numbers, positions, cell, pbc, cutoffs, sites=True)[1]
    assert found is not None  # sites=True always locates
    return found


def analyze_atoms(atoms: Atoms, cutoffs: Mapping[str, float] | None = None) -> FrameAnalysis:
    """`analyze_frame` on an ``ase.Atoms`` (ASE is only touched through the object's methods)."""
    return analyze_frame(
        atoms.get_atomic_numbers(),
        atoms.get_positions(),
        np.asarray(atoms.get_cell()),
        atoms.get_pbc(),
        cutoffs=cutoffs,
    )
