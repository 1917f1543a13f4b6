"""The calculator factory on real (tiny or shipped) models, and its guards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import glassbench
from glassbench.errors import BadInput, Failure
from glassbench.runners.calculators import (
    check_model_file,
    make_calculator,
    package_versions,
    sha256_file,
)
from tests.conftest import TINY_MACE_SEED, require, require_module

HEAVY = ("torch", "tensorflow", "mace", "e3nn", "deepmd", "chgnet", "sevenn", "tensorpotential")


def _src_dir() -> str:
    return str(Path(glassbench.__file__).resolve().parents[1])


def test_runner_modules_import_no_ml_package() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import glassbench.runners.calculators as c
        import glassbench.runners.crystal, glassbench.runners.elastic
        import glassbench.runners.structure
        import glassbench.testing.synthetic, glassbench.testing.tiny_models
        c.package_versions("mace"); c.package_versions("deepmd")
        heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
        assert not heavy, heavy
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_sha256_file_streams_plain_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"  # spans several read chunks
    f = tmp_path / "m.bin"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_sha256_of_directory_tracks_names_and_contents(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "variables").mkdir(parents=True)
    (a / "saved_model.pb").write_bytes(b"graph")
    (a / "variables" / "v.data").write_bytes(b"weights")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert sha256_file(a) == sha256_file(b)  # location does not matter
    (b / "variables" / "v.data").write_bytes(b"weightz")
    assert sha256_file(a) != sha256_file(b)
    shutil.rmtree(b)
    shutil.copytree(a, b)
    (b / "variables" / "v.data").rename(b / "variables" / "w.data")
    assert sha256_file(a) != sha256_file(b)


def test_check_model_file_refuses_missing_and_changed(tmp_path: Path) -> None:
    f = tmp_path / "graph.pb"
    f.write_bytes(b"model")
    good = hashlib.sha256(b"model").hexdigest()
    assert check_model_file(f, good) == f
    assert check_model_file(f, good.upper()) == f
    with pytest.raises(BadInput, match="changed since registration") as exc:
        check_model_file(f, "0" * 64)
    assert exc.value.exit_code == 2
    assert str(f) in exc.value.message
    with pytest.raises(BadInput, match="does not exist"):
        check_model_file(tmp_path / "nope.pb", good)


def test_unknown_architecture_and_missing_model_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unknown architecture"):
        make_calculator("nequip", "x")
    with pytest.raises(BadInput, match="needs a model file"):
        make_calculator("mace", None)
    with pytest.raises(BadInput, match="does not exist"):
        make_calculator("deepmd", str(tmp_path / "missing.pb"))


@pytest.mark.parametrize(
    ("arch", "module", "model_is_dir"),
    [("grace", "tensorpotential", True), ("sevenn", "sevenn", False), ("deepmd", "deepmd", False)],
)
def test_missing_package_is_failure_with_install_hint(
    tmp_path: Path, arch: str, module: str, model_is_dir: bool
) -> None:
    if find_spec(module) is not None:
        pytest.skip(f"{module} is installed here; the missing-package path is not reachable")
    model = tmp_path / "model"
    if model_is_dir:
        model.mkdir()
    else:
        model.write_bytes(b"x")
    with pytest.raises(Failure) as exc:
        make_calculator(arch, None if arch == "sevenn" else str(model))
    msg = exc.value.message
    assert exc.value.exit_code == 1
    assert "docs/environments.md" in msg
    assert f"glassbench[{arch}]" in msg or "tensorpotential" in msg


def test_package_versions_reads_metadata() -> None:
    v = package_versions("chgnet")
    assert v["ase"] and v["numpy"]
    with pytest.raises(BadInput):
        package_versions("nequip")


def _check_results(atoms: Atoms) -> None:
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    assert np.isfinite(energy)
    assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
    assert stress.shape == (6,) and np.isfinite(stress).all()


def test_mace_tiny_model_through_factory(tiny_mace: Path, glass_cell: Atoms) -> None:
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    calc = make_calculator("mace", str(tiny_mace), expected_sha256=sha256_file(tiny_mace))
    # mace sets this process-wide at import; the factory must put it back.
    assert os.environ.get(key) == before
    glass_cell.calc = calc
    _check_results(glass_cell)
    # Forces are the negative energy gradient (finite difference on one coordinate).
    f = glass_cell.get_forces()[5, 1]
    h = 1e-4
    plus, minus = glass_cell.copy(), glass_cell.copy()
    plus.positions[5, 1] += h
    minus.positions[5, 1] -= h
    plus.calc = minus.calc = calc
    fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
    assert f == pytest.approx(fd, abs=1e-5)


def test_mace_changed_file_is_refused_before_unpickling(
    tiny_mace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    registered = sha256_file(tiny_mace)
    copy = tmp_path / "tampered.model"
    shutil.copy(tiny_mace, copy)
    with open(copy, "ab") as fh:
        fh.write(b"\0")

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not run on an unverified file")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(BadInput, match="changed since registration") as exc:
        make_calculator("mace", str(copy), expected_sha256=registered)
    assert exc.value.exit_code == 2


def test_mace_portable_format_matches_pickled_model(
    tiny_mace: Path, tmp_path: Path, glass_cell: Atoms
) -> None:
    from glassbench.testing.tiny_models import build_tiny_mace

    portable = build_tiny_mace(tmp_path / "tiny.pt", seed=TINY_MACE_SEED, portable=True)
    import torch

    # The portable file holds no code: it loads with weights_only=True.
    assert isinstance(torch.load(portable, weights_only=True), dict)
    e = []
    for path in (tiny_mace, portable):
        atoms = glass_cell.copy()
        atoms.calc = make_calculator("mace", str(path))
        e.append(atoms.get_potential_energy())
    assert e[0] == pytest.approx(e[1], abs=1e-9)


@pytest.mark.parametrize("name", ["0.3.0", "r2scan"])
def test_chgnet_shipped_models(name: str) -> None:
    require_module("chgnet", "pip install torch==2.13.0 && pip install chgnet")
    from glassbench.runners.structure import random_glass

    atoms = random_glass(1.0, 2, seed=1)  # 26 atoms
    atoms.calc = make_calculator("chgnet", name)
    _check_results(atoms)


def test_chgnet_unknown_model_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown CHGNet model"):
        make_calculator("chgnet", "9.9.9")


def _run_in_env(python: str, code: str, *args: str, timeout: float = 300) -> dict[str, object]:
    env = dict(os.environ)
    # The other environment must run the glassbench under test, not another install.
    env["PYTHONPATH"] = _src_dir()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [python, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


_EVAL = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from glassbench.errors import BadInput
    from glassbench.runners.calculators import make_calculator, sha256_file
    from glassbench.runners.structure import random_glass

    arch, model, tampered = sys.argv[1], sys.argv[2], sys.argv[3]
    atoms = random_glass(2.0, 4, seed=5)
    atoms.calc = make_calculator(arch, model, expected_sha256=sha256_file(model))
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    try:
        make_calculator(arch, tampered, expected_sha256=sha256_file(model))
        refused = False
    except BadInput:
        refused = True
    print(json.dumps({
        "energy": float(e), "finite": bool(np.isfinite(f).all() and np.isfinite(s).all()),
        "forces_shape": list(f.shape), "stress_shape": list(s.shape), "n": len(atoms),
        "refused": refused,
    }))
    """
)


def _tampered_copy(model: Path, tmp_path: Path) -> Path:
    out = tmp_path / ("tampered-" + model.name)
    if model.is_dir():
        shutil.copytree(model, out)
        with open(out / "saved_model.pb", "ab") as fh:
            fh.write(b"\0")
    else:
        shutil.copy(model, out)
        with open(out, "ab") as fh:
            fh.write(b"\0")
    return out


@pytest.mark.slow
def test_deepmd_tiny_model_in_its_environment(
    tiny_deepmd_graph: Path, deepmd_python: str, tmp_path: Path
) -> None:
    out = _run_eval(deepmd_python, "deepmd", tiny_deepmd_graph, tmp_path)
    assert out["finite"] is True
    assert isinstance(out["energy"], float) and np.isfinite(out["energy"])
    assert out["forces_shape"] == [out["n"], 3]
    assert out["stress_shape"] == [6]
    assert out["refused"] is True


def _run_eval(python: str, arch: str, model: Path, tmp_path: Path) -> dict[str, object]:
    """Energy, forces, stress and the hash refusal, evaluated by ``python``."""
    tampered = _tampered_copy(model, tmp_path)
    return _run_in_env(python, _EVAL, arch, str(model), str(tampered))


@pytest.mark.slow
def test_grace_tiny_model_in_its_environment(tmp_path: Path) -> None:
    from glassbench.testing.tiny_models import build_tiny_grace, find_grace_python

    py = find_grace_python()
    require(None if py else "no GRACE environment (.venv-grace): scripts/make-envs.sh --grace")
    assert py is not None
    model = build_tiny_grace(tmp_path / "grace-fs", python=py)
    out = _run_eval(py, "grace", model, tmp_path)
    assert out["finite"] and out["refused"] is True
    assert out["forces_shape"] == [out["n"], 3]


def test_env_python_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glassbench.testing import tiny_models

    def fake_python(venv: Path) -> Path:
        py = venv / "bin" / "python"
        py.parent.mkdir(parents=True)
        py.write_text("#!/bin/sh\n")
        py.chmod(0o755)
        return py

    find = tiny_models._find_env_python
    var = "GLASSBENCH_TEST_FAKE_PYTHON"
    monkeypatch.delenv(var, raising=False)
    # A venv next to the running one (.venv and .venv-x are siblings in a checkout).
    sibling = fake_python(tmp_path / ".venv-x")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))
    assert find(var, ".venv-x", "no_such_module_here") == str(sibling)
    # The running interpreter wins when it has the package itself.
    assert find(var, ".venv-x", "json") == sys.executable
    # An explicit variable wins over both, and a wrong one is an error, not a fallback.
    explicit = fake_python(tmp_path / "elsewhere")
    monkeypatch.setenv(var, str(explicit))
    assert find(var, ".venv-x", "json") == str(explicit)
    monkeypatch.setenv(var, str(tmp_path / "missing" / "python"))
    with pytest.raises(BadInput, match=var):
        find(var, ".venv-x", "json")
    monkeypatch.delenv(var)
    assert find(var, ".venv-none-such", "no_such_module_here") is None


@pytest.mark.slow
def test_mace_imports_with_safe_torch_load() -> None:
    require_module("mace", "pip install torch==2.13.0 && pip install mace-torch")
    # e3nn's constants must load through torch's safe loader (slice allow-listed), not
    # through the process-wide TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD that mace sets, which warns.
    code = (
        "import os\n"
        "from glassbench.runners.calculators import _import_mace\n"
        "_import_mace()\n"
        "assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    proc = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
