"""``glassbench.api``: the worked example of docs/python-api.md runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "python-api.md"
MARKER = "<!-- tests/foundation/test_python_api.py executes the next python block -->"


def _blocks() -> tuple[str, str]:
    """The example's code and the output the page shows for it."""
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(MARKER) + len(MARKER) :]
    code, output = re.findall(r"```(?:python)?\n(.*?)```", after, flags=re.S)[:2]
    return code, output


def test_the_worked_example_runs_and_prints_what_the_page_shows(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shown = _blocks()
    assert 'api.connect("sqlite:///example.db")' in code
    monkeypatch.chdir(ROOT)  # the example reads tests/data/lammps relative to the checkout
    ns: dict[str, Any] = {}
    exec(compile(code.replace("sqlite:///example.db", db_url), str(DOC), "exec"), ns)

    result, df = ns["result"], ns["df"]
    assert (result.run_id, result.action) == (1, "new")
    assert (result.n_thermo, result.n_frames, result.n_atoms) == (24, 8, 52)
    assert result.density.value == pytest.approx(1.8354, abs=5e-5)
    assert result.density.stderr == pytest.approx(0.0618, abs=5e-5)
    (row,) = df.to_dict("records")
    assert (row["mlip"], row["seed"], row["status"], row["n_atoms"]) == ("MP0", 1, "done", 52)
    assert float(row["x"]) == 0.0 and float(row["quench_rate_k_ps"]) == 1.0
    assert float(row["density_g_cm3"]) == pytest.approx(result.density.value)
    assert float(row["nbs"]) == pytest.approx(0.1429, abs=5e-5)
    assert float(row["na_cn"]) == pytest.approx(3.9375)
    # What the page shows is what the example prints: all of it on SQLite (the page's run),
    # on PostgreSQL the lines that do not depend on the driver's number types.
    printed = capsys.readouterr().out.splitlines()
    assert printed[:4] == shown.splitlines()[:4]
    if db_url.startswith("sqlite"):
        assert printed == shown.splitlines()

    # Run again: nothing changes.
    data = ns["data"]
    again = ns["api"].ingest_lammps(
        ns["engine"],
        ns["key"],
        data / "log.metal.lammps",
        data / "dump.metal.lammpstrj",
        stage="anneal",
    )
    assert (again.run_id, again.action, again.density) == (1, "unchanged", None)
    ns["engine"].dispose()


def test_errors_name_fields_not_flags(engine: Any) -> None:
    from glassbench import api

    key = api.RunKey("nobody", x=9, quench_rate_k_ps=1.0, seed=1)
    with pytest.raises(api.BadInput) as bad:
        api.ingest_lammps(engine, key, ROOT / "tests/data/lammps/log.metal.lammps")
    assert (
        bad.value.field == "x" and str(bad.value).startswith("x: ") and "--" not in str(bad.value)
    )
    with pytest.raises(api.BadInput) as bad:
        api.ingest_lammps(
            engine, api.RunKey("nobody", 0.0, 1.0, 1), ROOT / "tests/data/lammps/log.metal.lammps"
        )
    assert bad.value.field == "mlip" and str(bad.value).startswith("mlip: no MLIP named")
    with pytest.raises(api.BadInput) as bad:
        api.MeltQuenchParams(mlip="m", x=0.0, quench_rate_k_ps=-1.0, seed=1)
    assert str(bad.value) == "quench_rate_k_ps: must be > 0"


def test_connect_without_upgrade_verifies_the_schema(tmp_path: Path) -> None:
    from glassbench import api

    with pytest.raises(api.Failure, match="glassbench db upgrade"):
        api.connect(f"sqlite:///{tmp_path / 'empty.db'}", upgrade=False)
    engine = api.connect(str(tmp_path / "plain-path.db"))  # a bare path is SQLite
    assert engine.dialect.name == "sqlite"
    assert api.connect(str(tmp_path / "plain-path.db"), upgrade=False).url == engine.url
    with pytest.raises(api.BadInput) as bad:
        api.read_sql(engine, "DELETE FROM run")
    assert bad.value.field == "query"


def test_importing_the_api_loads_no_ml_framework() -> None:
    code = (
        "import sys, glassbench.api as api; "
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy'; "
        "api.RunKey, api.ingest_lammps, api.run_meltquench, api.register_mlip, api.read_sql; "
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy names'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
