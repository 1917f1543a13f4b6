"""``glassbench analyze``: speciation of a structure file, one frame or all of them.

The reading and the analysis are ``glassbench.analysis.files.StructureFile``; this module maps
the options onto it and formats the results (JSON, JSON Lines or tables).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from glassbench.errors import BadInput

if TYPE_CHECKING:
    from glassbench.analysis import FrameAnalysis
    from glassbench.analysis.files import FileAnalysis, StructureFile


def _cutoff_line(cutoffs: dict[str, float]) -> str:
    return "cutoffs (Å): " + "  ".join(f"{k} {v}" for k, v in cutoffs.items())


def _type_map_line(type_map: tuple[str, ...]) -> str:
    return "LAMMPS types: " + "  ".join(f"{k}={el}" for k, el in enumerate(type_map, 1))


class _TypeMapNote:
    """Says once, on stderr, that a dump's type ids were named by the default type map."""

    def __init__(self, structures: StructureFile) -> None:
        self.structures = structures
        self.done = False

    def __call__(self, result: FileAnalysis) -> None:
        if self.done or result.type_map is None or not self.structures.default_type_map:
            return
        self.done = True
        click.echo(
            f"note: {self.structures.source}: LAMMPS type ids read with the default type map "
            f"({_type_map_line(result.type_map)[len('LAMMPS types: ') :]}); "
            "name the elements with --type-map if they differ",
            err=True,
        )


def _json(result: FileAnalysis) -> dict[str, object]:
    out: dict[str, object] = result.analysis.to_dict()
    if result.type_map is not None:
        out["type_map"] = ",".join(result.type_map)
    if result.suggested_cutoffs is not None:
        out["suggested_cutoffs"] = result.suggested_cutoffs
    return out


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _opt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _histogram(h: dict[int, int]) -> str:
    return "  ".join(f"{k}:{v}" for k, v in sorted(h.items())) or "-"


def format_table(
    res: FrameAnalysis,
    suggested: dict[str, float] | None = None,
    type_map: tuple[str, ...] | None = None,
) -> str:
    """Human-readable table of the numbers in ``res.to_dict()`` (and the LAMMPS type map)."""
    from glassbench.analysis.speciation import ANION_KEYS, P_KEYS

    lines = [f"atoms: {res.n_atoms}  (P {res.n_P}, S {res.n_S}, O {res.n_O}, Na {res.na.n})"]
    if type_map is not None:
        lines.append(_type_map_line(type_map))
    lines.append(_cutoff_line(res.cutoffs))
    if suggested is not None:
        text = "  ".join(f"{k} {v:g}" for k, v in suggested.items()) or "none found"
        lines.append(f"suggested cutoffs (Å, first g(r) minimum): {text}")
    p = res.p.to_dict()
    lines += ["", f"{'P unit':<15}{'count':>7}{'of P':>9}"]
    for k in P_KEYS:
        label = f"{k} (flag)" if k in ("P2ES", "PPchain") else k
        frac = p[k] / res.n_P if res.n_P else 0.0
        lines.append(f"{label:<15}{p[k]:>7}{_fmt(frac):>9}")
    a = res.anions.to_dict()
    n_anions = res.n_S + res.n_O
    lines += ["", f"{'anion':<15}{'count':>7}{'of S+O':>9}"]
    for k in ANION_KEYS:
        frac = a[k] / n_anions if n_anions else 0.0
        lines.append(f"{k:<15}{a[k]:>7}{_fmt(frac):>9}")
    ss, na = res.ss, res.na
    lines += [
        "",
        f"S-S chains: {ss.S_in_chains} S in chains (fraction {_fmt(ss.fraction)}), "
        f"mean length {ss.mean_length:.2f}, longer than two {_opt(ss.long_share)}; "
        f"lengths {_histogram(ss.chains)}",
        f"Na ({na.n}): CN {na.cn_mean:.2f} (S {na.cn_S_mean:.2f}, O {na.cn_O_mean:.2f}); "
        f"CN histogram {_histogram(na.histogram)}",
        f"Na: S share {_opt(na.s_share)}; first g(r) peak (Å) Na-S {_opt(na.peak_S, 2)}  "
        f"Na-O {_opt(na.peak_O, 2)}",
    ]
    return "\n".join(lines)


_ROW_KEYS = (
    "P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other", "P2ES", "PPchain",
    "BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O",
)  # fmt: skip


def _row_header() -> str:
    cols = ["frame", "atoms", *_ROW_KEYS, "S_chain", "Na_CN", "Na_S"]
    return " ".join(f"{c:>7}" for c in cols)


def _row(k: int, res: FrameAnalysis) -> str:
    counts = res.unit_counts()
    cells = [str(k), str(res.n_atoms), *(str(counts[c]) for c in _ROW_KEYS)]
    cells += [str(res.ss.S_in_chains), f"{res.na.cn_mean:.2f}", _opt(res.na.s_share, 2)]
    return " ".join(f"{c:>7}" for c in cells)


@click.command("analyze")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="JSON (JSON Lines with --all-frames) or a readable table.",
)
@click.option("--frame", type=int, default=None, help="Frame index (default: last; -1 = last).")
@click.option("--all-frames", is_flag=True, help="Analyse every frame, streamed, one line each.")
@click.option(
    "--cutoff",
    "cutoff_specs",
    multiple=True,
    metavar="PAIR=Å",
    help="Override a bond cutoff, e.g. P-S=2.5 (repeatable). "
    "Defaults: P-S 2.6, P-O 2.0, P-P 2.5, S-S 2.5, Na-S 3.6, Na-O 3.1.",
)
@click.option(
    "--type-map",
    default=None,
    metavar="EL,EL,...",
    help="LAMMPS dumps: elements of type ids 1..n [default: Na,P,S,O, as for "
    "`ingest lammps`]; dumps with an element column need none.",
)
@click.option(
    "--input-format",
    default=None,
    metavar="NAME",
    help="ASE format name, when it cannot be told from the file (e.g. lammps-dump-text).",
)
@click.option(
    "--suggest-cutoffs",
    is_flag=True,
    help="Also report cutoffs at the first minimum of each pair's g(r).",
)
def cli(
    file: Path,
    fmt: str,
    frame: int | None,
    all_frames: bool,
    cutoff_specs: tuple[str, ...],
    type_map: str | None,
    input_format: str | None,
    suggest_cutoffs: bool,
) -> None:
    """Structural analysis of FILE: P units, anions, S-S chains, Na coordination."""
    from glassbench.analysis.files import StructureFile

    if all_frames and frame is not None:
        raise BadInput("use either --frame or --all-frames", source="--frame")
    structures = StructureFile(
        file,
        input_format=input_format,
        type_map=type_map,
        cutoffs=cutoff_specs,
        suggest_cutoffs=suggest_cutoffs,
    )
    note = _TypeMapNote(structures)

    if not all_frames:
        one = structures.analyze(-1 if frame is None else frame)
        note(one)
        if fmt == "json":
            click.echo(json.dumps(_json(one)))
        else:
            click.echo(format_table(one.analysis, one.suggested_cutoffs, one.type_map))
        return

    if fmt == "table":
        click.echo(_cutoff_line(structures.cutoffs))
    header = False
    for r in structures.analyze_all():
        note(r)
        suggested = r.suggested_cutoffs
        if fmt == "json":
            click.echo(json.dumps({"frame": r.frame, **_json(r)}))
        else:
            if not header:  # with the first frame: whether a type map named its types
                header = True
                if r.type_map is not None:
                    click.echo(_type_map_line(r.type_map))
                click.echo(_row_header())
            row = _row(r.frame, r.analysis)
            if suggested is not None:
                row += "  suggested: " + " ".join(f"{p}={v:g}" for p, v in suggested.items())
            click.echo(row)
        # Streamed output: a consumer sees each frame as soon as it is done.
        sys.stdout.flush()
