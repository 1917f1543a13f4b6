"""Melt-quench protocols as ordered stages: presets, TOML files, overrides, the hashed record.

A :class:`Protocol` is what a run does between its random start and its final frame: the cell
size, the MD timestep and output intervals, the dispersion correction (when the protocol, not
the MLIP's registration, decides it) and a list of :class:`Stage` (melt, quench, anneal,
production), each with its ensemble, thermostat, barostat, temperatures and duration. The
quench stage's duration is the one thing taken from the run key: ``(t_start - t_end) / rate``.

Named presets (``default``, ``study``) and TOML files (``--protocol FILE``; the same tables in a
campaign spec) resolve to one record; the run options of ``glassbench run meltquench``
(``--melt-ps``, ``--t-final``, ...) override the matching stage fields (:data:`OVERRIDES`).
The record that identifies the protocol in the database is :meth:`Protocol.record`: every
field, stages included, content-hashed; the name travels beside it, outside the hash, so two
files with the same stages are the same protocol. See docs/protocol.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from glassbench.errors import BadInput
from glassbench.schema.models import DISPERSION

STAGE_NAMES = ("melt", "quench", "anneal", "production")
ENSEMBLES = ("nvt", "npt")
THERMOSTATS = ("langevin", "nose-hoover", "berendsen")
BAROSTATS = ("mtk", "berendsen")
# The one list of dispersion corrections: the mlip table's CHECK constraint is built from it.
DISPERSIONS = DISPERSION

MAX_STAGES = 100
MAX_NAME = 64
# A microsecond at 1 fs: beyond any melt-quench, and short of a run that would never end
# (a quench rate of 1e-300 K/ps, a timestep of 1e-300 fs).
MAX_STEPS = 1_000_000_000
# 13,000 atoms (13 per formula unit at any x): ten times the largest cell the study needs, and
# well short of a cell whose random start alone would take hours and gigabytes.
MAX_FORMULA_UNITS = 1000
# FIRE steps on the random start: a few hundred suffice; more is a typo, not a relaxation.
MAX_RELAX_STEPS = 100_000

# The documented time constants (docs/protocol.md): ASE's docstrings of NoseHooverChainNVT and
# IsotropicMTKNPT suggest ~100 and ~1000 timesteps for tdamp and pdamp.
TDAMP_FS = 100.0
PDAMP_FS = 1000.0
FRICTION_PER_FS = 0.01
COMPRESSIBILITY_PER_GPA = 0.05


@dataclass(frozen=True)
class Stage:
    """One stage: ``t_end_k`` None means constant temperature; ``duration_ps`` None only for
    the quench, whose duration comes from the run's quench rate."""

    name: str
    ensemble: str = "nvt"
    thermostat: str = "langevin"
    barostat: str | None = None
    t_start_k: float = 300.0
    t_end_k: float | None = None
    duration_ps: float | None = None
    pressure_gpa: float = 0.0
    tdamp_fs: float = TDAMP_FS
    pdamp_fs: float = PDAMP_FS
    friction_per_fs: float = FRICTION_PER_FS
    compressibility_per_gpa: float = COMPRESSIBILITY_PER_GPA

    @property
    def t_final_k(self) -> float:
        return self.t_start_k if self.t_end_k is None else self.t_end_k

    def duration(self, quench_rate_k_ps: float) -> float:
        """Duration in ps; the quench's follows from the rate."""
        if self.duration_ps is not None:
            return self.duration_ps
        return abs(self.t_start_k - self.t_final_k) / quench_rate_k_ps

    def temperature_at(self, fraction: float) -> float:
        """Target temperature a ``fraction`` (0..1) of the way through the stage (linear)."""
        return self.t_start_k + (self.t_final_k - self.t_start_k) * fraction

    def describe(self) -> str:
        t = f"{self.t_start_k:g} K" + ("" if self.t_end_k is None else f" -> {self.t_end_k:g} K")
        dur = "at the run's rate" if self.duration_ps is None else f"{self.duration_ps:g} ps"
        bath = f"{self.thermostat} (tdamp {self.tdamp_fs:g} fs)"
        if self.thermostat == "langevin":
            bath = f"langevin (friction {self.friction_per_fs:g}/fs)"
        baro = ""
        if self.ensemble == "npt":
            baro = f", {self.barostat} barostat at {self.pressure_gpa:g} GPa"
            baro += f" (pdamp {self.pdamp_fs:g} fs)"
            if self.barostat == "berendsen":
                baro += f", compressibility {self.compressibility_per_gpa:g}/GPa"
        return f"{self.name:<10} {self.ensemble.upper()} {t}, {dur}, {bath}{baro}"


@dataclass(frozen=True)
class Protocol:
    """A full protocol. ``dispersion`` None: as the MLIP is registered."""

    name: str
    stages: tuple[Stage, ...]
    formula_units: int = 8
    timestep_fs: float = 1.0
    thermo_every: int = 10
    frame_every: int = 100
    relax_steps: int = 100
    density_g_cm3: float | None = None
    dispersion: str | None = None
    block_frames: int = 5
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        validate(self)

    # --- identity ---------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The hashed record: every field but the name and notes (same stages, same protocol).

        The summary keys (``t_melt_k``, ``melt_ps``, ``t_final_k``, ``anneal_ps``) repeat stage
        values so the protocol table's columns can be queried without parsing JSON.
        """
        d = asdict(self)
        d.pop("name")
        d.pop("notes")
        d["stages"] = [asdict(s) for s in self.stages]
        melt = self.stage("melt")
        anneal = self.stage("anneal")
        d["t_melt_k"] = self.stages[0].t_start_k
        d["melt_ps"] = melt.duration_ps if melt is not None else 0.0
        d["t_final_k"] = self.stages[-1].t_final_k
        d["anneal_ps"] = anneal.duration_ps if anneal is not None else 0.0
        return d

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def window_stage(self) -> str:
        """Observables are averaged over the frames of the last stage (the production window)."""
        return self.stages[-1].name

    @property
    def window_description(self) -> str:
        """The part of the last stage that is averaged: all of a ``production`` stage; the second
        half of any other (the default protocol's NPT anneal is half equilibration)."""
        if self.window_stage == "production":
            return "the production stage"
        return f"the last half of the {self.window_stage} stage"

    def describe(self) -> str:
        """What ``glassbench protocol show`` prints."""
        disp = "as the MLIP is registered" if self.dispersion is None else self.dispersion
        density = "estimated from x" if self.density_g_cm3 is None else f"{self.density_g_cm3:g}"
        lines = [
            f"protocol {self.name}",
            f"  cell          {self.formula_units} formula units, initial density {density}"
            f" g/cm3, {self.relax_steps} FIRE steps on the random start",
            f"  MD            timestep {self.timestep_fs:g} fs, thermo every {self.thermo_every},"
            f" frames every {self.frame_every} steps",
            f"  dispersion    {disp}",
            f"  window        {self.window_description} (its frames and the final frame),"
            f" blocks of {self.block_frames} frames",
            "  stages",
            *(f"    {i + 1}. {s.describe()}" for i, s in enumerate(self.stages)),
        ]
        if self.notes:
            lines.append(f"  notes         {self.notes}")
        return "\n".join(lines)

    def to_mapping(self) -> dict[str, Any]:
        """The TOML-shaped mapping that :func:`protocol_from_mapping` reads back identically."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k == "stages" or v is None or (k == "notes" and not v):
                continue
            out[k] = v
        out["stage"] = [{k: v for k, v in asdict(s).items() if v is not None} for s in self.stages]
        return out

    def to_toml(self) -> str:
        """The protocol as a TOML file that :func:`load_protocol_file` reads back identically."""
        m = self.to_mapping()
        out = [f"{k} = {_toml(v)}" for k, v in m.items() if k != "stage"]
        for st in m["stage"]:
            out.append("\n[[stage]]")
            out.extend(f"{k} = {_toml(v)}" for k, v in st.items())
        return "\n".join(out) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    return str(v)


# --- validation -----------------------------------------------------------------------------


def validate(p: Protocol) -> None:
    """Refuse a protocol that cannot run; BadInput names the field (``stage[2].barostat``)."""

    def bad(fieldname: str, msg: str) -> BadInput:
        return BadInput(msg, field=fieldname)

    if not p.stages:
        raise bad("stages", "a protocol needs at least one stage")
    if len(p.stages) > MAX_STAGES:
        raise bad("stages", f"at most {MAX_STAGES} stages, got {len(p.stages)}")
    if not (0 < len(p.name) <= MAX_NAME) or not p.name.isprintable():
        # The name is stored in protocol.name (64 characters) and printed in one-line messages.
        raise bad("name", f"must be 1-{MAX_NAME} printable characters, got {p.name[:20]!r}...")
    for i, s in enumerate(p.stages):
        where = f"stage[{i + 1}]"
        if s.name not in STAGE_NAMES:
            raise bad(f"{where}.name", f"must be one of {', '.join(STAGE_NAMES)}, got {s.name!r}")
        if s.ensemble not in ENSEMBLES:
            raise bad(f"{where}.ensemble", f"must be nvt or npt, got {s.ensemble!r}")
        if s.thermostat not in THERMOSTATS:
            raise bad(
                f"{where}.thermostat",
                f"must be one of {', '.join(THERMOSTATS)}, got {s.thermostat!r}",
            )
        if s.ensemble == "npt":
            if s.barostat not in BAROSTATS:
                raise bad(
                    f"{where}.barostat", f"an NPT stage needs mtk or berendsen, got {s.barostat!r}"
                )
            if (s.barostat == "berendsen") != (s.thermostat == "berendsen"):
                # ASE couples them: NPTBerendsen is both, IsotropicMTKNPT is Nose-Hoover + MTK.
                raise bad(
                    f"{where}.thermostat",
                    "an NPT stage is berendsen + berendsen or nose-hoover + mtk",
                )
        elif s.barostat is not None:
            raise bad(f"{where}.barostat", "an NVT stage has no barostat")
        for fname in ("t_start_k", "t_end_k"):
            t = getattr(s, fname)
            if t is not None and not (0 < t < 10000 and math.isfinite(t)):
                raise bad(f"{where}.{fname}", f"must be in (0, 10000) K, got {t}")
        if s.name == "quench":
            if s.duration_ps is not None:
                raise bad(f"{where}.duration_ps", "the quench lasts as long as the run's rate says")
            if s.t_end_k is None or s.t_end_k >= s.t_start_k:
                # The same rule as --t-melt/--t-final, which set these two temperatures.
                raise bad("t_melt_k/t_final_k", "need t_melt > t_final > 0 (the quench cools)")
        elif s.duration_ps is None or not (0 <= s.duration_ps < 1e6):
            raise bad(f"{where}.duration_ps", f"must be in [0, 1e6) ps, got {s.duration_ps}")
        for fname in ("tdamp_fs", "pdamp_fs", "friction_per_fs", "compressibility_per_gpa"):
            v = getattr(s, fname)
            if not (v > 0 and math.isfinite(v)):
                raise bad(f"{where}.{fname}", f"must be > 0, got {v}")
        if not (-100 < s.pressure_gpa < 1000):
            raise bad(f"{where}.pressure_gpa", f"must be in (-100, 1000) GPa, got {s.pressure_gpa}")
    if [s.name for s in p.stages].count("quench") != 1:
        raise bad("stages", "a protocol needs exactly one quench stage (its rate is the run's)")
    if not 0 < p.timestep_fs <= 10:
        raise bad("timestep_fs", f"must be in (0, 10], got {p.timestep_fs}")
    if not 1 <= p.formula_units <= MAX_FORMULA_UNITS:
        raise bad(
            "formula_units",
            f"must be in [1, {MAX_FORMULA_UNITS}] ({13 * MAX_FORMULA_UNITS:,} atoms), "
            f"got {p.formula_units}",
        )
    for fname in ("thermo_every", "frame_every", "block_frames"):
        if getattr(p, fname) < 1:
            raise bad(fname, f"must be >= 1, got {getattr(p, fname)}")
    if not 0 <= p.relax_steps <= MAX_RELAX_STEPS:
        raise bad("relax_steps", f"must be in [0, {MAX_RELAX_STEPS}], got {p.relax_steps}")
    if p.density_g_cm3 is not None and not 0.1 <= p.density_g_cm3 <= 20:
        raise bad("density_g_cm3", f"must be in [0.1, 20] g/cm3, got {p.density_g_cm3}")
    if p.dispersion is not None and p.dispersion not in DISPERSIONS:
        raise bad("dispersion", f"must be none or d3, got {p.dispersion!r}")


# --- presets --------------------------------------------------------------------------------


def _default() -> Protocol:
    # The first wave's fixed protocol, kept so its runs can be reproduced: Langevin NVT melt and
    # quench at the starting density, a Berendsen NPT anneal.
    return Protocol(
        name="default",
        stages=(
            Stage("melt", t_start_k=1800.0, duration_ps=10.0),
            Stage("quench", t_start_k=1800.0, t_end_k=300.0),
            Stage(
                "anneal",
                ensemble="npt",
                thermostat="berendsen",
                barostat="berendsen",
                t_start_k=300.0,
                duration_ps=10.0,
            ),
        ),
        notes="the first wave's protocol: volume fixed until the anneal",
    )


def _study() -> Protocol:
    nh = {"thermostat": "nose-hoover"}
    npt = {"ensemble": "npt", "thermostat": "nose-hoover", "barostat": "mtk", "pressure_gpa": 0.0}
    return Protocol(
        name="study",
        stages=(
            Stage("melt", t_start_k=1800.0, duration_ps=10.0, **nh),  # type: ignore[arg-type]
            Stage("quench", t_start_k=1800.0, t_end_k=300.0, **npt),  # type: ignore[arg-type]
            Stage("anneal", t_start_k=300.0, duration_ps=10.0, **npt),  # type: ignore[arg-type]
            Stage("production", t_start_k=300.0, duration_ps=10.0, **npt),  # type: ignore[arg-type]
        ),
        notes=(
            "1800 K liquid, linear quench at the run's rate to 300 K with the volume free, "
            "NPT at 300 K and 0 GPa, then a 300 K NPT production window"
        ),
    )


PRESETS = {"default": _default, "study": _study}


def preset(name: str) -> Protocol:
    try:
        return PRESETS[name]()
    except KeyError:
        raise BadInput(
            f"unknown protocol {name!r}: a preset ({', '.join(PRESETS)}) or a .toml file",
            field="protocol",
        ) from None


# --- TOML -----------------------------------------------------------------------------------

_PROTOCOL_KINDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "formula_units": int,
    "timestep_fs": (int, float),
    "thermo_every": int,
    "frame_every": int,
    "relax_steps": int,
    "density_g_cm3": (int, float),
    "dispersion": str,
    "block_frames": int,
    "notes": str,
}
_STAGE_KINDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "ensemble": str,
    "thermostat": str,
    "barostat": str,
    "t_start_k": (int, float),
    "t_end_k": (int, float),
    "temperature_k": (int, float),
    "duration_ps": (int, float),
    "pressure_gpa": (int, float),
    "tdamp_fs": (int, float),
    "pdamp_fs": (int, float),
    "friction_per_fs": (int, float),
    "compressibility_per_gpa": (int, float),
}


def _typed(where: str, key: str, v: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(v, bool) or not isinstance(v, kind):
        want = kind.__name__ if isinstance(kind, type) else "number"
        raise BadInput(f"must be a {want}, got {v!r}", field=f"{where}{key}")
    value: Any = v  # isinstance against a runtime tuple narrows to object
    return float(value) if kind == (int, float) else value


def protocol_from_mapping(data: Mapping[str, Any], *, name: str, where: str = "") -> Protocol:
    """A protocol from parsed TOML (a protocol file, or a campaign spec's ``[protocol]``).

    ``preset = "study"`` starts from a preset; ``[[stage]]`` tables replace its stages; the
    flat run options (:data:`OVERRIDES`) then apply. Unknown keys are refused.
    """
    base_name = data.get("preset")
    if base_name is not None and not isinstance(base_name, str):
        raise BadInput(f"must be a preset name, got {base_name!r}", field=f"{where}preset")
    base = preset(base_name) if base_name is not None else None
    raw_stages = data.get("stage")
    if raw_stages is None and base is None:
        raise BadInput("a protocol needs [[stage]] tables or a preset", field=f"{where}stage")
    kw: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, v in data.items():
        if key in ("preset", "stage"):
            continue
        if key in _PROTOCOL_KINDS:
            kw[key] = _typed(where, key, v, _PROTOCOL_KINDS[key])
        elif key in OVERRIDES:
            overrides[key] = _typed(where, key, v, (int, float))
        else:
            raise BadInput("unknown protocol key", field=f"{where}{key}")
    stages: tuple[Stage, ...]
    if raw_stages is not None:
        if not isinstance(raw_stages, list) or not all(isinstance(s, dict) for s in raw_stages):
            raise BadInput("must be [[stage]] tables", field=f"{where}stage")
        stages = tuple(_stage(s, f"{where}stage[{i + 1}].") for i, s in enumerate(raw_stages))
    else:
        assert base is not None
        stages = base.stages
    start = base if base is not None else Protocol(name=name, stages=stages)
    proto_name = kw.pop("name", name)
    for k in ("formula_units", "thermo_every", "frame_every", "relax_steps", "block_frames"):
        if k in kw and float(kw[k]) != int(kw[k]):
            raise BadInput(f"must be a whole number, got {kw[k]}", field=f"{where}{k}")
    out = replace(start, name=proto_name, stages=stages, **kw)
    return apply_overrides(out, overrides)


def _stage(d: Mapping[str, Any], where: str) -> Stage:
    kw: dict[str, Any] = {}
    for key, v in d.items():
        if key not in _STAGE_KINDS:
            raise BadInput("unknown stage key", field=f"{where}{key}")
        kw[key] = _typed(where, key, v, _STAGE_KINDS[key])
    if "name" not in kw:
        raise BadInput("every stage needs a name", field=f"{where}name")
    if "temperature_k" in kw:
        if "t_start_k" in kw or "t_end_k" in kw:
            raise BadInput(
                "give temperature_k or t_start_k/t_end_k, not both", field=f"{where}temperature_k"
            )
        kw["t_start_k"] = kw.pop("temperature_k")
    if kw.get("ensemble") == "npt" and "barostat" not in kw:
        kw["barostat"] = "berendsen" if kw.get("thermostat") == "berendsen" else "mtk"
        kw.setdefault("thermostat", "nose-hoover")
    return Stage(**kw)


def load_protocol_file(path: Path) -> Protocol:
    from glassbench.toml_files import read_toml

    data = read_toml(path, what="protocol file")
    try:
        return protocol_from_mapping(data, name=path.stem)
    except BadInput as exc:
        raise BadInput(exc.detail, source=str(path), field=exc.field) from None


def resolve(ref: str | Protocol, overrides: Mapping[str, Any] | None = None) -> Protocol:
    """``ref``: a preset name, a ``.toml`` file, or a Protocol; then the run-option overrides.

    When the overrides change the protocol's record, the result is named after them
    (:func:`overridden_name`): ``default`` with ``--melt-ps 5`` is another protocol, and
    ``run_summary`` must not show both as ``default``.
    """
    if isinstance(ref, Protocol):
        base = ref
    elif ref in PRESETS:
        base = preset(ref)
    elif ref.endswith(".toml") or Path(ref).is_file():
        base = load_protocol_file(Path(ref))
    else:
        base = preset(ref)  # the unknown-name error
    given = tuple(sorted((k, v) for k, v in (overrides or {}).items() if v is not None))
    # The type is part of the key: True == 1, but True is refused and 1 is not.
    typed = tuple((k, type(v).__name__, v) for k, v in given)
    try:
        return _resolved(base, base.notes, typed)
    except TypeError:  # an unhashable value (a list from Python): refused uncached
        return _resolve_uncached(base, dict(given))


@functools.lru_cache(maxsize=256)
def _resolved(base: Protocol, notes: str, typed: tuple[tuple[str, str, Any], ...]) -> Protocol:
    # A campaign builds one MeltQuenchParams per run of its matrix, all with the same protocol
    # and options: naming an overridden protocol costs ~1 ms, 10 s for 10^4 runs uncached.
    # ``notes`` is in the key because protocols that differ only in notes compare equal.
    return _resolve_uncached(base, {k: v for k, _, v in typed})


def _resolve_uncached(base: Protocol, given: Mapping[str, Any]) -> Protocol:
    out = apply_overrides(base, given)
    if not given or out.record() == base.record():
        return out
    return replace(out, name=overridden_name(base, given, out))


def overridden_name(base: Protocol, overrides: Mapping[str, Any], result: Protocol) -> str:
    """The name of ``base`` changed by ``overrides`` into ``result``.

    Readable when it fits the 64 characters of a name: ``default (melt_ps=5, t_final_k=400)``,
    listing the options that changed the record in key order, values written exactly (two
    different protocols never share a name); a base named so already (a campaign's
    ``default (dispersion=d3)``) gets its list extended. Otherwise the base name and the start
    of the record's content hash, which the ``--protocol`` selector also matches, then as many
    of the options as fit: ``default+1a2b3c4d (anneal_ps=0.04, formula_units=2, ...)``.
    """
    base_record = base.record()
    items: dict[str, str] = {}
    root = base.name
    named = re.fullmatch(r"([^+]+) \(([^()]*=[^()]*)\)", base.name)
    if named and not named[2].endswith("..."):
        root = named[1]
        items = dict(i.split("=", 1) for i in named[2].split(", ") if "=" in i)
    for k in sorted(overrides):
        try:
            alone = apply_overrides(base, {k: overrides[k]}).record() != base_record
        except BadInput:  # valid only together with another option (t_melt with t_final)
            alone = True
        if alone:
            items[k] = _exact(overrides[k])
    changed = [f"{k}={v}" for k, v in sorted(items.items())]
    readable = f"{root} ({', '.join(changed)})"
    if changed and len(readable) <= MAX_NAME:
        return readable
    from glassbench.service.repos import content_hash

    digest = content_hash({"kind": "meltquench", **result.record()})[:8]
    head = f"{root[: MAX_NAME - 9]}+{digest}"
    # Whole options only, as many as fit: a value cut short would name another protocol.
    shown: list[str] = []
    for item in changed:
        if len(f"{head} ({', '.join([*shown, item])}, ...)") > MAX_NAME:
            break
        shown.append(item)
    return f"{head} ({', '.join(shown)}, ...)" if shown else head


def _exact(v: Any) -> str:
    """``5`` for 5.0, ``0.1`` for 0.1, and every digit a float needs to read back the same."""
    if isinstance(v, float):
        short = f"{v:g}"
        return short if float(short) == v else repr(v)
    return str(v)


# The name glassbench.api exports (``resolve`` alone says little next to other names).
resolve_protocol = resolve


# --- overrides ------------------------------------------------------------------------------

# Run options (flat, as in `glassbench run meltquench` and the first wave's specs) and what they
# set. The stage-level ones change every stage they match; a preset without that stage ignores
# an override only when its value could not apply (production_ps without a production stage
# is refused).
OVERRIDES: dict[str, str] = {
    "t_melt_k": "melt temperature and quench start (K)",
    "melt_ps": "melt duration (ps)",
    "t_final_k": "quench end and the temperature of every later stage (K)",
    "anneal_ps": "anneal duration (ps)",
    "production_ps": "production duration (ps)",
    "pressure_gpa": "target pressure of every NPT stage (GPa)",
    "friction_per_fs": "Langevin friction of every Langevin stage (1/fs)",
    "taut_fs": "thermostat time constant of every stage (fs)",
    "taup_fs": "barostat time constant of every NPT stage (fs)",
    "compressibility_per_gpa": "compressibility of every Berendsen barostat (1/GPa)",
}
PROTOCOL_FIELDS = (
    "formula_units", "timestep_fs", "thermo_every", "frame_every", "relax_steps",
    "density_g_cm3", "dispersion", "block_frames",
)  # fmt: skip


# The range of each run option, checked here so that an error names the option the user gave
# (``melt_ps``), not the stage field it lands in (``stage[1].duration_ps``): (low, high,
# low included, high included, whole number). The same bounds as :func:`validate`.
_INF = math.inf
OPTION_BOUNDS: dict[str, tuple[float, float, bool, bool, bool]] = {
    "t_melt_k": (0.0, 10000.0, False, False, False),
    "t_final_k": (0.0, 10000.0, False, False, False),
    "melt_ps": (0.0, 1e6, True, False, False),
    "anneal_ps": (0.0, 1e6, True, False, False),
    "production_ps": (0.0, 1e6, True, False, False),
    "pressure_gpa": (-100.0, 1000.0, False, False, False),
    "friction_per_fs": (0.0, _INF, False, False, False),
    "taut_fs": (0.0, _INF, False, False, False),
    "taup_fs": (0.0, _INF, False, False, False),
    "compressibility_per_gpa": (0.0, _INF, False, False, False),
    "formula_units": (1.0, float(MAX_FORMULA_UNITS), True, True, True),
    "timestep_fs": (0.0, 10.0, False, True, False),
    "thermo_every": (1.0, _INF, True, False, True),
    "frame_every": (1.0, _INF, True, False, True),
    "block_frames": (1.0, _INF, True, False, True),
    "relax_steps": (0.0, float(MAX_RELAX_STEPS), True, True, True),
    "density_g_cm3": (0.1, 20.0, True, True, False),
}


def _range_text(lo: float, hi: float, lo_in: bool, hi_in: bool) -> str:
    if hi == _INF:
        return f">= {lo:g}" if lo_in else f"> {lo:g}"
    return f"in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def check_option(key: str, v: Any) -> None:
    """Refuse a run option outside its range (BadInput on the field ``key``)."""
    if key == "dispersion":
        if v not in DISPERSIONS:
            raise BadInput(f"must be none or d3, got {v!r}", field=key)
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise BadInput(f"must be a finite number, got {v!r}", field=key)
    lo, hi, lo_in, hi_in, whole = OPTION_BOUNDS[key]
    inside = (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
    if not inside:
        got = v if isinstance(v, int) else f"{v:g}"
        raise BadInput(f"must be {_range_text(lo, hi, lo_in, hi_in)}, got {got}", field=key)
    if whole and v != int(v):
        raise BadInput(f"must be a whole number, got {v:g}", field=key)


def apply_overrides(p: Protocol, overrides: Mapping[str, Any]) -> Protocol:
    """``p`` with the given run options applied (None values are ignored); the name stays
    (:func:`resolve` names a protocol that run options changed)."""
    o = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(o) - set(OVERRIDES) - set(PROTOCOL_FIELDS)
    if unknown:
        raise BadInput("not a protocol option", field=sorted(unknown)[0])
    for k, v in o.items():
        check_option(k, v)
    if o.get("t_melt_k", math.inf) <= o.get("t_final_k", 0.0):
        raise BadInput("need t_melt > t_final > 0", field="t_melt_k/t_final_k")
    top = {k: o.pop(k) for k in list(o) if k in PROTOCOL_FIELDS}
    stages = list(p.stages)
    names = [s.name for s in stages]
    qi = names.index("quench") if "quench" in names else len(stages)
    for key, stage_name in (
        ("melt_ps", "melt"),
        ("anneal_ps", "anneal"),
        ("production_ps", "production"),
    ):
        if key in o:
            if stage_name not in names:
                if float(o[key]) == 0.0:
                    continue
                raise BadInput(f"protocol {p.name!r} has no {stage_name} stage", field=key)
            for i, s in enumerate(stages):
                if s.name == stage_name:
                    stages[i] = replace(s, duration_ps=float(o[key]))
    if "t_melt_k" in o:
        t = float(o["t_melt_k"])
        for i, s in enumerate(stages[: qi + 1]):
            if s.name == "quench" or s.t_end_k is None:
                stages[i] = replace(s, t_start_k=t)
            else:  # a ramp before the quench: the liquid is held at the new temperature
                stages[i] = replace(s, t_start_k=t, t_end_k=t)
    if "t_final_k" in o:
        t = float(o["t_final_k"])
        for i, s in enumerate(stages):
            if i == qi:
                stages[i] = replace(s, t_end_k=t)
            elif i > qi:
                stages[i] = replace(s, t_start_k=t, t_end_k=None if s.t_end_k is None else t)
    per_stage = {
        "pressure_gpa": ("pressure_gpa", "npt"),
        "friction_per_fs": ("friction_per_fs", "langevin"),
        "taut_fs": ("tdamp_fs", None),
        "taup_fs": ("pdamp_fs", "npt"),
        "compressibility_per_gpa": ("compressibility_per_gpa", "berendsen"),
    }
    for key, (attr, only) in per_stage.items():
        if key not in o:
            continue
        for i, s in enumerate(stages):
            if only is None or only in (s.ensemble, s.thermostat, s.barostat):
                changes: dict[str, Any] = {attr: float(o[key])}
                stages[i] = replace(s, **changes)
    if "formula_units" in top:
        top["formula_units"] = int(top["formula_units"])
    for k in ("thermo_every", "frame_every", "relax_steps", "block_frames"):
        if k in top:
            top[k] = int(top[k])
    return replace(p, stages=tuple(stages), **top)


# --- the schedule of one run ----------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A stage placed on the step axis of one run: steps ``start+1 .. end``."""

    index: int
    stage: Stage
    start: int
    end: int

    @property
    def steps(self) -> int:
        return self.end - self.start

    def temperature_at(self, step: int) -> float:
        if self.steps <= 0:
            return self.stage.t_final_k
        return self.stage.temperature_at(min(max(step - self.start, 0), self.steps) / self.steps)


def window_start(p: Protocol, segments: tuple[Segment, ...]) -> int:
    """First step of the averaging window (:attr:`Protocol.window_description`)."""
    last = segments[-1]
    if last.stage.name == "production":
        return last.start + 1
    return last.start + last.steps // 2 + 1


def schedule(p: Protocol, quench_rate_k_ps: float) -> tuple[Segment, ...]:
    """Each stage's step range; a stage of zero steps is kept (it has no steps to run)."""
    out: list[Segment] = []
    step = 0
    for i, s in enumerate(p.stages):
        steps = s.duration(quench_rate_k_ps) * 1000.0 / p.timestep_fs
        if not steps <= MAX_STEPS - step:
            raise BadInput(
                f"the protocol would run more than {MAX_STEPS:.0e} MD steps (stage {i + 1}, "
                f"{s.name}: {steps:.3g} steps of {p.timestep_fs:g} fs)",
                field="quench_rate_k_ps" if s.name == "quench" else "timestep_fs",
            )
        n = round(steps)
        if s.name == "quench":
            n = max(1, n)
        out.append(Segment(i, s, step, step + n))
        step += n
    return tuple(out)
