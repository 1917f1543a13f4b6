"""Hostile input: hypothesis mutates the real fixture files (truncation, byte flips, huge or
non-finite numbers, wrong column counts, dropped/duplicated lines, inserted bytes) and feeds
them to the real CLI commands in-process on SQLite: ``ingest lammps`` (log, and dump with its
log), ``ingest traj`` (extxyz) and ``ingest experiment`` (CSV).

Every case must end in exit 2 with a one-line message and the row counts of every table
unchanged, or in a correct ingest (exit 0, data that passes the integrity checks of
``glassbench db check``); an exception (traceback), another exit status, a warning printed
next to the message, or a hang fails the test. Hangs: hypothesis' per-example deadline, a
SIGALRM watchdog for a Python-level hang, and pytest-timeout's thread method for one inside C
code (it dumps the stacks and ends the run). The budget is fixed and derandomized, so every
run tries the same cases.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Cli, table_counts
from tests.ingest.conftest import ase_images, lammps_file
from tests.reliability.conftest import FIGURES, assert_db_check

EXAMPLES = {"log": 300, "dump": 250, "extxyz": 250, "csv": 300}
HANG_S = 60  # watchdog: far above the deadline, catches what the deadline cannot (a true hang)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600, method="thread")]
FUZZ = settings(
    max_examples=1,  # replaced per target below
    derandomize=True,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)

HUGE = [
    b"1e308", b"-1e308", b"1e999", b"-1e999", b"9" * 40, b"-" + b"9" * 40, b"nan", b"inf",
    b"-inf", b"2147483648", b"9223372036854775808", b"-9223372036854775809", b"1e-320", b"0",
    b"-0", b"0x1p3", b"1_000", b"",
]  # fmt: skip
_NUMBER = re.compile(rb"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
GOOD_CSV = (
    b"x,property,value,uncertainty,source\n"
    b"0,density_g_cm3,2.01,0.01,SYNTHETIC test source A\n"
    b"0,p1,0.7,0.05,SYNTHETIC test source A\n"
    b'1.5,young_modulus_gpa,20.5,,"SYNTHETIC, quoted source B"\n'
    b"3.5,bo,0.12,0.02,SYNTHETIC test source A\n"
)
GOOD_CRYSTAL_CSV = (
    b"crystal,property,value,uncertainty,source,family\n"
    b"c-Na3PS4,volume_per_formula_unit_a3,171.2,,SYNTHETIC crystal row,Na4P2S7-xOx\n"
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes, sep: bytes | None = None) -> bytes:
    """1-3 mutations of ``original``; ``sep`` splits fields for column-count changes."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "number", "columns", "line", "insert"]))
        n = len(data)
        if op == "truncate" and n:
            del data[draw(st.integers(0, n - 1)) :]
        elif op == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "number":
            spans = [m.span() for m in _NUMBER.finditer(bytes(data))]
            if spans:
                a, b = spans[draw(st.integers(0, len(spans) - 1))]
                data[a:b] = draw(st.sampled_from(HUGE))
        elif op == "columns":
            lines = bytes(data).split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            fields = lines[k].split(sep) if sep else lines[k].split()
            if fields:
                j = draw(st.integers(0, len(fields) - 1))
                if draw(st.booleans()):
                    del fields[j]
                else:
                    fields.insert(j, fields[j])
                lines[k] = (sep or b" ").join(fields)
            data = bytearray(b"\n".join(lines))
        elif op == "line":
            lines = bytes(data).split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            how = draw(st.sampled_from(["drop", "dup", "swap"]))
            if how == "drop":
                del lines[k]
            elif how == "dup":
                lines.insert(k, lines[k])
            elif k + 1 < len(lines):
                lines[k], lines[k + 1] = lines[k + 1], lines[k]
            data = bytearray(b"\n".join(lines))
        else:
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


class _Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise _Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class Harness:
    """One migrated SQLite database for a whole target; each case gets a fresh run key."""

    def __init__(self, folder: Path) -> None:
        self.url = f"sqlite:///{folder / 'fuzz.db'}"
        self.gb = Cli(self.url)
        self.gb.ok("db", "upgrade")
        self.gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
        from glassbench.service.db import make_engine

        self.engine = make_engine(self.url)
        self.folder = folder
        self.outcomes: Counter[str] = Counter()
        self.seed = 0
        self.stored = 0

    def case(self, name: str, content: bytes, args: Callable[[Path, int], list[str]]) -> None:
        path = self.folder / name
        path.write_bytes(content)
        self.seed += 1
        before = table_counts(self.engine)
        with watchdog(HANG_S):
            res = self.gb(*args(path, self.seed))
        text = res.output.strip()
        assert res.exit_code in (0, 2), f"exit {res.exit_code}: {text}"
        assert "Traceback" not in text, text
        if res.exit_code == 2:
            assert len(text.splitlines()) == 1, text
            assert table_counts(self.engine) == before, f"partial write on exit 2: {text}"
            self.outcomes["refused (exit 2)"] += 1
        else:
            # accepted data must be consistent (the checks behind `glassbench db check`)
            from glassbench.service.integrity import check_database

            report = check_database(self.engine)
            self._forget_runs()  # each case starts from the same state, also when it failed
            assert report.ok, f"accepted but inconsistent: {report.problems} ({text})"
            self.outcomes["ingested (exit 0)"] += 1
            self.stored += 1

    def _forget_runs(self) -> None:
        import sqlalchemy as sa

        from glassbench.schema import Run
        from glassbench.service import unit_of_work
        from glassbench.service.repos import clear_run_data

        with unit_of_work(self.engine) as s:
            for (rid,) in s.execute(sa.select(Run.id)).all():
                clear_run_data(s, rid)
            s.execute(sa.delete(Run))

    def close(self, target: str) -> None:
        assert_db_check(self.url)
        self.engine.dispose()
        total = sum(self.outcomes.values())
        detail = ", ".join(f"{v} {k}" for k, v in sorted(self.outcomes.items()))
        FIGURES.add(
            f"fuzz {target}: {total} cases ({detail}); 0 tracebacks, 0 hangs, 0 partial writes, "
            "every accepted case passed the integrity checks"
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h


def _key(x: str, seed: int) -> list[str]:
    return ["--mlip", "MP0", "--x", x, "--quench-rate", "1", "--seed", str(seed)]


LOGS = {
    name: lammps_file(f"log.{name}.lammps").read_bytes() for name in ("metal", "real", "triclinic")
}
DUMPS = {
    name: lammps_file(f"dump.{name}.lammpstrj").read_bytes()
    for name in ("metal", "real", "triclinic")
}
X_OF = {"metal": "0", "real": "1", "triclinic": "0.5"}


def test_fuzz_lammps_log(harness: Harness) -> None:
    @settings(FUZZ, max_examples=EXAMPLES["log"])
    @given(data=st.data(), which=st.sampled_from(sorted(LOGS)))
    def run(data: st.DataObject, which: str) -> None:
        content = data.draw(mutated(LOGS[which]))
        harness.case(
            "log.lammps",
            content,
            lambda p, seed: ["ingest", "lammps", "--log", str(p), *_key(X_OF[which], seed)],
        )

    run()
    harness.close("LAMMPS log")


def test_fuzz_lammps_dump(harness: Harness, tmp_path: Path) -> None:
    logs = {}
    for name, text in LOGS.items():
        logs[name] = tmp_path / f"log.{name}"
        logs[name].write_bytes(text)

    @settings(FUZZ, max_examples=EXAMPLES["dump"])
    @given(data=st.data(), which=st.sampled_from(sorted(DUMPS)))
    def run(data: st.DataObject, which: str) -> None:
        content = data.draw(mutated(DUMPS[which]))
        harness.case(
            "dump.lammpstrj",
            content,
            lambda p, seed: [
                "ingest",
                "lammps",
                "--log",
                str(logs[which]),
                "--dump",
                str(p),
                *_key(X_OF[which], seed),
            ],
        )

    run()
    harness.close("LAMMPS dump")


def test_fuzz_extxyz(harness: Harness, tmp_path: Path) -> None:
    import ase.io

    src = tmp_path / "real.extxyz"
    ase.io.write(src, ase_images()[:4], format="extxyz")
    original = src.read_bytes()

    @settings(FUZZ, max_examples=EXAMPLES["extxyz"])
    @given(content=mutated(original))
    def run(content: bytes) -> None:
        harness.case(
            "case.extxyz", content, lambda p, seed: ["ingest", "traj", str(p), *_key("0", seed)]
        )

    run()
    harness.close("extxyz")


def test_fuzz_experiment_csv(harness: Harness) -> None:
    @settings(FUZZ, max_examples=EXAMPLES["csv"])
    @given(
        content=st.sampled_from([GOOD_CSV, GOOD_CRYSTAL_CSV]).flatmap(lambda c: mutated(c, b","))
    )
    def run(content: bytes) -> None:
        harness.case("exp.csv", content, lambda p, seed: ["ingest", "experiment", str(p)])

    run()
    harness.close("experiment CSV")
