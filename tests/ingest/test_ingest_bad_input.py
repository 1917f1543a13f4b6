"""Bad input to ``glassbench ingest lammps`` and ``ingest traj``: exit status 2, one line that
names the file and the line/frame, and the database exactly as before.

Files are derived from the real LAMMPS and ASE fixtures (truncated, NaN, foreign types ...).
A refused ingest writes nothing, so the tests of one module share one migrated database per
engine (``db_url`` is overridden with module scope); each test still compares the row counts
of every table before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import fresh_pg_schema, table_counts
from tests.ingest.conftest import ase_images, key_args, lammps_file


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('bad-input') / 'glassbench.db'}"
        return
    with fresh_pg_schema() as url:
        yield url


def _assert_refused(res: Any, before: dict[str, int], engine: Any, *expected: str) -> None:
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    for text in expected:
        assert text in msg, msg
    assert table_counts(engine) == before


# --- ingest lammps ----------------------------------------------------------------------


def _edit_lines(src: Path, dst: Path, edit: Callable[[list[str]], list[str]]) -> Path:
    dst.write_text("".join(edit(src.read_text().splitlines(keepends=True))))
    return dst


def _replace_in_line(lines: list[str], startswith: str, old: str, new: str) -> list[str]:
    i = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(startswith))
    lines[i] = lines[i].replace(old, new, 1)
    return lines


def _truncated_dump(tmp: Path) -> dict[str, Path]:
    text = lammps_file("dump.metal.lammpstrj").read_text()
    cut = text.index("ITEM: ATOMS", len(text) // 2) + 600  # inside a frame's atom lines
    (tmp / "d").write_text(text[:cut])
    return {"dump": tmp / "d"}


def _truncated_log(tmp: Path) -> dict[str, Path]:
    text = lammps_file("log.metal.lammps").read_text()
    cut = text.index("     400 ")  # inside the last thermo block
    (tmp / "l").write_text(text[:cut])
    return {"log": tmp / "l"}


def _nan_log(tmp: Path) -> dict[str, Path]:
    return {
        "log": _edit_lines(
            lammps_file("log.metal.lammps"),
            tmp / "l",
            lambda ls: _replace_in_line(ls, "160 ", "618.72754", "nan"),
        )
    }


def _inf_dump(tmp: Path) -> dict[str, Path]:
    def edit(ls: list[str]) -> list[str]:
        i = [k for k, ln in enumerate(ls) if ln.startswith("ITEM: ATOMS")][2] + 3
        parts = ls[i].split()
        parts[2] = "inf"
        ls[i] = " ".join(parts) + "\n"
        return ls

    return {"dump": _edit_lines(lammps_file("dump.metal.lammpstrj"), tmp / "d", edit)}


def _unknown_type(tmp: Path) -> dict[str, Path]:
    def edit(ls: list[str]) -> list[str]:
        i = [k for k, ln in enumerate(ls) if ln.startswith("ITEM: ATOMS")][1] + 5
        parts = ls[i].split()
        parts[1] = "5"
        ls[i] = " ".join(parts) + "\n"
        return ls

    return {"dump": _edit_lines(lammps_file("dump.metal.lammpstrj"), tmp / "d", edit)}


def _unknown_element(tmp: Path) -> dict[str, Path]:
    def edit(ls: list[str]) -> list[str]:
        i = next(k for k, ln in enumerate(ls) if ln.startswith("ITEM: ATOMS")) + 1
        ls[i] = "Qq" + ls[i][2:]
        return ls

    return {
        "log": lammps_file("log.triclinic.lammps"),
        "dump": _edit_lines(lammps_file("dump.triclinic.lammpstrj"), tmp / "d", edit),
    }


def _atom_count(tmp: Path) -> dict[str, Path]:
    def edit(ls: list[str]) -> list[str]:
        i = [k for k, ln in enumerate(ls) if ln.startswith("ITEM: NUMBER OF ATOMS")][4]
        ls[i + 1] = "51\n"
        j = [k for k, ln in enumerate(ls) if ln.startswith("ITEM: ATOMS")][4]
        del ls[j + 1]
        return ls

    return {"dump": _edit_lines(lammps_file("dump.metal.lammpstrj"), tmp / "d", edit)}


def _empty_log(tmp: Path) -> dict[str, Path]:
    (tmp / "l").write_text("")
    return {"log": tmp / "l"}


def _binary_dump(tmp: Path) -> dict[str, Path]:
    (tmp / "d").write_bytes(np.random.default_rng(1).bytes(3000))
    return {"dump": tmp / "d"}


def _no_thermo(tmp: Path) -> dict[str, Path]:
    text = lammps_file("log.metal.lammps").read_text()
    (tmp / "l").write_text(text[: text.index("minimize")])
    return {"log": tmp / "l"}


def _error_in_log(tmp: Path) -> dict[str, Path]:
    text = lammps_file("log.metal.lammps").read_text()
    cut = text.index("unfix")
    (tmp / "l").write_text(text[:cut] + "ERROR: Lost atoms: original 52 current 51\n")
    return {"log": tmp / "l"}


def _lj_units(tmp: Path) -> dict[str, Path]:
    return {
        "log": _edit_lines(
            lammps_file("log.metal.lammps"),
            tmp / "l",
            lambda ls: _replace_in_line(ls, "units", "metal", "lj"),
        )
    }


def _missing_dump(tmp: Path) -> dict[str, Path]:
    return {"dump": tmp / "nope.lammpstrj"}


BAD_FILES: dict[str, tuple[Callable[[Path], dict[str, Path]], str, str]] = {
    # case: (make files, which file the message names, text the message contains)
    "truncated-dump": (_truncated_dump, "dump", "truncated"),
    "truncated-log": (_truncated_log, "log", "truncated"),
    "nan-log": (_nan_log, "log", "line 117"),
    "inf-dump": (_inf_dump, "dump", "frame 2, line 134"),
    "unknown-type": (_unknown_type, "dump", "atom type 5"),
    "unknown-element": (_unknown_element, "dump", "'Qq'"),
    "atom-count": (_atom_count, "dump", "frame 4"),
    "empty-log": (_empty_log, "log", "empty"),
    "binary-dump": (_binary_dump, "dump", "binary"),
    "no-thermo": (_no_thermo, "log", "no thermo output"),
    "error-in-log": (_error_in_log, "log", "Lost atoms"),
    "lj-units": (_lj_units, "log", "'lj'"),
    "missing-dump": (_missing_dump, "dump", "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_lammps_bad_file(gb: Any, engine: Any, mlip: str, tmp_path: Path, case: str) -> None:
    make, names, expected = BAD_FILES[case]
    files = {"log": lammps_file("log.metal.lammps"), "dump": lammps_file("dump.metal.lammpstrj")}
    files.update(make(tmp_path))
    x = 0.5 if "triclinic" in str(files["log"]) else 0.0
    before = table_counts(engine)
    res = gb(
        "ingest", "lammps", "--log", str(files["log"]), "--dump", str(files["dump"]), *key_args(x=x)
    )
    _assert_refused(res, before, engine, str(files[names]), expected)


BAD_OPTIONS = {
    "wrong-x": (["--x", "1"], "dump.metal.lammpstrj:frame 0"),
    "unknown-mlip": (["--mlip", "nope"], "--mlip: no MLIP named 'nope'"),
    "negative-quench-rate": (["--quench-rate", "-2"], "--quench-rate"),
    "bad-type-map": (["--type-map", "Na,P,Zz,O"], "--type-map"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_lammps_bad_option(gb: Any, engine: Any, mlip: str, case: str) -> None:
    override, expected = BAD_OPTIONS[case]
    args = [*key_args(x=0), "--type-map", "Na,P,S,O"]
    for flag, value in zip(override[::2], override[1::2], strict=True):
        args[args.index(flag) + 1] = value
    before = table_counts(engine)
    res = gb(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file("log.metal.lammps")),
        "--dump",
        str(lammps_file("dump.metal.lammpstrj")),
        *args,
    )
    _assert_refused(res, before, engine, expected)


# --- ingest traj -----------------------------------------------------------------------


def _xyz_nan_position(path: Path, tmp: Path) -> Path:
    lines = path.read_text().splitlines(keepends=True)
    n = int(lines[0])
    i = 2 * (n + 2) + 5  # an atom line of frame 2
    parts = lines[i].split()
    parts[1] = "nan"
    lines[i] = " ".join(parts) + "\n"
    out = tmp / "nan.extxyz"
    out.write_text("".join(lines))
    return out


def _xyz_unknown_element(path: Path, tmp: Path) -> Path:
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = "Xx" + lines[3][2:]
    out = tmp / "xx.extxyz"
    out.write_text("".join(lines))
    return out


def _xyz_other_atom_count(path: Path, tmp: Path) -> Path:
    import ase.io

    images = ase_images(drop_atoms={3: 2})
    out = tmp / "count.extxyz"
    ase.io.write(out, images, format="extxyz")
    return out


def _xyz_truncated(path: Path, tmp: Path) -> Path:
    text = path.read_text()
    out = tmp / "trunc.extxyz"
    out.write_text(text[: len(text) // 2])
    return out


def _xyz_empty(path: Path, tmp: Path) -> Path:
    out = tmp / "empty.extxyz"
    out.write_bytes(b"")
    return out


def _xyz_binary(path: Path, tmp: Path) -> Path:
    out = tmp / "binary.extxyz"
    out.write_bytes(bytes(range(256)) * 8)
    return out


def _xyz_binary_traj(path: Path, tmp: Path) -> Path:
    out = tmp / "garbage.traj"
    out.write_bytes(np.random.default_rng(0).bytes(4096))
    return out


def _xyz_missing(path: Path, tmp: Path) -> Path:
    return tmp / "does-not-exist.extxyz"


BAD_TRAJ_FILES = {
    "nan-position": (_xyz_nan_position, "frame 2"),
    "unknown-element": (_xyz_unknown_element, "frame 0"),
    "other-atom-count": (_xyz_other_atom_count, "frame 3"),
    "truncated": (_xyz_truncated, "truncated"),
    "empty": (_xyz_empty, "empty"),
    "binary": (_xyz_binary, "binary"),
    "binary-traj": (_xyz_binary_traj, "trajectory"),
    "missing": (_xyz_missing, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAJ_FILES))
def test_ingest_traj_bad_file(
    gb: Any, engine: Any, mlip: str, ase_files: dict[str, Path], tmp_path: Path, case: str
) -> None:
    make, expected = BAD_TRAJ_FILES[case]
    path = make(ase_files["extxyz"], tmp_path)
    before = table_counts(engine)
    res = gb("ingest", "traj", str(path), *key_args())
    _assert_refused(res, before, engine, str(path), expected)


BAD_TRAJ_OPTIONS = {
    "wrong-x": (["--x", "1"], "do not match"),
    "unknown-mlip": (["--mlip", "nope"], "--mlip"),
    "negative-quench-rate": (["--quench-rate", "-1"], "--quench-rate"),
    "x-out-of-range": (["--x", "9"], "--x"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAJ_OPTIONS))
def test_ingest_traj_bad_option(
    gb: Any, engine: Any, mlip: str, ase_files: dict[str, Path], case: str
) -> None:
    override, expected = BAD_TRAJ_OPTIONS[case]
    args = key_args()
    for flag, value in zip(override[::2], override[1::2], strict=True):
        args[args.index(flag) + 1] = value
    before = table_counts(engine)
    res = gb("ingest", "traj", str(ase_files["traj"]), *args)
    _assert_refused(res, before, engine, expected)
