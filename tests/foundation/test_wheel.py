"""The migrations ship inside the wheel: `glassbench db upgrade` works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_migrates_outside_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("glassbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "glassbench/migrations/env.py" in names
    assert "glassbench/migrations/script.py.mako" in names
    for rev in ("0001_", "0002_", "0003_", "0004_"):
        assert any(n.startswith(f"glassbench/migrations/versions/{rev}") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # Dependencies come from this test environment's site-packages (a plain path entry: its
    # .pth files, including the editable checkout's, are not processed); glassbench itself
    # comes only from the wheel.
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GLASSBENCH_DATABASE_URL")
    }
    where = subprocess.run(
        [str(py), "-c", "import glassbench; print(glassbench.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(venv) in where and str(ROOT) not in where
    out = subprocess.run(
        [str(venv / "bin" / "glassbench"), "db", "upgrade"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "at revision 0004" in out.stdout
    assert (work / "glassbench.db").exists()
    out = subprocess.run(
        [str(venv / "bin" / "glassbench"), "sql", "SELECT COUNT(*) AS n FROM run_summary"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "(1 row)" in out.stdout, out.stderr
