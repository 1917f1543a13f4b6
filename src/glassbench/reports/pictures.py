"""Pictures of real artefact units: one stored occurrence of each kind, drawn atom by atom.

The stored counts of the default analysis (``speciation``, analysis 1) choose the frames, so no
frame is read that does not hold the kind; at most :data:`MAX_FRAMES` frames are read, however
large the database. Each chosen frame is analysed again with
:func:`glassbench.analysis.locate_units` under the cutoffs recorded for it
(``coordination.cutoffs_json``), which says *which* atoms form the unit; the picture shows those
atoms and their bonded neighbours, unwrapped across periodic boundaries.

Importing this module loads pandas and numpy only; matplotlib is imported when a picture is drawn.
"""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.engine import Connection

from glassbench.analysis import UnitSites, locate_units
from glassbench.analysis.cutoffs import resolve_cutoffs
from glassbench.analysis.neighbours import half_pairs, normalise_geometry
from glassbench.chemistry import ATOMIC_NUMBERS
from glassbench.errors import BadInput
from glassbench.reports.keys import Key
from glassbench.schema.arrays import unpack_array
from glassbench.schema.models import RunStatus

ARTEFACT_KINDS = ("edge_sharing", "pp_chain", "p3c", "ss_chain")
# The stored count that says a frame holds the kind (speciation.unit).
KIND_UNIT: Mapping[str, str] = {
    "edge_sharing": "P2ES",
    "pp_chain": "PPchain",
    "p3c": "P3c",
    "ss_chain": "S_in_chains",
}
KIND_NAMES: Mapping[str, str] = {
    "edge_sharing": "edge-sharing P pair (P2ES)",
    "pp_chain": "P-P chain (PPchain)",
    "p3c": "three-coordinated P (P3c, the study's P3:)",
    "ss_chain": "S-S chain",
}
MAX_FRAMES = len(ARTEFACT_KINDS)  # one frame per kind at most; one frame may serve several
MAX_UNIT_ATOMS = 24  # atoms of one unit drawn (a long chain: the first ones along it)
MAX_EXAMPLE_ATOMS = 60  # unit and neighbours together

EXAMPLE_COLUMNS: tuple[str, ...] = tuple(
    str(c)
    for c in (
        "kind", Key.run_id, "frame_id", Key.mlip, Key.x, Key.quench_rate, Key.seed,
        "atom", "element", "role", "px", "py", "pz", "n_unit", "complete", "cutoffs",
    )
)  # fmt: skip
"""``n_unit``: atoms of the whole unit in the frame; ``complete``: False when a long unit or its
neighbours were cut to the bounds above; ``cutoffs``: the frame's pair cutoffs (JSON), which
the picture draws its bonds with. Every row of one example repeats them."""

# Same colours as the pictures of docs/speciation.md (docs/make_unit_figures.py).
COLOURS = {"P": "#8e44ad", "S": "#f1c40f", "O": "#e03131", "Na": "#1f6fd1"}
_OTHER_COLOUR = "#9e9e9e"
_RADII = {"P": 0.42, "S": 0.48, "O": 0.36, "Na": 0.52}  # drawing radii in Å (not physical)
_SAME_BOND = {"P": "#8e44ad", "S": "#b59a00"}  # P-P and S-S bonds, as the unit pictures
_BOND = "#555555"
_SYMBOL = {z: s for s, z in ATOMIC_NUMBERS.items()}
_CODE = {s: k for k, s in enumerate(ATOMIC_NUMBERS, start=1)}  # 0: any other element
# Bound parameters per IN list: well under SQLite's variable limit on every version.
_CHUNK = 900
_RUN_KEYS = (Key.run_id, Key.mlip, Key.x, Key.quench_rate, Key.seed, "status")


@dataclass(frozen=True)
class _StoredFrame:
    numbers: NDArray[np.int64]
    positions: NDArray[np.float64]
    cell: NDArray[np.float64]
    pbc: tuple[bool, bool, bool]
    cutoffs: dict[str, float]


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EXAMPLE_COLUMNS})


def _choose_frames(conn: Connection, run_ids: Sequence[int]) -> dict[str, tuple[int, int]]:
    """kind -> (frame id, run id) of the frame each kind's example comes from."""
    units = ", ".join(f"'{u}'" for u in KIND_UNIT.values())
    not_final = "CASE WHEN rf.frame_id IS NULL THEN 1 ELSE 0 END"
    # The window keeps the database's answer at one row per kind and chunk, however many
    # frames hold artefacts.
    stmt = sa.text(
        f"""
        SELECT unit, frame_id, run_id, not_final FROM (
          SELECT s.unit AS unit, s.frame_id AS frame_id, f.run_id AS run_id,
                 {not_final} AS not_final,
                 ROW_NUMBER() OVER (
                   PARTITION BY s.unit ORDER BY {not_final}, f.run_id, s.frame_id
                 ) AS rn
          FROM speciation s
          JOIN frame f ON f.id = s.frame_id
          LEFT JOIN run_final_frame rf ON rf.frame_id = s.frame_id
          WHERE s.analysis_id = 1 AND s.count > 0 AND s.unit IN ({units})
            AND f.stage <> 'strain' AND f.run_id IN :ids
        ) ranked WHERE rn = 1
        """
    ).bindparams(sa.bindparam("ids", expanding=True))
    best: dict[str, tuple[int, int, int]] = {}  # unit -> (not_final, run_id, frame_id)
    for start in range(0, len(run_ids), _CHUNK):
        chunk = [int(r) for r in run_ids[start : start + _CHUNK]]
        for unit, frame_id, run_id, nf in conn.execute(stmt, {"ids": chunk}):
            rank = (int(nf), int(run_id), int(frame_id))
            if unit not in best or rank < best[unit]:
                best[str(unit)] = rank
    return {kind: (best[u][2], best[u][1]) for kind, u in KIND_UNIT.items() if u in best}


def _read_frames(conn: Connection, frame_ids: Sequence[int]) -> dict[int, _StoredFrame]:
    """The arrays and the default analysis' cutoffs of ``frame_ids`` (one bounded SELECT)."""
    if len(frame_ids) > MAX_FRAMES:
        raise ValueError(f"{len(frame_ids)} frames asked for, at most {MAX_FRAMES} are read")
    stmt = sa.text(
        """
        SELECT f.id, f.numbers, f.positions, f.cell_json, f.pbc,
               COALESCE(co.cutoffs_json, a.cutoffs_json)
        FROM frame f
        LEFT JOIN coordination co ON co.frame_id = f.id AND co.analysis_id = 1
        LEFT JOIN analysis a ON a.id = 1
        WHERE f.id IN :ids
        """
    ).bindparams(sa.bindparam("ids", expanding=True))
    out: dict[int, _StoredFrame] = {}
    for fid, numbers, positions, cell_json, pbc, cutoffs_json in conn.execute(
        stmt, {"ids": [int(f) for f in frame_ids]}
    ):
        out[int(fid)] = _StoredFrame(
            numbers=unpack_array(bytes(numbers)).astype(np.int64),
            positions=unpack_array(bytes(positions)).astype(np.float64),
            cell=np.asarray(json.loads(cell_json), dtype=np.float64).reshape(3, 3),
            pbc=tuple(ch == "T" for ch in str(pbc)),  # type: ignore[arg-type]
            # Both rows are written by the same code; None only in a hand-edited database,
            # where the defaults are the honest guess.
            cutoffs=resolve_cutoffs(json.loads(cutoffs_json) if cutoffs_json else None),
        )
    return out


def _first_occurrence(kind: str, sites: UnitSites) -> tuple[int, ...] | None:
    """The unit's atoms of the occurrence with the lowest atom index, or None."""
    groups: Sequence[Sequence[int]]
    if kind == "p3c":
        groups = [(i,) for i in sites.p3c]
    elif kind == "edge_sharing":
        groups = sites.edge_pairs
    elif kind == "pp_chain":
        groups = sites.pp_chains
    else:
        groups = sites.ss_chains
    nonempty = [tuple(sorted(int(i) for i in g)) for g in groups if len(g)]
    return min(nonempty) if nonempty else None


@dataclass(frozen=True)
class _Bonds:
    """Contacts within the pair cutoffs touching given atoms: ``vec`` points from i to j."""

    i: NDArray[np.intp]
    j: NDArray[np.intp]
    vec: NDArray[np.float64]
    dist: NDArray[np.float64]
    wrapped: NDArray[np.float64]  # positions as the search saw them
    box: NDArray[np.float64]
    periodic: list[bool]


def _bonds_of(frame: _StoredFrame, atoms: Sequence[int]) -> _Bonds:
    pos, box, periodic = normalise_geometry(frame.positions, frame.cell, frame.pbc)
    symbols = [_SYMBOL.get(int(z), "") for z in frame.numbers]
    codes = np.array([_CODE.get(s, 0) for s in symbols], dtype=np.intp)
    table = np.full((len(_CODE) + 1, len(_CODE) + 1), -1.0)
    for name, value in frame.cutoffs.items():
        a, b = (_CODE[s] for s in name.split("-"))
        table[a, b] = table[b, a] = value
    # The analysis' own neighbour search (its bounds hold here too) at the longest cutoff.
    pairs = half_pairs(pos, box, periodic, float(table.max()))
    keep = pairs.distances <= table[codes[pairs.i], codes[pairs.j]]
    wanted = np.zeros(len(pos), dtype=bool)
    wanted[list(atoms)] = True
    keep &= (wanted[pairs.i] | wanted[pairs.j]) & (pairs.i != pairs.j)
    i, j = pairs.i[keep], pairs.j[keep]
    vec = pos[j] - pos[i] + pairs.shifts[keep].astype(np.float64) @ box
    return _Bonds(i, j, vec, pairs.distances[keep], pos, box, periodic)


def _along(unit: tuple[int, ...], bonds: _Bonds) -> list[int]:
    """The unit's atoms in breadth-first order along its own bonds from its lowest atom (a long
    chain cut to its first atoms stays one connected piece)."""
    members = set(unit)
    adjacent: dict[int, list[int]] = {a: [] for a in unit}
    for a, b in zip(bonds.i.tolist(), bonds.j.tolist(), strict=True):
        if a in members and b in members:
            adjacent[a].append(b)
            adjacent[b].append(a)
    order: list[int] = []
    seen: set[int] = set()
    for root in unit:  # sorted; a unit not connected by its own bonds (an edge pair) goes on
        if root in seen:
            continue
        seen.add(root)
        queue = deque([root])
        while queue:
            a = queue.popleft()
            order.append(a)
            for b in sorted(adjacent[a]):
                if b not in seen:
                    seen.add(b)
                    queue.append(b)
    return order


def _unwrapped(first: int, shown: list[int], bonds: _Bonds) -> dict[int, NDArray[np.float64]]:
    """Positions of ``shown`` reached along bonds from ``first``: every drawn bond has its real
    length whichever periodic boundaries it crosses."""
    members = set(shown)
    steps: dict[int, list[tuple[int, NDArray[np.float64]]]] = {a: [] for a in shown}
    for a, b, v in zip(bonds.i.tolist(), bonds.j.tolist(), bonds.vec, strict=True):
        if a in members and b in members:
            steps[a].append((b, v))
            steps[b].append((a, -v))
    at = {first: bonds.wrapped[first].copy()}
    queue = deque([first])
    while queue:
        a = queue.popleft()
        for b, v in steps[a]:
            if b not in at:
                at[b] = at[a] + v
                queue.append(b)
    # Not reached along bonds (cannot happen for the units located here): minimum image.
    inv = np.linalg.pinv(bonds.box)
    for a in shown:
        if a not in at:
            d = (bonds.wrapped[a] - bonds.wrapped[first]) @ inv
            for k in range(3):
                if bonds.periodic[k]:
                    d[k] -= np.round(d[k])
            at[a] = bonds.wrapped[first] + d @ bonds.box
    return at


def _example_atoms(
    frame: _StoredFrame, unit: tuple[int, ...]
) -> tuple[list[tuple[int, str, NDArray[np.float64]]], bool]:
    """(atom, role, position) of the drawn atoms, unit atoms first; and whether nothing was cut."""
    bonds = _bonds_of(frame, unit)
    kept = _along(unit, bonds)[:MAX_UNIT_ATOMS]
    rank = {a: k for k, a in enumerate(kept)}
    members = set(unit)
    # Neighbours by the first drawn unit atom they bond to, then by bond length: if the bound
    # cuts them, the ones around the start of the unit stay.
    nearest: dict[int, tuple[int, float]] = {}
    for a, b, d in zip(bonds.i.tolist(), bonds.j.tolist(), bonds.dist.tolist(), strict=True):
        for u, other in ((a, b), (b, a)):
            if u in rank and other not in members:
                key = (rank[u], float(d))
                if other not in nearest or key < nearest[other]:
                    nearest[other] = key
    neighbours = sorted(nearest, key=lambda o: (*nearest[o], o))
    room = MAX_EXAMPLE_ATOMS - len(kept)
    complete = len(kept) == len(unit) and len(neighbours) <= room
    neighbours = sorted(neighbours[:room])
    shown = [*kept, *neighbours]
    at = _unwrapped(kept[0], shown, bonds)
    return [(a, "unit" if a in rank else "neighbour", at[a]) for a in shown], complete


def _run_keys(runs: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _RUN_KEYS if c not in runs.columns]
    if missing:
        raise BadInput(f"runs: missing column(s) {', '.join(missing)}", field="runs")
    return runs.loc[runs["status"] == RunStatus.DONE.value, list(_RUN_KEYS)]


def load_examples(conn: Connection, runs: pd.DataFrame) -> pd.DataFrame:
    """One real occurrence of each artefact kind found in done runs, atom by atom.

    ``runs``: the runs DataFrame of :func:`glassbench.reports.queries.load_runs` (only runs with
    status ``done`` count; ``run_id``, ``mlip``, ``x``, ``quench_rate_k_ps``, ``seed`` are copied
    into the result). A kind's frame is the one whose default-analysis count of it
    (:data:`KIND_UNIT`) is positive, preferring a run's final frame, then the lowest run id and
    frame id; strain frames never count. In that frame the occurrence with the lowest atom index
    is drawn. Returns :data:`EXAMPLE_COLUMNS`, one row per atom, kinds in
    :data:`ARTEFACT_KINDS` order, unit atoms first; no rows when no kind is found.
    """
    done = _run_keys(runs)
    if done.empty:
        return _empty()
    chosen = _choose_frames(conn, [int(r) for r in done[Key.run_id]])
    if not chosen:
        return _empty()
    frames = _read_frames(conn, sorted({fid for fid, _ in chosen.values()}))
    sites: dict[int, UnitSites] = {}
    keyed = done.drop_duplicates(Key.run_id).set_index(Key.run_id)
    rows: list[dict[str, Any]] = []
    for kind in ARTEFACT_KINDS:
        if kind not in chosen:
            continue
        fid, run_id = chosen[kind]
        frame = frames.get(fid)
        if frame is None:  # deleted since it was chosen
            continue
        if fid not in sites:
            sites[fid] = locate_units(
                frame.numbers, frame.positions, frame.cell, frame.pbc, frame.cutoffs
            )
        unit = _first_occurrence(kind, sites[fid])
        if unit is None:
            # Counted under an older definition that the analysis no longer finds there
            # (frames stored before migration 0004, docs/reports.md): no example of the kind.
            continue
        run = keyed.loc[run_id]
        atoms, complete = _example_atoms(frame, unit)
        cutoffs = json.dumps(frame.cutoffs)
        for atom, role, p in atoms:
            rows.append(
                {
                    "kind": kind,
                    Key.run_id: run_id,
                    "frame_id": fid,
                    Key.mlip: run[Key.mlip],
                    Key.x: float(run[Key.x]),
                    Key.quench_rate: float(run[Key.quench_rate]),
                    Key.seed: int(run[Key.seed]),
                    "atom": atom,
                    "element": _SYMBOL.get(int(frame.numbers[atom]), f"Z{frame.numbers[atom]}"),
                    "role": role,
                    "px": float(p[0]),
                    "py": float(p[1]),
                    "pz": float(p[2]),
                    "n_unit": len(unit),
                    "complete": complete,
                    "cutoffs": cutoffs,
                }
            )
    if not rows:
        return _empty()
    return pd.DataFrame(rows, columns=list(EXAMPLE_COLUMNS))


# --------------------------------------------------------------------------- drawing


def _one_example(example: pd.DataFrame) -> pd.DataFrame:
    if example.empty:
        raise BadInput("example: no atoms", field="example")
    missing = [c for c in EXAMPLE_COLUMNS if c not in example.columns]
    if missing:
        raise BadInput(f"example: missing column(s) {', '.join(missing)}", field="example")
    if example["kind"].nunique() != 1 or example["frame_id"].nunique() != 1:
        raise BadInput("example: rows of more than one example", field="example")
    return example


def _picture_bonds(
    elements: Sequence[str], xyz: NDArray[np.float64], cutoffs: Mapping[str, float]
) -> list[tuple[int, int]]:
    """Pairs of drawn atoms within their cutoff (positions are unwrapped: real distances)."""
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    out = []
    for a in range(len(elements)):
        for b in range(a + 1, len(elements)):
            pair = {f"{elements[a]}-{elements[b]}", f"{elements[b]}-{elements[a]}"}
            cut = next((cutoffs[p] for p in pair if p in cutoffs), None)
            if cut is not None and d[a, b] <= cut:
                out.append((a, b))
    return out


def _principal(xyz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Coordinates in the frame of the principal axes (largest spread first), signs fixed so
    that the same example always looks the same."""
    c = np.asarray(xyz - xyz.mean(axis=0), dtype=np.float64)
    if len(c) < 2:
        return c
    _, _, vt = np.linalg.svd(c, full_matrices=True)
    axes = vt.copy()
    for k in range(2):
        if axes[k, np.argmax(np.abs(axes[k]))] < 0:
            axes[k] *= -1
    axes[2] = np.cross(axes[0], axes[1])  # right-handed: depth points at the viewer
    return np.asarray(c @ axes.T, dtype=np.float64)


def rotations(n: int, seed: int = 7) -> NDArray[np.float64]:
    """The identity and ``n`` rotations uniform over SO(3) (fixed seed: deterministic)."""
    q = np.random.default_rng(seed).normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    rot = np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)
    return np.concatenate([np.eye(3)[None], rot])


_VIEWS = 400


def _view(
    xyz: NDArray[np.float64],
    radii: NDArray[np.float64],
    bonds: Sequence[tuple[int, int]],
    unit: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """The orthographic view that spreads the atoms: among the principal-axes view (the plane
    of the two largest axes, tried first) and fixed turns of it, the one with the least overlap
    of balls on the picture (unit atoms count thrice), then the least foreshortened bonds.
    Symmetric units otherwise hide atoms: seen along its principal plane an S3 chain with Na
    around it shows its S atoms on top of each other."""
    c = _principal(xyz)
    if len(c) < 2:
        return c
    rs = np.einsum("kab,nb->kna", rotations(_VIEWS), c)  # (views, atoms, 3)
    ia, ib = np.triu_indices(len(c), 1)
    need = radii[ia] + radii[ib] + 0.25
    weight = np.where(unit[ia] | unit[ib], 3.0, 1.0)
    d2 = np.linalg.norm(rs[:, ia, :2] - rs[:, ib, :2], axis=-1)
    score = 10.0 * (weight * np.clip(need - d2, 0.0, None) ** 2).sum(axis=1)
    if bonds:
        ba = np.array([a for a, _ in bonds])
        bb = np.array([b for _, b in bonds])
        length = np.linalg.norm(c[ba] - c[bb], axis=1)
        proj = np.linalg.norm(rs[:, ba, :2] - rs[:, bb, :2], axis=-1)
        score += ((1.0 - proj / length) ** 2).sum(axis=1)
    return np.asarray(rs[int(np.argmin(score))], dtype=np.float64)


def _label_spots(
    xy: NDArray[np.float64], radii: NDArray[np.float64], which: Sequence[int], text: Sequence[str]
) -> list[NDArray[np.float64]]:
    """For each labelled atom, of eight spots around it the one farthest from the other balls
    and from the labels already placed."""
    placed: list[NDArray[np.float64]] = []
    for k, label in zip(which, text, strict=True):
        others = np.delete(np.arange(len(xy)), k)
        best, best_clear = xy[k], -np.inf
        for ang in np.radians(np.arange(45.0, 405.0, 45.0)):
            d = np.array([np.cos(ang), np.sin(ang)])
            spot = xy[k] + d * (radii[k] + 0.15 + 0.1 * len(label) * abs(d[0]))
            clear = float(
                (np.linalg.norm(xy[others] - spot, axis=1) - radii[others]).min(initial=9.0)
            )
            if placed:
                clear = min(
                    clear, float(np.linalg.norm(np.array(placed) - spot, axis=1).min()) - 0.4
                )
            if clear > best_clear:
                best, best_clear = spot, clear
        placed.append(best)
    return placed


def picture_png(example: pd.DataFrame, *, title: str) -> bytes:
    """A ball-and-stick PNG of one example of :func:`load_examples` (the rows of one kind).

    Orthographic view chosen to spread the atoms (:func:`_view`); atoms back to front,
    nearer ones a little larger; colours and P-P / S-S bond colours as the unit pictures of
    docs/speciation.md; Na-S and Na-O contacts dashed; unit atoms outlined and labelled with
    their index in the frame; a legend of elements. ``title`` is drawn literally.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Patch, Polygon

    from glassbench.reports.figures import plain

    ex = _one_example(example)
    elements = [str(e) for e in ex["element"]]
    unit = (ex["role"] == "unit").to_numpy()
    atoms = [int(a) for a in ex["atom"]]
    raw = ex[["px", "py", "pz"]].to_numpy(dtype=float)
    cutoffs = {str(k): float(v) for k, v in json.loads(str(ex["cutoffs"].iloc[0])).items()}
    bond_list = _picture_bonds(elements, raw, cutoffs)
    base_r = np.array([_RADII.get(s, 0.4) for s in elements])
    xyz = _view(raw, base_r, bond_list, unit)
    depth = xyz[:, 2]
    span = float(np.ptp(depth)) or 1.0
    near = (depth - depth.min()) / span  # 0 farthest, 1 nearest

    fig = Figure(figsize=(4.2, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.09, 0.96, 0.78))
    ax.set_aspect("equal")
    ax.axis("off")
    # Bonds and balls in one collection, drawn back to front in the order given (a bond just
    # behind the farther of its atoms, so both balls cover its ends): one artist instead of
    # ~160, each of which costs matplotlib milliseconds to add.
    shapes: list[tuple[float, Patch]] = []
    for a, b in bond_list:
        pair = {elements[a], elements[b]}
        ends = xyz[[a, b], :2]
        if "Na" in pair:  # coordination contacts, not covalent bonds
            stick = Polygon(ends, closed=False, fill=False, ec=COLOURS["Na"], lw=1.0, ls="--")
        else:
            colour = _SAME_BOND.get(elements[a], _BOND) if len(pair) == 1 else _BOND
            lw = 3.0 if colour != _BOND else 2.2
            stick = Polygon(ends, closed=False, fill=False, ec=colour, lw=lw, capstyle="round")
        shapes.append((min(depth[a], depth[b]) - 0.01, stick))
    radii = base_r * (0.85 + 0.3 * near)
    for k, s in enumerate(elements):
        ball = Circle(
            (xyz[k, 0], xyz[k, 1]),
            radii[k],
            facecolor=COLOURS.get(s, _OTHER_COLOUR),
            edgecolor="#000000" if unit[k] else "#444444",
            lw=2.0 if unit[k] else 0.6,
        )
        shapes.append((float(depth[k]), ball))
    shapes.sort(key=lambda item: item[0])
    ax.add_collection(PatchCollection([p for _, p in shapes], match_original=True))
    labelled = [int(k) for k in np.flatnonzero(unit)]
    text = [f"{elements[k]}{atoms[k]}" for k in labelled]
    for label, spot in zip(text, _label_spots(xyz[:, :2], radii, labelled, text), strict=True):
        ax.annotate(
            label,
            (float(spot[0]), float(spot[1])),
            fontsize=6.5,
            ha="center",
            va="center",
            zorder=100,
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
        )
    lo, hi = xyz[:, :2].min(axis=0) - 0.9, xyz[:, :2].max(axis=0) + 0.9
    half = float(max(hi - lo)) / 2
    mid = (lo + hi) / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    fig.text(0.5, 0.985, plain(title), ha="center", va="top", fontsize=8.5, wrap=True)
    present = [s for s in (*COLOURS, *sorted(set(elements) - set(COLOURS))) if s in elements]
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            markersize=7,
            markerfacecolor=COLOURS.get(s, _OTHER_COLOUR),
            markeredgecolor="#444444",
            label=plain(s),
        )
        for s in present
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            markersize=7,
            markerfacecolor="white",
            markeredgecolor="#000000",
            markeredgewidth=2.0,
            label="unit atom",
        )
    )
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        frameon=False,
        fontsize=7.5,
        handletextpad=0.2,
        columnspacing=0.9,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def example_caption(example: pd.DataFrame) -> str:
    """Where the example comes from and what it shows, in one sentence (plain text:
    the MLIP name is user input, escaped by whoever renders the caption)."""
    ex = _one_example(example)
    first = ex.iloc[0]
    kind = str(first["kind"])
    units = ex[ex["role"] == "unit"]
    neighbours = ex[ex["role"] == "neighbour"]
    where = (
        f"run {int(first[Key.run_id])} ({first[Key.mlip]}, x = {float(first[Key.x]):g}, "
        f"{float(first[Key.quench_rate]):g} K/ps, seed {int(first[Key.seed])}), "
        f"frame {int(first['frame_id'])}"
    )
    atoms = ", ".join(f"{e}{a}" for e, a in zip(units["element"], units["atom"], strict=True))
    n_unit = int(first["n_unit"])
    what = KIND_NAMES.get(kind, kind)
    if kind in ("pp_chain", "ss_chain"):
        what = f"{what} of {n_unit} {'P' if kind == 'pp_chain' else 'S'}"
    if kind == "edge_sharing":
        xyz = ex[["px", "py", "pz"]].to_numpy(dtype=float)
        cutoffs = {str(k): float(v) for k, v in json.loads(str(first["cutoffs"])).items()}
        bonded: dict[int, set[int]] = {}
        for a, b in _picture_bonds([str(e) for e in ex["element"]], xyz, cutoffs):
            bonded.setdefault(a, set()).add(b)
            bonded.setdefault(b, set()).add(a)
        p_rows = [k for k in range(len(ex)) if ex["role"].iloc[k] == "unit"]
        shared = set.intersection(*(bonded.get(k, set()) for k in p_rows)) if p_rows else set()
        what = f"{what} sharing {len(shared)} anions"
    counts = neighbours["element"].value_counts()
    around = ", ".join(f"{int(n)} {e}" for e, n in sorted(counts.items()))
    text = f"{where}: {what}, atom{'s' if len(units) > 1 else ''} {atoms}"
    text += f", with its {len(neighbours)} bonded neighbours ({around})" if len(neighbours) else ""
    if len(units) < n_unit:
        text += f"; only the first {len(units)} of its {n_unit} atoms are drawn"
    if not bool(first["complete"]) and len(units) == n_unit:
        text += "; neighbours beyond the first ones are left out"
    return text + "."
