"""Campaign specs: parsing, validation (exit 2 naming file and key), expansion, status,
and the dask-jobqueue job scripts built from [cluster] (no batch system needed)."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from glassbench.campaigns import (
    PROTOCOL_KEYS,
    env_resource_name,
    jobqueue_cluster,
    jobqueue_job,
    load_spec,
    parse_spec,
)
from tests.campaigns.conftest import spec_text, write_spec
from tests.conftest import Cli, table_counts

EXAMPLE = Path(__file__).parents[2] / "examples" / "campaign.toml"


@pytest.fixture
def registered(gb: Cli) -> Cli:
    # CHGNet ships its weights in the wheel: registering needs no model file (nothing runs here).
    gb.ok("mlip", "add", "chgnet-pbe", "--arch", "chgnet", "--model", "0.3.0")
    gb.ok("mlip", "add", "chgnet-r2scan", "--arch", "chgnet", "--model", "r2scan")
    return gb


def test_example_spec_parses_and_expands() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "napso-pbe-vs-r2scan"
    assert spec.size == 2 * 4 * 1 * 3
    assert spec.ignored_keys == ()
    params = spec.params()
    assert len(params) == 24
    assert [(p.mlip, p.x, p.seed) for p in params[:4]] == [
        ("chgnet-pbe", 0.0, 1),
        ("chgnet-pbe", 0.0, 2),
        ("chgnet-pbe", 0.0, 3),
        ("chgnet-pbe", 1.0, 1),
    ]
    p = params[-1]
    assert (p.mlip, p.x, p.quench_rate_k_ps, p.seed) == ("chgnet-r2scan", 3.5, 5.0, 3)
    assert (p.formula_units, p.t_melt_k, p.melt_ps, p.t_final_k, p.anneal_ps, p.timestep_fs) == (
        8,
        1800.0,
        10.0,
        300.0,
        10.0,
        1.0,
    )
    assert p.elastic is True
    # One protocol for the whole matrix: the same as `glassbench run meltquench` with these options.
    assert len({json.dumps(q.protocol_record(), sort_keys=True) for q in params}) == 1


def test_protocol_keys_match_run_meltquench_options(tmp_path: Path) -> None:
    text = spec_text(
        mlips=["m"],
        protocol={
            "thermo_every": 4,
            "frame_every": 8,
            "flush_every": 8,
            "density_g_cm3": 2.1,
            "relax_steps": 0,
        },
    )
    spec = parse_spec(tomllib.loads(text), tmp_path / "s.toml")
    p = spec.params()[0]
    assert (p.thermo_every, p.frame_every, p.flush_every, p.density_g_cm3, p.relax_steps) == (
        4,
        8,
        8,
        2.1,
        0,
    )
    text = text.replace("elastic = false", "elastic = true\nelastic_strain = 0.01")
    p = parse_spec(tomllib.loads(text), tmp_path / "s.toml").params()[0]
    assert (p.elastic, p.elastic_strain) == (True, 0.01)
    for key in (
        "formula_units",
        "t_melt_k",
        "melt_ps",
        "t_final_k",
        "anneal_ps",
        "timestep_fs",
        "thermo_every",
        "frame_every",
    ):
        assert key in PROTOCOL_KEYS


BAD_SPECS: list[tuple[str, str, str]] = [
    # (id, edit applied to a valid spec, key the message must name)
    ("toml-syntax", "replace:seeds = [1, 2]=>seeds = [1, 2", "line"),
    ("missing-matrix", "drop-section:matrix", "[matrix]"),
    ("missing-campaign", "drop-section:campaign", "[campaign]"),
    ("missing-protocol", "drop-section:protocol", "[protocol]"),
    ("missing-seeds", "replace:seeds = [1, 2]\n=>", "matrix.seeds"),
    ("missing-name", 'replace:name = "tiny"\n=>', "campaign.name"),
    ("x-not-list", "replace:x = [0.0, 1.0]=>x = 1.0", "matrix.x"),
    ("x-string", 'replace:x = [0.0, 1.0]=>x = [0.0, "one"]', "matrix.x[1]"),
    ("seed-float", "replace:seeds = [1, 2]=>seeds = [1, 2.5]", "matrix.seeds[1]"),
    ("seed-bool", "replace:seeds = [1, 2]=>seeds = [true]", "matrix.seeds[0]"),
    ("rate-negative", "replace:quench_rates_k_ps = [50000.0]=>quench_rates_k_ps = [-1.0]", "matrix.quench_rates_k_ps[0]"),
    ("duplicate-seed", "replace:seeds = [1, 2]=>seeds = [1, 1]", "matrix.seeds"),
    ("empty-mlips", 'replace:mlips = ["chgnet-pbe", "chgnet-r2scan"]=>mlips = []', "matrix.mlips"),
    ("fu-string", 'replace:formula_units = 2=>formula_units = "2"', "protocol.formula_units"),
    ("melt-string", 'replace:melt_ps = 0.02=>melt_ps = "long"', "protocol.melt_ps"),
    ("timestep-zero", "replace:timestep_fs = 1.0=>timestep_fs = 0.0", "protocol.timestep_fs"),
    ("t-melt-below-final", "replace:t_melt_k = 1800=>t_melt_k = 200", "protocol.t_melt_k"),
    ("elastic-string", 'replace:elastic = false=>elastic = "yes"', "properties.elastic"),
    ("crystal-missing-file", 'replace:crystal = []=>crystal = ["nope.cif"]', "properties.crystal[0]"),
    ("x-fu-not-whole", "replace:x = [0.0, 1.0]=>x = [0.0, 0.25]", "matrix.x[1]"),
    ("x-out-of-range", "replace:x = [0.0, 1.0]=>x = [9.0]", "matrix.x[0]"),
    ("unknown-mlip", 'replace:mlips = ["chgnet-pbe", "chgnet-r2scan"]=>mlips = ["chgnet-pbe", "nope"]', "matrix.mlips[1]"),
    ("threads-zero", "replace:threads_per_run = 1=>threads_per_run = 0", "resources.threads_per_run"),
    ("dispersion-unknown", "replace:seeds = [1, 2]=>seeds = [1, 2]\ndispersion = [\"d4\"]", "matrix.dispersion[0]"),
    ("protocol-unknown", "replace:seeds = [1, 2]=>seeds = [1, 2]\nprotocols = [\"fast\"]", "matrix.protocols[0]"),
    ("protocol-file-missing", "replace:[protocol]=>[protocol]\nfile = \"nope.toml\"", "protocol.file"),
    ("toml-nested-too-deeply", "replace:[protocol]=>deep = " + "[" * 5000 + "]" * 5000 + "\n[protocol]", "nested too deeply"),
    ("density-absurd", "replace:[protocol]=>[protocol]\ndensity_g_cm3 = 50.0", "protocol.density_g_cm3"),
    ("production-without-stage", "replace:[protocol]=>[protocol]\nproduction_ps = 1.0", "protocol.production_ps"),
]  # fmt: skip


def _edit(text: str, edit: str) -> str:
    op, _, arg = edit.partition(":")
    if op == "replace":
        old, new = arg.split("=>")
        assert old in text, old
        return text.replace(old, new)
    assert op == "drop-section"
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skip = line.strip() == f"[{arg}]"
        if not skip:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize(("case", "edit", "key"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_names_file_and_key(tmp_path: Path, case: str, edit: str, key: str) -> None:
    from glassbench.errors import BadInput

    spec = tmp_path / "bad.toml"
    spec.write_text(_edit(spec_text(mlips=["chgnet-pbe", "chgnet-r2scan"]), edit))
    if case == "unknown-mlip":  # needs the registry: checked by the CLI test below
        return
    with pytest.raises(BadInput) as err:
        load_spec(spec)
    msg = err.value.format_message()
    assert err.value.exit_code == 2
    assert str(spec) in msg and key in msg, msg


CLI_CASES = (
    "toml-syntax", "toml-nested-too-deeply", "missing-seeds", "seed-float", "x-fu-not-whole",
    "unknown-mlip",
)  # fmt: skip


@pytest.mark.parametrize("command", ["run", "status"])
@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(
    registered: Cli, engine: Any, tmp_path: Path, command: str, case: str
) -> None:
    _, edit, key = next(c for c in BAD_SPECS if c[0] == case)
    spec = tmp_path / "bad.toml"
    spec.write_text(_edit(spec_text(mlips=["chgnet-pbe", "chgnet-r2scan"]), edit))
    before = table_counts(engine)
    res = registered("campaign", command, str(spec))
    assert res.exit_code == 2, res.output
    err = res.output.strip().splitlines()
    assert len(err) == 1, res.output  # one line, no traceback
    assert str(spec) in err[0] and key in err[0], err[0]
    assert table_counts(engine) == before  # nothing written


def test_missing_spec_file_is_bad_input(gb: Cli, tmp_path: Path) -> None:
    res = gb("campaign", "status", str(tmp_path / "absent.toml"))
    assert res.exit_code == 2 and "absent.toml" in res.output


def test_scheduler_with_local_executor_is_bad_usage(registered: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.toml", mlips=["chgnet-pbe"])
    res = registered(
        "campaign", "run", str(spec), "--executor", "local", "--scheduler", "tcp://x:1"
    )
    assert res.exit_code == 2 and "--scheduler" in res.output


def test_unknown_keys_warn_and_are_ignored(registered: Cli, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.toml",
        mlips=["chgnet-pbe"],
        extra='notes = "x"\n[campaign_meta]\nowner = "me"\n',
    )
    res = registered("campaign", "status", str(spec))
    assert res.exit_code == 0, res.output
    assert "resources.notes is not a known key" in res.output
    assert "[campaign_meta] is not a known key" in res.output


def test_status_before_any_run_counts_all_missing(registered: Cli, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.toml", mlips=["chgnet-pbe", "chgnet-r2scan"])
    table = registered.ok("campaign", "status", str(spec)).output
    assert "missing" in table and "(4 rows)" in table
    doc = json.loads(registered.ok("campaign", "status", str(spec), "--format", "json").output)
    assert doc["total"] == 8
    assert doc["counts"] == {"done": 0, "running": 0, "pending": 0, "failed": 0, "missing": 8}
    assert {(r["mlip"], r["x"]) for r in doc["rows"]} == {
        (m, x) for m in ("chgnet-pbe", "chgnet-r2scan") for x in (0.0, 1.0)
    }
    csv = registered.ok("campaign", "status", str(spec), "--format", "csv").output.splitlines()
    assert csv[0] == "mlip,x,total,done,running,pending,failed,missing"
    assert csv[1] == "chgnet-pbe,0.0,2,0,0,0,0,2"


def test_status_sees_runs_and_failures(registered: Cli, engine: Any, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from glassbench.runners.meltquench import ensure_run
    from glassbench.service.runs import claim as claim_run
    from glassbench.service.runs import fail as mark_failed

    spec = load_spec(write_spec(tmp_path / "s.toml", mlips=["chgnet-pbe", "chgnet-r2scan"]))
    p = spec.params()
    ids = [ensure_run(engine, q)[0] for q in p[:3]]
    assert claim_run(engine, ids[0], worker="h:1")
    assert claim_run(engine, ids[1], worker="h:2")
    mark_failed(engine, ids[1], "RuntimeError: exploded\nsecond line")
    with engine.begin() as c:
        c.execute(sa.text("UPDATE run SET status = 'done' WHERE id = :i"), {"i": ids[2]})
    doc = json.loads(registered.ok("campaign", "status", str(spec.path), "--format", "json").output)
    assert doc["counts"] == {"done": 1, "running": 1, "pending": 0, "failed": 1, "missing": 5}
    assert doc["failures"] == [
        {
            "mlip": "chgnet-pbe",
            "x": p[1].x,
            "quench_rate_k_ps": 50000.0,
            "seed": p[1].seed,
            "attempts": 1,
            "error": "RuntimeError: exploded",
        }
    ]
    table = registered.ok("campaign", "status", str(spec.path)).output
    assert "failed runs:" in table and "RuntimeError: exploded" in table


CLUSTER = """
[resources]
threads_per_run = 4
memory = "16GB"
walltime = "12:00:00"
[cluster]
kind = "{kind}"
queue = "compute"
account = "glass01"
processes = 2
job_script_prologue = ["module load python/3.11"]
job_extra_directives = {extra}
"""


def _cluster_spec(tmp_path: Path, kind: str, extra: str = "[]") -> Any:
    text = spec_text(mlips=["m"]).replace("[resources]\nthreads_per_run = 1\n", "")
    path = tmp_path / f"{kind}.toml"
    path.write_text(text + CLUSTER.format(kind=kind, extra=extra))
    return load_spec(path)


def test_slurm_job_script_from_spec(tmp_path: Path) -> None:
    spec = _cluster_spec(tmp_path, "slurm", '["--constraint=avx2"]')
    with jobqueue_cluster(spec) as cluster:
        script = cluster.job_script()
    lines = script.splitlines()
    for directive in (
        "#SBATCH -p compute",
        "#SBATCH -A glass01",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=15G",
        "#SBATCH -t 12:00:00",
        "#SBATCH --constraint=avx2",
    ):
        assert directive in lines, (directive, script)
    assert "module load python/3.11" in lines
    worker = next(ln for ln in lines if "dask_worker" in ln)
    # The interpreter that runs glassbench (the workers import glassbench.campaigns).
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker")
    # Two workers per job, one task thread each: a run's threads use the reserved cores.
    assert "--nthreads 1" in worker and "--nworkers 2" in worker


def test_pbs_job_script_from_spec(tmp_path: Path) -> None:
    spec = _cluster_spec(tmp_path, "pbs")
    with jobqueue_cluster(spec) as cluster:
        script = cluster.job_script()
    lines = script.splitlines()
    for directive in (
        "#PBS -q compute",
        "#PBS -A glass01",
        "#PBS -l select=1:ncpus=8:mem=16GB",
        "#PBS -l walltime=12:00:00",
    ):
        assert directive in lines, (directive, script)
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script


def test_env_worker_job_script_advertises_env_resource(tmp_path: Path) -> None:
    spec = _cluster_spec(tmp_path, "slurm")
    other = "/opt/envs/deepmd/bin/python"
    script = jobqueue_job(spec, scheduler="tcp://10.1.2.3:8786", python=other).job_script()
    worker = next(ln for ln in script.splitlines() if "dask_worker" in ln)
    assert worker.startswith(f"{other} -m distributed.cli.dask_worker tcp://10.1.2.3:8786")
    assert f"--resources {env_resource_name(other)}=1" in worker


def test_job_script_command(gb: Cli, tmp_path: Path) -> None:
    spec = _cluster_spec(tmp_path, "slurm")
    out = gb.ok("campaign", "job-script", str(spec.path), "--scheduler", "tcp://h:8786").output
    assert "#SBATCH --cpus-per-task=8" in out and "tcp://h:8786" in out


def test_cluster_without_memory_is_bad_input(tmp_path: Path) -> None:
    from glassbench.errors import BadInput

    spec = _cluster_spec(tmp_path, "slurm")
    import dataclasses

    spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, memory=None))
    with pytest.raises(BadInput, match=r"resources\.memory"):
        jobqueue_cluster(spec)


def test_protocols_and_dispersion_axes_multiply_the_matrix(tmp_path: Path) -> None:
    """The study's open question as a matrix: protocols x dispersion, each a distinct protocol
    record; the [protocol] run options apply to every protocol of the axis."""
    mine = tmp_path / "slow-anneal.toml"
    mine.write_text('preset = "study"\nname = "slow-anneal"\n')
    text = spec_text(mlips=["m"], x=[1.0], seeds=[1]).replace(
        "seeds = [1]",
        'seeds = [1]\nprotocols = ["default", "slow-anneal.toml"]\ndispersion = ["none", "d3"]',
    )
    spec = parse_spec(tomllib.loads(text), tmp_path / "s.toml")
    assert spec.size == 1 * 1 * 1 * 1 * 4
    # Without the run options each protocol of the axis is named after its dispersion ...
    assert [p.name for p in spec.protocols] == [
        "default (dispersion=none)",
        "default (dispersion=d3)",
        "slow-anneal (dispersion=none)",
        "slow-anneal (dispersion=d3)",
    ]
    params = spec.params()
    assert [p.spec.dispersion for p in params] == ["none", "d3", "none", "d3"]
    # ... and with them (too many for 64 characters) by the start of its record's hash: four
    # protocols, four names.
    names = [p.spec.name for p in params]
    assert [n.split("+")[0] for n in names] == ["default"] * 2 + ["slow-anneal"] * 2
    assert len(set(names)) == 4 and all(len(n) <= 64 for n in names)
    assert len({json.dumps(p.protocol_record(), sort_keys=True) for p in params}) == 4
    # The spec's melt_ps (0.02 in the test protocol) overrides both protocols' melt stage.
    assert {p.spec.stage("melt").duration_ps for p in params} == {0.02}  # type: ignore[union-attr]


def test_inline_stages_in_the_spec(tmp_path: Path) -> None:
    text = spec_text(mlips=["m"], x=[1.0], seeds=[1], protocol={"melt_ps": 0.5}).replace(
        "[properties]",
        '[[protocol.stage]]\nname = "melt"\ntemperature_k = 2000\nduration_ps = 1.0\n'
        '[[protocol.stage]]\nname = "quench"\nensemble = "npt"\nt_start_k = 2000\n'
        't_end_k = 300\n[[protocol.stage]]\nname = "anneal"\ntemperature_k = 300\n'
        "duration_ps = 1.0\n[properties]",
    )
    spec = parse_spec(tomllib.loads(text), tmp_path / "s.toml")
    (p,) = spec.params()
    assert [s.name for s in p.spec.stages] == ["melt", "quench", "anneal"]
    assert p.spec.stages[0].duration_ps == 0.5  # the flat option wins over the stage table
    assert (p.spec.stages[1].barostat, p.spec.stages[1].thermostat) == ("mtk", "nose-hoover")
