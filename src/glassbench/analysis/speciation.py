"""Speciation of Na-P-S-O glasses from one neighbour search per frame.

Definitions are those of docs/speciation.md. Every count is a
count of *contacts* found through periodic images, so an atom bonded twice to the same
neighbour through two different images (possible only in cells smaller than twice a cutoff)
has two neighbours, as it does in the infinite crystal.
"""

from __future__ import annotations

import functools
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

# Pairs of P atoms bonded to one anion, which the edge-sharing test compares pairwise (~100
# bytes each): one per bridging anion in a real glass (two P each), far fewer than the atoms.
# A P-S cutoff at the 8 Å maximum bonds every anion to ~15 P (~100 pairs each): a 2,600-atom
# glass then has ~1.6e5, a 50,000-atom one ~3e6.
_MAX_SHARED = 5_000_000

P_KEYS = ("P0", "P1", "P2", "P3", "P4", "P1P", "P3c", "P_other", "P2ES", "PPchain")
ANION_KEYS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")


@dataclass(frozen=True)
class PUnits:
    """P classes (P0..P_other are disjoint; P2ES and PPchain are flags on top of them)."""

    P0: int = 0
    P1: int = 0
    P2: int = 0
    P3: int = 0
    P4: int = 0
    P1P: int = 0
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
    nothing to average. A chain that closes on its own periodic image counts its distinct atoms.
    """

    S_in_chains: int = 0
    fraction: float = 0.0
    mean_length: float = 0.0
    chains: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "S_in_chains": int(self.S_in_chains),
            "fraction": float(self.fraction),
            "mean_length": float(self.mean_length),
            "chains": {str(k): int(v) for k, v in sorted(self.chains.items())},
        }


@dataclass(frozen=True)
class NaCoordination:
    """Na coordination by S and O: means over all Na (0.0 without Na), histogram of the total."""

    n: int = 0
    cn_mean: float = 0.0
    cn_S_mean: float = 0.0
    cn_O_mean: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": int(self.n),
            "cn_mean": float(self.cn_mean),
            "cn_S_mean": float(self.cn_S_mean),
            "cn_O_mean": float(self.cn_O_mean),
            "histogram": {str(k): int(v) for k, v in sorted(self.histogram.items())},
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


@functools.lru_cache(maxsize=32)
def _cutoff_table(cutoffs: tuple[tuple[str, float], ...]) -> NDArray[np.float64]:
    # -1 so that no distance, not even a zero one from overlapping atoms, bonds other pairs.
    table = np.full(_NCODE * _NCODE, -1.0)
    for name, value in cutoffs:
        a, b = (_SYMBOL_CODE[s] for s in name.split("-"))
        table[a * _NCODE + b] = table[b * _NCODE + a] = value
    table.flags.writeable = False  # shared between calls through the cache
    return table


def _components(
    a: NDArray[np.intp], b: NDArray[np.intp]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Connected components of the multigraph with edges (a, b) over the atoms it touches.

    Returns (atoms per component, edges per component). A component with at least as many edges
    as atoms contains a cycle; with one or two atoms such a cycle can only run through periodic
    images (the neighbour list has no duplicate contacts), i.e. the cluster is infinite.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = len(nodes)
    ea, eb = inverse[: len(a)], inverse[len(a) :]
    graph = coo_matrix((np.ones(len(ea), dtype=np.int8), (ea, eb)), shape=(k, k)).tocsr()
    n_comp, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=n_comp)
    edges = np.bincount(labels[ea], minlength=n_comp)
    return sizes, edges


def _edge_sharing_flags(
    p_of: NDArray[np.intp],
    a_of: NDArray[np.intp],
    image_of: Callable[[NDArray[np.intp]], NDArray[np.int64]],
    n_atoms: int,
) -> NDArray[np.bool_]:
    """Flag P atoms that share two or more anions with the same (image of a) P atom.

    ``p_of``, ``a_of``: P and anion index of every P-anion contact whose anion is bridging;
    ``image_of(rows)``: the image offsets (rows, 3) of those contacts' anions seen from their P.
    Two contacts on one anion relate P_a to the image ``t_a - t_b`` of P_b; two P share an
    edge when one such relation comes from two different anions. Offsets matter only in cells
    smaller than about twice the P...P distance, where two anions can bridge P_a to two
    different images of P_b, so they are fetched only for pairs that share two anions by index.
    """
    flags = np.zeros(n_atoms, dtype=bool)
    if len(a_of) < 4:
        return flags
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
        return flags
    ca, cb = np.concatenate(first_l), np.concatenate(second_l)
    pa, pb = p_of[ca], p_of[cb]
    # Cheap pre-filter on indices alone: most frames have no P pair sharing two anions.
    pair_key = np.minimum(pa, pb) * n_atoms + np.maximum(pa, pb)
    ks = np.sort(pair_key)
    dup = ks[1:][ks[1:] == ks[:-1]]
    if not len(dup):
        return flags
    cand = np.flatnonzero(np.isin(pair_key, dup))
    ca, cb, pa, pb = ca[cand], cb[cand], pa[cand], pb[cand]
    r = image_of(ca) - image_of(cb)
    # Canonical orientation so that (P_a, P_b, r) and (P_b, P_a, -r) are one relation.
    r_neg = (r[:, 0] < 0) | ((r[:, 0] == 0) & ((r[:, 1] < 0) | ((r[:, 1] == 0) & (r[:, 2] < 0))))
    swap = (pa > pb) | ((pa == pb) & r_neg)
    pa, pb = np.where(swap, pb, pa), np.where(swap, pa, pb)
    r = np.where(swap[:, None], -r, r)
    span = int(np.abs(r).max()) if len(r) else 0
    base = 2 * span + 1
    if float(n_atoms) ** 2 * float(base) ** 3 < 2.0**62:
        # One int64 per relation: sorting it is ~10x faster than unique rows.
        rel = (pa * n_atoms + pb) * base**3 + ((r[:, 0] + span) * base + r[:, 1] + span) * base
        rel += r[:, 2] + span
        _, first, counts = np.unique(rel, return_index=True, return_counts=True)
    else:
        rows = np.column_stack([pa, pb, r])
        _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
    shared = first[counts >= 2]
    flags[pa[shared]] = True
    flags[pb[shared]] = True
    return flags


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
    if n_atoms and not codes.all():
        # Foreign atoms bond to nothing: leave them out of the neighbour search.
        keep_atoms = codes > 0
        codes, pos = codes[keep_atoms], pos[keep_atoms]
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
    is_pp = ptype == _T_P_P
    pp_a, pp_b = lo[is_pp], hi[is_pp]

    n_anion = np.bincount(p_of, minlength=n)
    n_p_of_anion = np.bincount(a_of, minlength=n)
    n_pp = np.bincount(pp_a, minlength=n) + np.bincount(pp_b, minlength=n)
    bridging = np.flatnonzero(n_p_of_anion[a_of] >= 2)
    n_bridging = np.bincount(p_of[bridging], minlength=n)

    p_idx = np.flatnonzero(codes == _P)
    na_p, npp_p = n_anion[p_idx], n_pp[p_idx]
    tetra = (na_p == 4) & (npp_p == 0)
    pn = np.bincount(n_bridging[p_idx][tetra], minlength=5)
    n_p1p = int(np.count_nonzero((na_p == 3) & (npp_p == 1)))
    n_p3c = int(np.count_nonzero((na_p == 3) & (npp_p == 0)))

    def anion_image(rows: NDArray[np.intp]) -> NDArray[np.int64]:
        # Image offset of the anion seen from its P for the given bridging contacts.
        contact = px[bridging[rows]]
        t = pairs.shifts[sel[contact]].astype(np.int64)
        t[flip[contact]] *= -1
        return t

    es = _edge_sharing_flags(p_of[bridging], a_of[bridging], anion_image, n)
    n_p2es = int(np.count_nonzero(es))
    n_ppchain = 0
    if len(pp_a):
        sizes, edges = _components(pp_a, pp_b)
        n_ppchain = int(sizes[(sizes >= 3) | (edges >= sizes)].sum())

    p_units = PUnits(
        P0=int(pn[0]),
        P1=int(pn[1]),
        P2=int(pn[2]),
        P3=int(pn[3]),
        P4=int(pn[4]),
        P1P=n_p1p,
        P3c=n_p3c,
        P_other=int(len(p_idx) - np.count_nonzero(tetra) - n_p1p - n_p3c),
        P2ES=n_p2es,
        PPchain=n_ppchain,
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
    if is_ss.any():
        sizes, edges = _components(lo[is_ss], hi[is_ss])
        chain_sizes = sizes[(sizes >= 2) | (edges >= 1)]
        if len(chain_sizes):
            lengths, counts = np.unique(chain_sizes, return_counts=True)
            in_chains = int(chain_sizes.sum())
            ss = SSChains(
                S_in_chains=in_chains,
                fraction=in_chains / len(s_idx),
                mean_length=in_chains / len(chain_sizes),
                chains={int(k): int(v) for k, v in zip(lengths, counts, strict=True)},
            )

    na_idx = np.flatnonzero(codes == _NA)
    na = NaCoordination()
    if len(na_idx):
        cn_s = np.bincount(lo[ptype == _T_NA_S], minlength=n)[na_idx]
        cn_o = np.bincount(lo[ptype == _T_NA_O], minlength=n)[na_idx]
        hist = np.bincount(cn_s + cn_o)
        n_s_contacts, n_o_contacts = int(cn_s.sum()), int(cn_o.sum())
        na = NaCoordination(
            n=len(na_idx),
            cn_mean=(n_s_contacts + n_o_contacts) / len(na_idx),
            cn_S_mean=n_s_contacts / len(na_idx),
            cn_O_mean=n_o_contacts / len(na_idx),
            histogram={int(k): int(hist[k]) for k in np.flatnonzero(hist)},
        )

    return FrameAnalysis(
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


def analyze_atoms(atoms: Atoms, cutoffs: Mapping[str, float] | None = None) -> FrameAnalysis:
    """`analyze_frame` on an ``ase.Atoms`` (ASE is only touched through the object's methods)."""
    return analyze_frame(
        atoms.get_atomic_numbers(),
        atoms.get_positions(),
        np.asarray(atoms.get_cell()),
        atoms.get_pbc(),
        cutoffs=cutoffs,
    )
