"""Campaign specs: the TOML file parsed and validated into a :class:`CampaignSpec`.

A spec error names the file and the key (``spec.toml:matrix.x[1]: ...``) and is raised before
anything is written; unknown keys are collected in ``ignored_keys`` for the caller to warn about.
See docs/campaigns.md, "The spec".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from glassbench.chemistry import counts_for, per_formula_unit
from glassbench.errors import BadInput
from glassbench.runners.meltquench import MAX_SEED, MeltQuenchParams
from glassbench.runners.protocol import (
    DISPERSIONS,
    Protocol,
    load_protocol_file,
    preset,
    protocol_from_mapping,
    resolve,
)
from glassbench.service.runs import DEFAULT_STALE_AFTER_S
from glassbench.toml_files import read_toml

CLUSTER_KINDS = ("slurm", "pbs")
DEFAULT_RETRIES = 1

# Spec keys derive from MeltQuenchParams, so a run option added to the runner is accepted at
# once: [protocol] takes every run option (they override the protocol's stages, as on the
# command line) except the elastic ones, which go in [properties] (`elastic`, `elastic_*`).
_KEY_FIELDS = ("mlip", "x", "quench_rate_k_ps", "seed", "protocol")
PROTOCOL_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(MeltQuenchParams)
    if f.name not in _KEY_FIELDS and not f.name.startswith("elastic")
)  # fmt: skip
PROPERTY_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(MeltQuenchParams) if f.name.startswith("elastic")
)
_INT_KEYS = ("formula_units", "relax_steps", "thermo_every", "frame_every", "block_frames")
_STR_KEYS = ("dispersion",)


def _kind_of(name: str) -> str:
    """The spec type of a MeltQuenchParams run option."""
    if name in _INT_KEYS or name in ("flush_every", "elastic_max_steps"):
        return "int"
    if name in _STR_KEYS:
        return "str"
    if name in ("elastic", "elastic_relax_positions", "elastic_relax_cell"):
        return "bool"
    return "number"


@dataclass(frozen=True)
class Resources:
    """Per-run resources (``[resources]``)."""

    threads_per_run: int = 1
    retries: int = DEFAULT_RETRIES
    memory: str | None = None
    walltime: str | None = None
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class ClusterSpec:
    """A dask-jobqueue batch cluster (``[cluster]``); ``kind`` None means none."""

    kind: str | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    memory: str | None = None
    processes: int = 1
    jobs: int | None = None
    python: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    env_resources: bool = False


@dataclass(frozen=True)
class CampaignSpec:
    """A parsed spec. ``protocols`` are the matrix's protocols (one unless ``[matrix]`` lists
    several or a ``dispersion`` axis); ``protocol`` holds the MeltQuenchParams run options:
    the [protocol] keys and the ``elastic_*`` options of [properties]."""

    path: Path
    name: str
    mlips: tuple[str, ...]
    x: tuple[float, ...]
    quench_rates_k_ps: tuple[float, ...]
    seeds: tuple[int, ...]
    protocol: Mapping[str, Any] = field(default_factory=dict)
    protocols: tuple[Protocol, ...] = ()
    elastic: bool = False
    crystal: tuple[Path, ...] = ()
    resources: Resources = field(default_factory=Resources)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    ignored_keys: tuple[str, ...] = ()

    def params(self) -> list[MeltQuenchParams]:
        """The expanded matrix, in spec order (MLIP, x, quench rate, seed, protocol)."""
        return [
            make_params(self, m, x, q, s, proto)
            for m in self.mlips
            for x in self.x
            for q in self.quench_rates_k_ps
            for s in self.seeds
            for proto in self.protocol_axis()
        ]

    def protocol_axis(self) -> tuple[Protocol | str, ...]:
        return self.protocols or ("default",)

    @property
    def size(self) -> int:
        n = len(self.mlips) * len(self.x) * len(self.quench_rates_k_ps) * len(self.seeds)
        return n * len(self.protocol_axis())

    def describe_size(self) -> str:
        """``campaign 'c': 24 runs (2 MLIPs x 4 compositions x 1 quench rate x 3 seeds x 1
        protocol)``: what `campaign run` says before it does anything."""
        axes = (
            (len(self.mlips), "MLIP", "MLIPs"),
            (len(self.x), "composition", "compositions"),
            (len(self.quench_rates_k_ps), "quench rate", "quench rates"),
            (len(self.seeds), "seed", "seeds"),
            (len(self.protocol_axis()), "protocol", "protocols"),
        )
        factors = " x ".join(f"{n} {one if n == 1 else many}" for n, one, many in axes)
        return f"campaign {self.name!r}: {self.size:,} runs ({factors})"

    def check_size(self, max_runs: int) -> None:
        """Refuse a matrix of more than ``max_runs`` runs (`campaign run` without --yes)."""
        if self.size > max_runs:
            raise BadInput(
                f"{self.describe_size()} is more than the {max_runs:,} runs a campaign starts "
                "without --yes (setting campaign_max_runs, GLASSBENCH_CAMPAIGN_MAX_RUNS); "
                "check the matrix, or pass --yes",
                source=str(self.path),
                where="[matrix]",
            )

    def checkpoint_dir(self) -> Path:
        d = self.resources.checkpoint_dir
        return d if d is not None else self.path.parent / ".glassbench" / "checkpoints"


def make_params(
    spec: CampaignSpec,
    mlip: str,
    x: float,
    q: float,
    seed: int,
    protocol: Protocol | str | None = None,
) -> MeltQuenchParams:
    """The parameters of one run of the matrix: the spec's protocol with this run's key."""
    return MeltQuenchParams(
        mlip=mlip,
        x=float(x),
        quench_rate_k_ps=float(q),
        seed=int(seed),
        protocol=protocol if protocol is not None else spec.protocol_axis()[0],
        elastic=spec.elastic,
        **spec.protocol,
    )


class _Reader:
    """Typed access to the parsed TOML; every error names the file and the key."""

    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        self.path = path
        self.data = data
        self.used: set[str] = set()

    def error(self, key: str, msg: str) -> BadInput:
        return BadInput(msg, source=str(self.path), where=key)

    def section(self, name: str, *, required: bool) -> Mapping[str, Any]:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise self.error(f"[{name}]", "missing section")
            return {}
        sec = self.data[name]
        if not isinstance(sec, dict):
            raise self.error(f"[{name}]", f"must be a table, not {_tname(sec)}")
        return sec

    def value(
        self, sec: str, key: str, kind: str, *, required: bool = False, default: Any = None
    ) -> Any:
        where = f"{sec}.{key}"
        self.used.add(where)
        table = self.data.get(sec, {})
        if key not in table:
            if required:
                raise self.error(where, "missing key")
            return default
        return _check(self, where, table[key], kind)

    def items(self, sec: str, key: str, kind: str) -> tuple[Any, ...]:
        """A required, non-empty list without duplicates (duplicates would run twice)."""
        where = f"{sec}.{key}"
        self.used.add(where)
        table = self.data.get(sec, {})
        if key not in table:
            raise self.error(where, "missing key")
        raw = table[key]
        if not isinstance(raw, list):
            raise self.error(where, f"must be a list, not {_tname(raw)}")
        if not raw:
            raise self.error(where, "must not be empty")
        out = tuple(_check(self, f"{where}[{i}]", v, kind) for i, v in enumerate(raw))
        seen: set[Any] = set()
        for v in out:
            if v in seen:
                raise self.error(where, f"duplicate value {v!r}")
            seen.add(v)
        return out


def _tname(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _check(r: _Reader, where: str, v: Any, kind: str) -> Any:
    # TOML booleans are Python ints: reject them explicitly where numbers are expected.
    if kind == "number":
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise r.error(where, f"must be a number, not {_tname(v)} {v!r}")
        return float(v)
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise r.error(where, f"must be an integer, not {_tname(v)} {v!r}")
        return int(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise r.error(where, f"must be true or false, not {_tname(v)} {v!r}")
        return v
    if kind == "str":
        if not isinstance(v, str) or not v.strip():
            raise r.error(where, f"must be a non-empty string, not {_tname(v)} {v!r}")
        return v
    if kind == "strlist":
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise r.error(where, f"must be a list of strings, not {_tname(v)}")
        return tuple(v)
    raise AssertionError(kind)


def load_spec(path: str | os.PathLike[str]) -> CampaignSpec:
    """Parse and validate a campaign spec; `BadInput` names the file and the key."""
    p = Path(path)
    data = read_toml(p, what="spec file")
    return parse_spec(data, p)


def parse_spec(data: Mapping[str, Any], path: Path) -> CampaignSpec:
    """Validate parsed TOML (``path``: where it came from, for messages and relative paths)."""
    r = _Reader(path, data)
    r.section("campaign", required=True)
    name = r.value("campaign", "name", "str", required=True)
    r.section("matrix", required=True)
    mlips = r.items("matrix", "mlips", "str")
    xs = r.items("matrix", "x", "number")
    rates = r.items("matrix", "quench_rates_k_ps", "number")
    seeds = r.items("matrix", "seeds", "int")
    for i, q in enumerate(rates):
        if q <= 0:
            raise r.error(f"matrix.quench_rates_k_ps[{i}]", f"must be > 0, got {q:g}")
    for i, seed in enumerate(seeds):
        # numpy refuses a negative seed only when the run starts, after its row exists.
        if not 0 <= seed <= MAX_SEED:
            raise r.error(f"matrix.seeds[{i}]", f"must be in [0, {MAX_SEED}], got {seed}")
    for i, x in enumerate(xs):
        try:
            per_formula_unit(x)
        except ValueError as exc:
            raise r.error(f"matrix.x[{i}]", str(exc)) from None

    # A required section: the protocol is part of every run's identity (its content hash), so
    # a spec that forgot it would silently create a different set of runs.
    r.section("protocol", required=True)
    proto: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        v = r.value("protocol", key, _kind_of(key))
        if v is not None:
            proto[key] = v

    protocols = _parse_protocols(r, data, path)

    r.section("properties", required=False)
    for key in PROPERTY_KEYS:
        v = r.value("properties", key, _kind_of(key))
        if v is not None:
            proto[key] = v
    elastic = bool(proto.pop("elastic", False))
    crystal_raw = r.value("properties", "crystal", "strlist", default=())
    crystal: list[Path] = []
    for i, f in enumerate(crystal_raw):
        cp = Path(f) if Path(f).is_absolute() else path.parent / f
        if not cp.is_file():
            raise r.error(f"properties.crystal[{i}]", f"structure file {f!r} does not exist")
        crystal.append(cp.absolute())

    resources = _parse_resources(r, path)
    cluster = _parse_cluster(r)
    ignored = tuple(sorted(_unknown_keys(data, r.used)))
    spec = CampaignSpec(
        path=path,
        name=name,
        mlips=mlips,
        x=xs,
        quench_rates_k_ps=rates,
        seeds=seeds,
        protocol=proto,
        protocols=protocols,
        elastic=elastic,
        crystal=tuple(crystal),
        resources=resources,
        cluster=cluster,
        ignored_keys=ignored,
    )
    _check_matrix(spec, r)
    return spec


def _parse_resources(r: _Reader, path: Path) -> Resources:
    r.section("resources", required=False)
    threads = r.value("resources", "threads_per_run", "int", default=1)
    if threads < 1:
        raise r.error("resources.threads_per_run", "must be >= 1")
    retries = r.value("resources", "retries", "int", default=DEFAULT_RETRIES)
    if retries < 0:
        raise r.error("resources.retries", "must be >= 0")
    stale = r.value("resources", "stale_after_s", "number", default=DEFAULT_STALE_AFTER_S)
    if stale <= 0:
        raise r.error("resources.stale_after_s", "must be > 0")
    ck = r.value("resources", "checkpoint_dir", "str")
    ckp = None
    if ck is not None:
        ckp = Path(ck) if Path(ck).is_absolute() else (path.parent / ck)
        ckp = ckp.absolute()
    return Resources(
        threads_per_run=threads,
        retries=retries,
        memory=r.value("resources", "memory", "str"),
        walltime=r.value("resources", "walltime", "str"),
        stale_after_s=stale,
        checkpoint_dir=ckp,
    )


def _parse_cluster(r: _Reader) -> ClusterSpec:
    sec = r.section("cluster", required=False)
    if not sec:
        return ClusterSpec()
    kind = r.value("cluster", "kind", "str", required=True)
    if kind not in CLUSTER_KINDS:
        raise r.error("cluster.kind", f"must be one of {', '.join(CLUSTER_KINDS)}, not {kind!r}")
    processes = r.value("cluster", "processes", "int", default=1)
    if processes < 1:
        raise r.error("cluster.processes", "must be >= 1")
    jobs = r.value("cluster", "jobs", "int")
    if jobs is not None and jobs < 1:
        raise r.error("cluster.jobs", "must be >= 1")
    s = {
        k: r.value("cluster", k, "str")
        for k in (
            "queue",
            "account",
            "walltime",
            "memory",
            "python",
            "interface",
            "local_directory",
            "log_directory",
        )
    }
    return ClusterSpec(
        kind=kind,
        processes=processes,
        jobs=jobs,
        job_extra_directives=r.value("cluster", "job_extra_directives", "strlist", default=()),
        job_script_prologue=r.value("cluster", "job_script_prologue", "strlist", default=()),
        env_resources=r.value("cluster", "env_resources", "bool", default=False),
        **s,
    )


def _unknown_keys(data: Mapping[str, Any], used: set[str]) -> Iterable[str]:
    for sec, table in data.items():
        if sec not in used:
            yield f"[{sec}]"
            continue
        if isinstance(table, dict):
            for key in table:
                if f"{sec}.{key}" not in used:
                    yield f"{sec}.{key}"


def _parse_protocols(r: _Reader, data: Mapping[str, Any], path: Path) -> tuple[Protocol, ...]:
    """The protocol axis: ``[matrix] protocols`` (presets or files) or the [protocol] section's
    ``preset`` / ``file`` / ``[[protocol.stage]]``, times ``[matrix] dispersion``."""
    sec = data.get("protocol", {})
    preset_name = r.value("protocol", "preset", "str")
    file_name = r.value("protocol", "file", "str")
    r.used.add("protocol.stage")
    r.used.add("protocol.name")
    listed = r.value("matrix", "protocols", "strlist")
    if sum(v is not None for v in (preset_name, file_name, listed)) > 1:
        raise r.error(
            "protocol.preset", "give one of protocol.preset, protocol.file, matrix.protocols"
        )

    def load(ref: str, where: str, *, file: bool = False) -> Protocol:
        """A preset, or a protocol file relative to the spec."""
        try:
            if file or ref.endswith(".toml"):
                return load_protocol_file(
                    Path(ref) if Path(ref).is_absolute() else path.parent / ref
                )
            return preset(ref)
        except BadInput as exc:
            raise r.error(where, exc.render(None)) from None

    bases: list[Protocol]
    if "stage" in sec:
        mapping = {"stage": sec["stage"], "name": sec.get("name", "campaign")}
        if preset_name is not None:
            mapping["preset"] = preset_name
        try:
            bases = [protocol_from_mapping(mapping, name=str(mapping["name"]), where="protocol.")]
        except BadInput as exc:
            raise r.error(exc.field or "[protocol]", exc.detail) from None
    elif listed is not None:
        if not listed:
            raise r.error("matrix.protocols", "must not be empty")
        if len(set(listed)) != len(listed):
            raise r.error("matrix.protocols", "duplicate protocol")
        bases = [load(ref, f"matrix.protocols[{i}]") for i, ref in enumerate(listed)]
    elif file_name is not None:
        bases = [load(file_name, "protocol.file", file=True)]
    else:
        bases = [load(preset_name or "default", "protocol.preset")]
    disp = r.value("matrix", "dispersion", "strlist")
    if disp is None:
        return tuple(bases)
    for i, d in enumerate(disp):
        if d not in DISPERSIONS:
            raise r.error(f"matrix.dispersion[{i}]", f"must be none or d3, got {d!r}")
    if len(set(disp)) != len(disp) or not disp:
        raise r.error("matrix.dispersion", "must be a non-empty list without duplicates")
    if "dispersion" in sec:
        raise r.error("protocol.dispersion", "give dispersion in [protocol] or [matrix], not both")
    # Through the run-option path, so the protocols of the axis get distinct names
    # ("default (dispersion=d3)"), as `run meltquench --dispersion d3` names its protocol.
    return tuple(resolve(b, {"dispersion": d}) for b in bases for d in disp)


def _check_matrix(spec: CampaignSpec, r: _Reader) -> None:
    """Refuse before anything is written: every (x, quench rate, protocol) must make a valid
    run. The checks are MeltQuenchParams' own (one validation path with `run meltquench`);
    x = 0 fits any cell, and the seed and MLIP do not change what is checked."""
    for proto in spec.protocol_axis():
        for i, q in enumerate(spec.quench_rates_k_ps):
            try:
                params = make_params(spec, spec.mlips[0], 0.0, q, spec.seeds[0], proto)
            except BadInput as exc:  # e.g. flush_every not a multiple of thermo_every
                if exc.field == "quench_rate_k_ps":  # a rate too slow for the step bound
                    raise r.error(f"matrix.quench_rates_k_ps[{i}]", exc.detail) from None
                where = f"protocol.{exc.field}" if exc.field else "[protocol]"
                raise r.error(where, exc.detail if exc.field else exc.message) from None
        fu = params.spec.formula_units
        for i, x in enumerate(spec.x):
            try:
                counts_for(x, fu)
            except ValueError as exc:
                raise r.error(f"matrix.x[{i}]", f"{exc} (protocol.formula_units = {fu})") from None


def check_mlips(spec: CampaignSpec, engine: Engine) -> dict[str, Any]:
    """The spec's MLIP records by name; an unknown name is bad input naming the key."""
    from sqlmodel import Session, select

    from glassbench.schema import MLIP

    with Session(engine) as s:
        rows = {m.name: m for m in s.exec(select(MLIP).where(MLIP.name.in_(spec.mlips))).all()}  # type: ignore[attr-defined]
        for m in rows.values():
            s.expunge(m)
    for i, name in enumerate(spec.mlips):
        if name not in rows:
            raise BadInput(
                f"unknown MLIP {name!r} (register it with `glassbench mlip add`)",
                source=str(spec.path),
                where=f"matrix.mlips[{i}]",
            )
    return rows
