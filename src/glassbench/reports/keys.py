"""Column keys of every report table, each with its display label and unit.

One enum for all tables (cf. matbench-discovery ``MbdKey``): the string value is the column name
used in DataFrames and CSVs (and, for quantities, the property name of the ``property`` and
``experiment`` tables), while HTML/Markdown headers and figure axes are built from ``label`` and
``unit`` so that a unit is written in exactly one place.
"""

from __future__ import annotations

from enum import StrEnum


class Key(StrEnum):
    """A report column: ``str(key)`` is the column name, ``key.label``/``key.unit`` display it."""

    label: str
    unit: str

    def __new__(cls, value: str, label: str = "", unit: str = "") -> Key:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.label = label or value
        obj.unit = unit
        return obj

    @property
    def header(self) -> str:
        """``label (unit)``, or just the label for dimensionless columns."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    # --- identifiers -------------------------------------------------------------------
    run_id = "run_id", "Run"
    mlip = "mlip", "MLIP"
    x = "x", "x in Na4P2S7-xOx"
    quench_rate = "quench_rate_k_ps", "Quench rate", "K/ps"
    protocol_id = "protocol_id", "Protocol"
    seed = "seed", "Seed"
    series = "series", "Series"
    prop = "property", "Property"
    crystal = "crystal", "Crystal"
    stage = "stage", "Stage"
    step = "step", "Step"
    temperature = "temperature_k", "Temperature", "K"
    dispersion = "dispersion", "Dispersion"

    # --- glass properties (names shared with the `property`/`experiment` tables) ---------
    density = "density_g_cm3", "Density", "g/cm³"
    young = "young_modulus_gpa", "Young's modulus", "GPa"
    bulk = "bulk_modulus_gpa", "Bulk modulus", "GPa"
    shear = "shear_modulus_gpa", "Shear modulus", "GPa"
    poisson = "poisson_ratio", "Poisson ratio"

    # --- fractions of P units (over all P) and of anions (over all S+O) ------------------
    p0 = "p0", "P0 fraction"
    p1 = "p1", "P1 fraction"
    p1_incl_p1p = "p1_incl_p1p", "P1 (incl. P1P) fraction"
    p2 = "p2", "P2 fraction"
    p3 = "p3", "P3 fraction"
    p4 = "p4", "P4 fraction"
    p1p = "p1p", "P1P fraction"
    ppend = "ppend", "P-P chain end fraction"
    # The study's name for three-coordinated P; the project's P3 (three bridging anions) is a
    # different unit, so the two never share a label.
    p3c = "p3c", "P3: (three-coordinated P) fraction"
    p_other = "p_other", "Other P fraction"
    p2es = "p2es", "P2ES fraction"
    ppchain = "ppchain", "P-P chain fraction"
    bs = "bs", "BS fraction"
    nbs = "nbs", "NBS fraction"
    bo = "bo", "BO fraction"
    nbo = "nbo", "NBO fraction"
    free_s = "free_s", "Free S fraction"
    free_o = "free_o", "Free O fraction"
    over_s = "over_s", "Over-coordinated S fraction"
    over_o = "over_o", "Over-coordinated O fraction"
    ss_fraction = "ss_fraction", "S in S-S chains fraction"
    ss_mean_length = "ss_mean_length", "Mean S-S chain length", "S atoms"
    ss_long_share = "ss_long_share", "S-S chains longer than two (share)"
    na_cn = "na_cn", "Na-(S+O) coordination", "neighbours"
    na_cn_s = "na_cn_s", "Na-S coordination", "neighbours"
    na_cn_o = "na_cn_o", "Na-O coordination", "neighbours"
    na_s_share = "na_s_share", "Na-S share of Na coordination"
    na_s_peak = "na_s_peak", "Na-S first g(r) peak", "Å"
    na_o_peak = "na_o_peak", "Na-O first g(r) peak", "Å"
    crystal_volume = "volume_per_formula_unit_a3", "Crystal volume per f.u.", "Å³"

    # --- statistics --------------------------------------------------------------------
    n = "n", "Points"
    n_seeds = "n_seeds", "Seeds"
    mae = "mae", "MAE"
    mean_error = "mean_error", "Mean signed error"
    seed_std = "seed_std_mean", "Mean seed std"
    mae_lo = "mae_ci_lo", "MAE 95 % CI low"
    mae_hi = "mae_ci_hi", "MAE 95 % CI high"
    seed_sd = "seed_sd", "Seed SD"
    mean_abs_z = "mean_abs_z", "Mean |z|"
    overlap = "overlap", "Indistinguishable from"
    sim_mean = "sim_mean", "Simulated (seed mean)"
    sim_std = "sim_std", "Seed std"
    exp_value = "exp_value", "Experiment"
    exp_uncertainty = "exp_uncertainty", "Experimental uncertainty"
    error = "error", "Error (sim - exp)"
    volume = "volume_per_fu_a3", "Relaxed volume per f.u.", "Å³"
    exp_volume = "exp_volume_per_fu_a3", "Experimental volume per f.u.", "Å³"
    deviation_pct = "deviation_pct", "Volume deviation", "%"

    # --- quench-rate extrapolation (reports/extrapolation.py) ---------------------------
    slope = "slope", "Slope per decade of rate"
    intercept = "intercept", "Intercept at 1 K/ps"
    n_rates = "n_rates", "Quench rates"
    n_runs = "n_runs", "Runs"
    lab_rate = "lab_rate_k_ps", "Laboratory rate", "K/ps"
    value_at_lab = "value_at_lab", "Extrapolated value"
    lab_lo = "lab_lo", "Extrapolated 95 % low"
    lab_hi = "lab_hi", "Extrapolated 95 % high"
    extrapolated = "extrapolated", "Extrapolated"
    decades = "decades", "Decades beyond the slowest rate"


# Quantities that can be compared with glass experiments, in report order.
COMPARABLE: tuple[Key, ...] = (
    Key.density, Key.young, Key.bulk, Key.shear, Key.poisson,
    Key.p0, Key.p1, Key.p1_incl_p1p, Key.p2, Key.p1p, Key.p3c, Key.p2es,
    Key.bs, Key.nbs, Key.bo, Key.nbo, Key.na_cn,
)  # fmt: skip

# Figure panels of the trends section (experiment is overlaid where ingested).
TREND_PANELS: dict[str, tuple[Key, ...]] = {
    "Density and elastic moduli": (Key.density, Key.young, Key.bulk, Key.shear),
    "P speciation (31P NMR units)": (Key.p0, Key.p1_incl_p1p, Key.p2, Key.p1p),
    "Bridging and non-bridging anions": (Key.bs, Key.bo, Key.nbs, Key.nbo),
    "Na coordination": (Key.na_cn,),
}

# Edge sharing, P-P bonds and three-coordinated P, each as a fraction of all P.
EDGE_PP_UNITS: tuple[Key, ...] = (Key.p2es, Key.ppchain, Key.ppend, Key.p3c)

# S-S chains as the study's supplementary Table S3 reports them.
SS_CHAINS: tuple[Key, ...] = (Key.ss_fraction, Key.ss_mean_length, Key.ss_long_share)

# Na environment as the study's supplementary Table S4 reports it, with the coordination numbers.
NA_ENVIRONMENT: tuple[Key, ...] = (
    Key.na_s_peak, Key.na_o_peak, Key.na_s_share, Key.na_cn, Key.na_cn_s, Key.na_cn_o,
)  # fmt: skip

# The disjoint P classes and anion classes, as stored (docs/speciation.md).
P_UNITS: tuple[Key, ...] = (
    Key.p0, Key.p1, Key.p2, Key.p3, Key.p4, Key.p1p, Key.ppend, Key.p3c, Key.p_other,
)  # fmt: skip
ANION_UNITS: tuple[Key, ...] = (
    Key.bs, Key.nbs, Key.bo, Key.nbo, Key.free_s, Key.free_o, Key.over_s, Key.over_o,
)  # fmt: skip

# Traced during the quench, per frame: one figure per group. The P2ES and PPchain flags are
# drawn dotted beside the disjoint P units. The Na-S share (Na-S over all Na contacts, i.e. the
# Na-S coordination over the total) is in the traces table, not drawn a second time.
TRACE_FLAGS: tuple[Key, ...] = (Key.p2es, Key.ppchain)
TRACE_PANELS: dict[str, tuple[Key, ...]] = {
    "P units": (*P_UNITS, *TRACE_FLAGS),
    "Anions": ANION_UNITS,
    "Na coordination": (Key.na_cn, Key.na_cn_s, Key.na_cn_o),
}


def key_of(name: str) -> Key | None:
    """The key for a column name, or None for names outside the vocabulary."""
    try:
        return Key(name)
    except ValueError:
        return None
