"""The MLIP registry (issue 17): results stay traceable to their model, names print on one
line, model paths are what the architecture loads, interpreters are checked, and a delegated
run that dies says why. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Cli, table_counts
from tests.hardening.conftest import gb_limited
from tests.ingest.conftest import key_args, lammps_file

LOG = str(lammps_file("log.metal.lammps"))


def _mlips(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text("SELECT * FROM mlip ORDER BY id"))]


def _refused(gb: Cli, engine: Any, *args: str) -> str:
    """``glassbench ARGS``: exit 2, one line, no row of any table written or changed."""
    before, mlips = table_counts(engine), _mlips(engine)
    res = gb(*args)
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert table_counts(engine) == before
    assert _mlips(engine) == mlips
    return res.output.strip()


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _with_a_run(gb: Cli, name: str) -> None:
    gb.ok("ingest", "lammps", "--log", LOG, *key_args(name))


# --- unchanged / updated ----------------------------------------------------------------


def test_same_registration_is_unchanged(gb: Cli, engine: Any, tmp_path: Path) -> None:
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    args = ("mlip", "add", "M", "--arch", "mace", "--model", str(model), "--functional", "PBE")
    assert "registered MLIP 'M' (id" in gb.ok(*args).output
    before, mlips = table_counts(engine), _mlips(engine)
    again = gb.ok(*args).output
    assert again.startswith("MLIP 'M' unchanged (id") and "registered" not in again
    assert table_counts(engine) == before and _mlips(engine) == mlips
    # Descriptive fields change with --replace, and the line says which.
    out = gb.ok(*args, "--training-data", "MPtrj", "--replace").output
    assert out.startswith("updated MLIP 'M'") and out.strip().endswith("changed training_data")


# --- the model of an MLIP with results --------------------------------------------------


def test_model_of_mlip_with_runs_cannot_change(gb: Cli, engine: Any, tmp_path: Path) -> None:
    model = tmp_path / "m.model"
    model.write_bytes(b"first weights")
    gb.ok("mlip", "add", "M", "--arch", "mace", "--model", str(model))
    _with_a_run(gb, "M")
    model.write_bytes(b"other weights")
    for extra in ((), ("--replace",)):
        msg = _refused(
            gb, engine, "mlip", "add", "M", "--arch", "mace", "--model", str(model), *extra
        )
        assert msg.startswith(
            "Error: NAME: MLIP 'M' has 1 run: its model cannot change (model_sha256 "
        )
        assert msg.endswith("register the new model under a new name")
    gb.ok("mlip", "add", "M2", "--arch", "mace", "--model", str(model))


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [
        (
            ("--arch", "chgnet"),
            ("--arch", "chgnet", "--model", "r2scan"),
            "model_path '0.3.0' -> 'r2scan'",
        ),
        (
            ("--arch", "chgnet", "--functional", "PBE"),
            ("--arch", "chgnet", "--functional", "PBE", "--dispersion", "d3"),
            "dispersion 'none' -> 'd3'",
        ),
        (
            ("--arch", "chgnet", "--functional", "PBE", "--dispersion", "d3"),
            ("--arch", "chgnet", "--functional", "r2SCAN", "--dispersion", "d3"),
            "functional 'PBE' -> 'r2SCAN'",
        ),
    ],
)
def test_what_computes_results_cannot_change(
    gb: Cli, engine: Any, first: tuple[str, ...], second: tuple[str, ...], field: str
) -> None:
    gb.ok("mlip", "add", "M", *first)
    _with_a_run(gb, "M")
    msg = _refused(gb, engine, "mlip", "add", "M", *second, "--replace")
    assert "MLIP 'M' has 1 run: its model cannot change (" in msg and field in msg


def test_crystal_volumes_are_results_too(gb: Cli, engine: Any) -> None:
    from glassbench.service import repos, unit_of_work

    gb.ok("mlip", "add", "M", "--arch", "chgnet")
    with unit_of_work(engine) as s:
        mid = repos.get_mlip(s, "M").id
        for crystal in ("c-A", "c-B"):
            repos.set_crystal_volume(
                s, {"mlip_id": mid, "crystal": crystal, "volume_per_fu_a3": 170.0}
            )
    msg = _refused(
        gb, engine, "mlip", "add", "M", "--arch", "chgnet", "--model", "r2scan", "--replace"
    )
    assert "MLIP 'M' has 2 crystal volumes: its model cannot change" in msg


def test_without_results_the_model_may_change(gb: Cli, engine: Any) -> None:
    gb.ok("mlip", "add", "M", "--arch", "chgnet")
    msg = _refused(gb, engine, "mlip", "add", "M", "--arch", "chgnet", "--model", "r2scan")
    assert "already registered with other values (model_path: '0.3.0' -> 'r2scan')" in msg
    out = gb.ok("mlip", "add", "M", "--arch", "chgnet", "--model", "r2scan", "--replace").output
    assert "changed model_path" in out


def test_descriptive_fields_and_interpreter_may_change_with_results(
    gb: Cli, engine: Any, tmp_path: Path
) -> None:
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    gb.ok("mlip", "add", "M", "--arch", "mace", "--model", str(model), "--functional", "PBE")
    _with_a_run(gb, "M")
    moved = tmp_path / "elsewhere" / "m.model"
    moved.parent.mkdir()
    model.rename(moved)  # the same bytes, so the same model
    py = _script(tmp_path / "py", f'exec "{sys.executable}" "$@"\n')  # another environment
    out = gb.ok(
        "mlip", "add", "M", "--arch", "mace", "--model", str(moved), "--functional", "r2SCAN",
        "--training-data", "MPtrj", "--python", py, "--replace",
    ).output  # fmt: skip
    assert "updated MLIP 'M'" in out
    assert "changed model_path, python, training_data, functional" in out
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT COUNT(*) FROM run")).scalar_one() == 1


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "MP\n0",
            "MLIP name 'MP\\n0' contains the control character U+000A (newline) at character 3",
        ),
        ("MP\t0", "contains the control character U+0009 (tab) at character 3"),
        ("MP0\r", "contains the control character U+000D (carriage return) at character 4"),
        ("MP\x1b[2J", "contains the control character U+001B (escape)"),
        ("MP\u200b0", "contains the control character U+200B (zero width space)"),
        (" MP0", "MLIP name ' MP0' has leading or trailing spaces"),
        ("MP0 ", "has leading or trailing spaces"),
        ("", "MLIP name is empty"),
        ("   ", "MLIP name is empty"),
        ("M" * 129, "MLIP name is 129 characters long, at most 128"),
    ],
)
def test_bad_names(gb: Cli, engine: Any, name: str, message: str) -> None:
    msg = _refused(gb, engine, "mlip", "add", name, "--arch", "chgnet")
    assert msg.startswith("Error: NAME: ") and message in msg


def test_longest_name_is_accepted(gb: Cli) -> None:
    assert "registered" in gb.ok("mlip", "add", "M" * 128, "--arch", "chgnet").output


# --- model paths --------------------------------------------------------------------------


def test_model_paths_by_architecture(gb: Cli, engine: Any, tmp_path: Path) -> None:
    folder = tmp_path / "model-dir"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    single = tmp_path / "m.model"
    single.write_bytes(b"weights")
    cases = [
        ("mace", str(folder), f"--model: '{folder}' is a directory; a mace model is one file"),
        ("deepmd", str(folder), f"--model: '{folder}' is a directory; a deepmd model is one file"),
        ("mace", "/dev/zero", "--model: '/dev/zero' is not a regular file"),
        ("mace", str(empty), f"--model: model file '{empty}' is empty"),
        (
            "mace",
            str(tmp_path / "nope"),
            f"--model: model file '{tmp_path / 'nope'}' does not exist",
        ),
        (
            "grace",
            str(single),
            f"--model: '{single}' is a file; a grace model is a saved-model directory",
        ),
        ("grace", str(empty_dir), f"--model: model directory '{empty_dir}' holds no files"),
    ]
    for arch, model, message in cases:
        msg = _refused(gb, engine, "mlip", "add", "X", "--arch", arch, "--model", model)
        assert msg == f"Error: {message}", (arch, model)
    _refused(gb, engine, "mlip", "add", "X", "--arch", "mace")  # no --model at all
    assert (
        "registered" in gb.ok("mlip", "add", "G", "--arch", "grace", "--model", str(folder)).output
    )
    jax = tmp_path / "frozen.savedmodel"
    jax.mkdir()
    (jax / "saved_model.pb").write_bytes(b"jax graph")
    assert "registered" in gb.ok("mlip", "add", "D", "--arch", "deepmd", "--model", str(jax)).output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--functional", "P" * 65), "--functional: functional is 65 characters long, at most 64"),
        (
            ("--functional", "PB\nE"),
            "--functional: functional 'PB\\nE' contains the control character",
        ),
        (("--training-data", "T" * 513), "--training-data: training data is 513 characters long"),
    ],
)
def test_descriptive_fields_fit_their_columns(
    gb: Cli, engine: Any, option: tuple[str, str], message: str
) -> None:
    """Too long for PostgreSQL's varchar: refused up front on both engines, not a DataError."""
    msg = _refused(gb, engine, "mlip", "add", "X", "--arch", "chgnet", *option)
    assert msg.startswith(f"Error: {message}")


# --- interpreters -------------------------------------------------------------------------


def test_bin_false_is_refused_at_registration(gb: Cli, engine: Any) -> None:
    msg = _refused(gb, engine, "mlip", "add", "X", "--arch", "chgnet", "--python", "/bin/false")
    assert msg == (
        "Error: --python: interpreter '/bin/false' cannot import glassbench "
        "(`-c 'import glassbench.runners.delegation'` exited with status 1; it wrote nothing "
        "to stderr)"
    )


def test_interpreters_that_cannot_run_glassbench(gb: Cli, engine: Any, tmp_path: Path) -> None:
    no_exec = tmp_path / "python-noexec"
    no_exec.write_text("#!/bin/sh\n")
    no_glassbench = _script(
        tmp_path / "python-bare",
        "echo 'Traceback (most recent call last):' >&2\n"
        "echo \"ModuleNotFoundError: No module named 'glassbench'\" >&2\nexit 1\n",
    )
    cases = [
        (str(tmp_path / "nope"), "does not exist"),
        (str(tmp_path), "is a directory, not an interpreter"),
        (str(no_exec), "is not executable"),
        (
            no_glassbench,
            "cannot import glassbench (`-c 'import glassbench.runners.delegation'` exited with "
            "status 1; its last stderr lines: 'Traceback (most recent call last):' | "
            "\"ModuleNotFoundError: No module named 'glassbench'\")",
        ),
    ]
    for python, problem in cases:
        msg = _refused(gb, engine, "mlip", "add", "X", "--arch", "chgnet", "--python", python)
        assert msg == f"Error: --python: interpreter '{python}' {problem}"


def test_interpreter_check_is_bounded(db_url: str, engine: Any, tmp_path: Path) -> None:
    """An 'interpreter' that floods stderr: the message quotes 5 short lines, memory stays low."""
    flood = _script(
        tmp_path / "python-flood",
        "head -c 50000000 /dev/zero | tr '\\0' 'x' | fold -w 300 >&2\nexit 7\n",
    )
    before = table_counts(engine)
    res = gb_limited(db_url, "mlip", "add", "X", "--arch", "chgnet", "--python", flood, mem_mb=1000)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "exited with status 7; its last stderr lines: 'xxx" in res.stderr
    # 5 lines, each cut to 200 characters
    assert len(res.stderr) < 1500 and res.stderr.count("...' | '") == 4
    assert table_counts(engine) == before


# --- a delegated run whose interpreter dies -----------------------------------------------


def _fake_interpreter(tmp_path: Path, body: str) -> str:
    """Passes the registration's import check, then fails the run as ``body`` says."""
    return _script(
        tmp_path / "python-broken",
        f'case "$2" in import*) exec "{sys.executable}" "$@";; esac\n{body}',
    )


@pytest.mark.parametrize(
    ("body", "ending"),
    [
        (
            "echo 'loading model' >&2\necho 'RuntimeError: CUDA driver missing' >&2\nexit 3\n",
            "exited with status 3 before it returned a result; its last stderr lines: "
            "'loading model' | 'RuntimeError: CUDA driver missing'",
        ),
        (
            "exit 1\n",
            "exited with status 1 before it returned a result; it wrote nothing to stderr",
        ),
        (
            "kill -9 $$\n",
            "was killed by signal 9 (SIGKILL) before it returned a result; it wrote nothing to "
            "stderr",
        ),
    ],
)
def test_dead_interpreter_reports_status_and_stderr(
    gb: Cli, engine: Any, tmp_path: Path, body: str, ending: str
) -> None:
    python = _fake_interpreter(tmp_path, body)
    gb.ok("mlip", "add", "BROKEN", "--arch", "chgnet", "--python", python)
    before = table_counts(engine)
    res = gb(
        "run", "meltquench", "--mlip", "BROKEN", "--x", "0", "--quench-rate", "100", "--seed", "1",
        "--checkpoint-dir", str(tmp_path / "ck"),
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    error = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert error == [f"Error: interpreter {python} {ending}"]
    assert table_counts(engine) == before


def test_child_draws_on_the_parents_terminal(tmp_path: Path) -> None:
    """stderr passes through a pipe; told that it ends on a terminal, the child's stderr says it
    is one, so its progress bar still shows."""
    import subprocess

    code = (
        "import sys; from glassbench.runners import delegation; "
        "delegation._adopt_parent_terminal(); print(sys.stderr.isatty())"
    )
    env = {**os.environ, "GLASSBENCH_STDERR_IS_TERMINAL": "1"}
    told = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert told.stdout.strip() == "True"
    env.pop("GLASSBENCH_STDERR_IS_TERMINAL")
    untold = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert untold.stdout.strip() == "False"
