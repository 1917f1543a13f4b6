"""The study's matrix as a campaign (issue 15): the spec loads through the campaign loader,
states its true size and step counts, and the reproduction page registers every MLIP it names
under the same name and quotes the same numbers."""

from __future__ import annotations

import re
from pathlib import Path

from glassbench.campaigns import load_spec

ROOT = Path(__file__).parents[2]
SPEC = ROOT / "examples" / "study-bertani-pedone-2026.toml"
DOC = ROOT / "docs" / "reproduce-bertani-pedone-2026.md"


def test_study_spec_size_and_steps_are_what_its_files_say() -> None:
    spec = load_spec(SPEC)
    params = spec.params()
    mlips = sorted({p.mlip for p in params})
    xs = sorted({p.x for p in params})
    rates = sorted({p.quench_rate_k_ps for p in params})
    seeds = sorted({p.seed for p in params})
    assert spec.size == len(params) == len(mlips) * len(xs) * len(rates) * len(seeds)
    assert xs == [0.5 * i for i in range(8)] and rates == [0.5, 5.0]
    steps = {p.quench_rate_k_ps: p.total_steps for p in params}
    text, doc = SPEC.read_text(), DOC.read_text()
    for where in (text, doc):
        assert f"{spec.size} runs" in where
        assert f"{steps[0.5]:,}" in where and f"{steps[5.0]:,}" in where
    # The quench alone: 1500 K at 0.5 K/ps is 3 ns of 1 fs steps.
    assert steps[0.5] - steps[5.0] == round(1500 / 0.5 * 1000) - round(1500 / 5.0 * 1000)


def test_doc_registers_every_mlip_of_the_spec() -> None:
    spec = load_spec(SPEC)
    names = {p.mlip for p in spec.params()}
    registered = set(re.findall(r"glassbench mlip add (\S+) ", DOC.read_text()))
    assert names == registered


def test_headline_numbers_are_marked_unverified() -> None:
    doc = DOC.read_text()
    table = doc.split("| MLIP | Young's modulus MAE (GPa)", 1)[1].split("\n\n", 1)[0]
    assert "| FT-MP0 | 1.6 | 2.2 |" in table
    after = doc.split("| MLIP | Young's modulus MAE (GPa)", 1)[1].split("\n\n", 2)[1]
    assert after.startswith("**Quoted, unverified here**")
