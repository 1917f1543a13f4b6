"""Large-ish LAMMPS log + dump derived from the real fixtures (for kill -9 and load tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.ingest.conftest import lammps_file

STRIDE = 10  # steps between thermo rows
DUMP_EVERY = 50  # steps between dump frames


def make_big_lammps(
    folder: Path, *, n_rows: int, n_frames: int, seed: int = 0
) -> tuple[Path, Path]:
    """A log whose second block has ``n_rows`` thermo rows and a dump with ``n_frames`` frames.

    The log keeps the real file's preamble and minimization block (LAMMPS 29 Sep 2021, units
    metal, 52 atoms of Na4P2S7) and continues with a long `run`; the dump repeats the real
    first frame's atoms with small random displacements, at steps inside the log's range.
    """
    rng = np.random.default_rng(seed)
    real = lammps_file("log.metal.lammps").read_text().splitlines(keepends=True)
    head_end = next(i for i, ln in enumerate(real) if ln.startswith("Step Time Temp"))
    first_step = 73
    steps = first_step + STRIDE * np.arange(n_rows)
    steps[1:] -= first_step % STRIDE  # 73, 80, 90, ... as LAMMPS prints them
    time = (steps - first_step) * 0.002
    temp = 600 + rng.normal(0, 40, n_rows)
    ke = temp * 3.9553604 / 600
    pe = rng.normal(0.2, 0.3, n_rows)
    press = rng.normal(40000, 3000, n_rows)
    log = folder / "log.big.lammps"
    with open(log, "w") as fh:
        fh.writelines(real[: head_end + 1])
        for s, t, T, p, e, k in zip(steps, time, temp, press, pe, ke, strict=True):
            fh.write(
                f"{s:8d} {t:12.6g} {T:12.8g} {p:12.8g} {e:12.8g} {k:12.8g} {e + k:12.8g}"
                f"      857.375    2.9309278 \n"
            )
        fh.write(
            f"Loop time of 1.5 on 1 procs for {int(steps[-1]) - first_step} steps with 52 atoms\n\n"
        )
    dump_text = lammps_file("dump.metal.lammpstrj").read_text().splitlines()
    atoms_at = dump_text.index("ITEM: ATOMS id type x y z")
    atom_lines = [ln.split() for ln in dump_text[atoms_at + 1 : atoms_at + 53]]
    ids = [a[0] for a in atom_lines]
    types = [a[1] for a in atom_lines]
    xyz = np.array([[float(v) for v in a[2:]] for a in atom_lines])
    dump = folder / "dump.big.lammpstrj"
    frame_steps = [s for s in range(100, int(steps[-1]) + 1, DUMP_EVERY)][:n_frames]
    with open(dump, "w") as fh:
        for s in frame_steps:
            pos = np.mod(xyz + rng.normal(0, 0.05, xyz.shape), 9.5)
            fh.write(
                f"ITEM: TIMESTEP\n{s}\nITEM: NUMBER OF ATOMS\n52\nITEM: BOX BOUNDS pp pp pp\n"
                + "0.0000000000000000e+00 9.5000000000000000e+00\n" * 3
                + "ITEM: ATOMS id type x y z\n"
            )
            fh.write(
                "".join(
                    f"{i} {t} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n"
                    for i, t, p in zip(ids, types, pos, strict=True)
                )
            )
    return log, dump
