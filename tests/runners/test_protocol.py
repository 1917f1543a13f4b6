"""Protocols as stages: presets, TOML files, run-option overrides, the hashed record, and what
the stages do to a real (tiny MACE) run: the volume moves in an NPT quench, not in an NVT one."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from glassbench.errors import BadInput
from glassbench.runners.meltquench import MeltQuenchParams
from glassbench.runners.protocol import (
    PRESETS,
    Stage,
    load_protocol_file,
    preset,
    protocol_from_mapping,
    resolve,
)
from glassbench.service.repos import content_hash
from tests.conftest import MACE_HINT, Cli, require_module


def _hash(p: Any) -> str:
    return content_hash({"kind": "meltquench", **p.record()})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_toml_with_the_same_hash(name: str, tmp_path: Path) -> None:
    p = preset(name)
    f = tmp_path / f"{name}-copy.toml"
    f.write_text(p.to_toml())
    back = load_protocol_file(f)
    assert back.stages == p.stages
    assert back.record() == p.record()
    assert _hash(back) == _hash(p)
    # The name is not part of the identity: the same stages under another name hash the same.
    renamed = protocol_from_mapping({**tomllib.loads(f.read_text()), "name": "other"}, name="x")
    assert renamed.name == "other" and _hash(renamed) == _hash(p)


def test_study_preset_is_what_the_study_states() -> None:
    p = preset("study")
    assert [s.name for s in p.stages] == ["melt", "quench", "anneal", "production"]
    melt, quench, anneal, production = p.stages
    assert melt.t_start_k == 1800.0 and melt.ensemble == "nvt"
    assert (quench.t_start_k, quench.t_end_k, quench.duration_ps) == (1800.0, 300.0, None)
    # Volume free while the liquid cools, and in the glass: MTK barostat at 0 GPa.
    for s in (quench, anneal, production):
        assert (s.ensemble, s.barostat, s.pressure_gpa, s.t_final_k) == ("npt", "mtk", 0.0, 300.0)
    assert p.window_stage == "production"


def test_run_options_override_the_matching_stage() -> None:
    p = MeltQuenchParams(
        mlip="m", x=1.0, quench_rate_k_ps=5.0, seed=1, protocol="study", melt_ps=2.0
    )
    study = preset("study")
    assert p.spec.stage("melt") == Stage(**{**study.stages[0].__dict__, "duration_ps": 2.0})
    assert p.spec.stages[1:] == study.stages[1:]
    assert _hash(p.spec) != _hash(study)
    # The quench lasts (1800 - 300) K / 5 K/ps = 300 ps = 300,000 steps of 1 fs.
    seg = p.segments[1]
    assert (seg.stage.name, seg.start, seg.steps) == ("quench", 2000, 300_000)
    assert p.target_temperature(seg.start + seg.steps // 2) == pytest.approx(1050.0)
    # --t-final moves the quench end and every later stage; --pressure every NPT stage.
    q = MeltQuenchParams(
        mlip="m",
        x=1.0,
        quench_rate_k_ps=5.0,
        seed=1,
        protocol="study",
        t_final_k=400.0,
        pressure_gpa=0.5,
    )
    assert [s.t_final_k for s in q.spec.stages] == [1800.0, 400.0, 400.0, 400.0]
    assert [s.pressure_gpa for s in q.spec.stages if s.ensemble == "npt"] == [0.5, 0.5, 0.5]
    with pytest.raises(BadInput) as exc:
        MeltQuenchParams(mlip="m", x=1.0, quench_rate_k_ps=5.0, seed=1, production_ps=3.0)
    assert exc.value.field == "production_ps" and "no production stage" in exc.value.message


def test_default_preset_keeps_the_first_wave_protocol() -> None:
    p = MeltQuenchParams(mlip="m", x=1.0, quench_rate_k_ps=5.0, seed=1)
    melt, quench, anneal = p.spec.stages
    assert (melt.thermostat, melt.ensemble, melt.duration_ps) == ("langevin", "nvt", 10.0)
    assert (quench.thermostat, quench.ensemble) == ("langevin", "nvt")
    assert (anneal.ensemble, anneal.barostat, anneal.duration_ps) == ("npt", "berendsen", 10.0)
    assert p.total_steps == 10_000 + 300_000 + 10_000


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[[stage]]\nname = 'melt'\nduration_ps = 1\ntemperature_k = 1800\n", "stages"),
        (
            "[[stage]]\nname = 'quench'\nt_start_k = 1800\nt_end_k = 300\n"
            "ensemble = 'npt'\nbarostat = 'parrinello'\n",
            "stage[1].barostat",
        ),
        (
            "[[stage]]\nname = 'quench'\nt_start_k = 1800\nt_end_k = 300\nbarostat = 'mtk'\n",
            "stage[1].barostat",
        ),
        ("[[stage]]\nname = 'boil'\nduration_ps = 1\n", "stage[1].name"),
        ("preset = 'study'\ntimestep_fs = 0\n", "timestep_fs"),
        ("preset = 'study'\nwindow = 3\n", "window"),
        ("preset = 'study'\nthermo_every = 'often'\n", "thermo_every"),
        (
            "preset = 'study'\n[[stage]]\nname = 'quench'\nt_start_k = 300\nt_end_k = 1800\n",
            "t_melt_k/t_final_k",
        ),
        ("preset = 'study'\nname = '" + "n" * 65 + "'\n", "name"),
        (
            "[[stage]]\nname = 'melt'\ntemperature_k = 1800\nduration_ps = 1\n" * 100
            + "[[stage]]\nname = 'quench'\nt_start_k = 1800\nt_end_k = 300\n",
            "stages",
        ),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else v,
)
def test_bad_protocol_files_name_the_field(text: str, field: str, tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(BadInput) as exc:
        load_protocol_file(f)
    assert exc.value.field == field, exc.value.render(None)
    assert str(f) in exc.value.render(None)


def test_unparseable_protocol_files_are_bad_input(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")  # tomllib recurses per level
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 1_000_001 + "\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    for f, message in [
        (deep, "nested too deeply"),
        (big, "larger than 1 MB"),
        (binary, "cannot read protocol file"),
        (tmp_path / "missing.toml", "does not exist"),
    ]:
        with pytest.raises(BadInput) as exc:
            load_protocol_file(f)
        assert message in exc.value.render(None) and str(f) in exc.value.render(None)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"quench_rate_k_ps": 1e-300}, "quench_rate_k_ps"), ({"timestep_fs": 1e-300}, "timestep_fs")],
)
def test_a_run_that_would_never_end_is_refused(options: dict[str, float], field: str) -> None:
    """Bounded before any row is written: at most 1e9 MD steps (a microsecond at 1 fs)."""
    kw: dict[str, Any] = {"mlip": "m", "x": 0.0, "quench_rate_k_ps": 5.0, "seed": 1, **options}
    with pytest.raises(BadInput) as exc:
        MeltQuenchParams(**kw)
    assert exc.value.field == field and "more than 1e+09 MD steps" in exc.value.message
    # A slow but real quench is fine: 0.5 K/ps from 1800 K is 3,000 ps = 3e6 steps.
    assert MeltQuenchParams(mlip="m", x=0.0, quench_rate_k_ps=0.5, seed=1).total_steps == 3_020_000


def test_protocol_show_prints_stages_and_reads_files(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from glassbench.cli import cli as main

    runner = CliRunner()
    res = runner.invoke(main, ["protocol", "show", "study"])
    assert res.exit_code == 0, res.output
    assert "quench     NPT 1800 K -> 300 K, at the run's rate" in res.output
    assert "mtk barostat at 0 GPa" in res.output
    res = runner.invoke(main, ["protocol", "show", "study", "--toml"])
    f = tmp_path / "mine.toml"
    f.write_text(res.output.replace('name = "study"', 'name = "mine"'))
    assert resolve(str(f)).record() == preset("study").record()
    res = runner.invoke(main, ["protocol", "show", str(f)])
    assert res.exit_code == 0 and res.output.startswith("protocol mine")
    res = runner.invoke(main, ["protocol", "show", "nonesuch"])
    assert res.exit_code == 2 and "unknown protocol 'nonesuch'" in res.output


# --- real runs ----------------------------------------------------------------------------

TINY = [
    "--x", "1.0", "--quench-rate", "100000", "--formula-units", "2", "--melt-ps", "0.02",
    "--anneal-ps", "0.02", "--timestep-fs", "1.0", "--thermo-every", "5", "--frame-every", "10",
    "--seed", "5",
]  # fmt: skip


def _rows(engine: Any, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(sql))]


def _volumes_by_stage(engine: Any, params: MeltQuenchParams) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for step, vol in _rows(engine, "SELECT step, volume_a3 FROM thermo ORDER BY step"):
        if step > 0:
            out.setdefault(params.stage_at(step), []).append(vol)
    return out


def test_npt_quench_moves_the_volume_nvt_does_not(
    gb: Cli, engine: Any, tiny_mace: Path, tmp_path: Path
) -> None:
    require_module("mace", MACE_HINT)
    gb.ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    gb.ok(
        "run", "meltquench", "--mlip", "tiny", "--protocol", "study", "--production-ps", "0.02",
        *TINY, "--checkpoint-dir", str(tmp_path / "ck"),
    )  # fmt: skip
    study = MeltQuenchParams(
        mlip="tiny",
        x=1.0,
        quench_rate_k_ps=100000,
        seed=5,
        protocol="study",
        formula_units=2,
        melt_ps=0.02,
        anneal_ps=0.02,
        production_ps=0.02,
        thermo_every=5,
        frame_every=10,
    )
    vols = _volumes_by_stage(engine, study)
    assert set(vols) == {"melt", "quench", "anneal", "production"}
    assert len(set(vols["melt"])) == 1  # NVT: the cell does not move
    assert max(vols["quench"]) - min(vols["quench"]) > 0.1  # MTK: it does (A^3)
    # Frames carry the stage names; the record names the protocol and holds every stage.
    stages = {s for (s,) in _rows(engine, "SELECT DISTINCT stage FROM frame")}
    assert {"initial", "melt", "quench", "anneal", "production", "final"} <= stages
    ((name, params_json),) = _rows(engine, "SELECT name, params_json FROM protocol")
    # The run options changed the study preset: the stored name says so, with the record's
    # hash (the options do not fit 64 characters) and the first options that fit.
    assert name == study.spec.name and name.startswith("study+")
    assert (
        name.removeprefix("study+")[:8]
        == content_hash({"kind": "meltquench", **study.protocol_record()})[:8]
    )
    import json

    record = json.loads(params_json)
    assert [s["name"] for s in record["stages"]] == ["melt", "quench", "anneal", "production"]
    assert record["stages"][0]["duration_ps"] == 0.02
    # The default protocol at the same options: NVT quench, the volume fixed until the anneal.
    gb.ok("run", "meltquench", "--mlip", "tiny", *TINY, "--checkpoint-dir", str(tmp_path / "ck"))
    rid = max(r for (r,) in _rows(engine, "SELECT id FROM run"))
    default = MeltQuenchParams(
        mlip="tiny",
        x=1.0,
        quench_rate_k_ps=100000,
        seed=5,
        formula_units=2,
        melt_ps=0.02,
        anneal_ps=0.02,
        thermo_every=5,
        frame_every=10,
    )
    rows = _rows(engine, f"SELECT step, volume_a3 FROM thermo WHERE run_id = {rid} ORDER BY step")
    quench = [v for s, v in rows if s > 0 and default.stage_at(s) == "quench"]
    assert quench and len(set(quench)) == 1
    assert len(_rows(engine, "SELECT id FROM protocol")) == 2


def test_d3_reaches_the_md_and_its_provenance(
    gb: Cli, engine: Any, tiny_mace: Path, tmp_path: Path
) -> None:
    """An MLIP registered with D3 runs MLIP + D3(BJ): the stored initial energy is the MLIP's
    plus D3's of the same structure, and the run records the D3 package and parameters; a
    protocol's --dispersion none turns it off for that protocol only."""
    require_module("mace", MACE_HINT)
    import json

    import numpy as np
    from ase import Atoms

    from glassbench.runners.dispersion import dispersion_calculator
    from glassbench.schema.arrays import unpack_array

    res = gb(
        "mlip", "add", "tiny-d3", "--arch", "mace", "--model", str(tiny_mace), "--dispersion", "d3"
    )
    assert res.exit_code == 2 and "--functional" in res.output, res.output
    gb.ok(
        "mlip", "add", "tiny-d3", "--arch", "mace", "--model", str(tiny_mace),
        "--dispersion", "d3", "--functional", "PBE",
    )  # fmt: skip
    for disp in ("d3", "none"):
        extra = [] if disp == "d3" else ["--dispersion", "none"]
        ck = str(tmp_path / disp)
        gb.ok("run", "meltquench", "--mlip", "tiny-d3", *TINY, *extra, "--checkpoint-dir", ck)
    runs = _rows(engine, "SELECT id, software_json FROM run ORDER BY id")
    assert len(runs) == 2  # two protocols: the MLIP's D3, and D3 turned off
    with_d3 = json.loads(runs[0][1])
    assert (with_d3["dispersion"], with_d3["dftd3"]) == ("d3", "1.7.0")
    assert with_d3["d3.damping"].startswith("d3bj") and with_d3["d3.functional"].startswith("pbe")
    assert not any(k.startswith(("d3", "dispersion")) for k in json.loads(runs[1][1]))
    # Each run's stored start: its step-0 energy is the model's (+ D3's) of that structure.
    for (rid, _), disp in zip(runs, ("d3", "none"), strict=True):
        ((numbers, positions, cell),) = _rows(
            engine,
            f"SELECT numbers, positions, cell_json FROM frame WHERE run_id = {rid} AND stage = 'initial'",
        )
        atoms = Atoms(
            numbers=unpack_array(numbers),
            positions=unpack_array(positions),
            cell=np.array(json.loads(cell)),
            pbc=True,
        )
        ((epot,),) = _rows(
            engine, f"SELECT potential_energy_ev FROM thermo WHERE run_id = {rid} AND step = 0"
        )
        from glassbench.runners.calculators import make_calculator

        atoms.calc = make_calculator("mace", str(tiny_mace))
        e_mlip = atoms.get_potential_energy()
        atoms.calc = dispersion_calculator("PBE")
        e_d3 = atoms.get_potential_energy()
        want = e_mlip + (e_d3 if disp == "d3" else 0.0)
        assert epot == pytest.approx(want, abs=1e-6 * len(atoms)), (disp, epot, e_mlip, e_d3)
        assert e_d3 < -0.01 * len(atoms) / 10  # D3 is attractive: a visible term


@pytest.mark.parametrize("ensemble", ["nvt", "npt"])
def test_nose_hoover_and_mtk_follow_a_temperature_ramp(tiny_mace: Path, ensemble: str) -> None:
    """The ramp moves the Nose-Hoover (and MTK) target: the kinetic temperature follows it down
    (ASE's integrators take a fixed target; glassbench moves it every chunk)."""
    require_module("mace", MACE_HINT)
    import numpy as np
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.meltquench_md import set_target_temperature, stage_dynamics
    from glassbench.runners.protocol import Segment
    from glassbench.runners.structure import random_glass

    atoms = random_glass(1.0, 2, 4)
    atoms.calc = make_calculator("mace", str(tiny_mace))
    rng = np.random.default_rng(4)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500.0, rng=rng)
    Stationary(atoms)
    stage = Stage(
        "quench",
        ensemble=ensemble,
        thermostat="nose-hoover",
        barostat="mtk" if ensemble == "npt" else None,
        t_start_k=1500.0,
        t_end_k=100.0,
        tdamp_fs=10.0,
    )
    seg = Segment(0, stage, 0, 300)
    dyn = stage_dynamics(atoms, seg, 1.0, rng)
    temps = []
    for step in range(0, 300, 10):
        set_target_temperature(dyn, seg.temperature_at(step + 10))
        dyn.run(10)
        temps.append(atoms.get_temperature())
    first, last = float(np.mean(temps[:5])), float(np.mean(temps[-5:]))
    assert last < 0.4 * first, temps
