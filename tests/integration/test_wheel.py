"""The product is what the wheel installs: `poolsvc` and `workers`, nothing of the checkout.

The wheel is built, installed into a fresh virtual environment outside the
checkout, and run from `/`, where nothing of the checkout can be imported by
accident: the embedded target and `poolctl` must come from the wheel itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _sources(into: Path) -> Path:
    """The checkout's sources, copied: a build writes `build/` and `*.egg-info` beside
    its sources, never into the checkout under test."""
    skip = shutil.ignore_patterns(
        ".git",
        ".venv*",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        ".*_cache",
        ".hypothesis",
        "*.so",  # the accelerated path's extension is built by the wheel, from its source
    )
    shutil.copytree(ROOT, into, ignore=skip)
    return into


def test_the_wheel_holds_the_product_and_runs_on_its_own(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    src = _sources(tmp_path / "src")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = out.glob("poolsvc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"poolsvc", "workers"}
    if "POOLSVC_NO_EXTENSIONS" not in os.environ:  # (a compiler is part of the set-up)
        assert [n for n in names if n.startswith("workers/lane/_lane") and n.endswith(".so")], names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run(
        [
            str(venv / "bin" / "poolsvc"),
            "run",
            "--duration",
            "1",
            "--workers",
            "1",
            "--report",
            str(tmp_path / "r.html"),
        ],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "(embedded target)" in run.stdout and "requests sent" in run.stdout
    path = "accelerated" if "POOLSVC_NO_EXTENSIONS" not in os.environ else "pure"
    assert f"path={path}" in run.stdout  # the extension the wheel built is the one used
    assert "uPlot" in (tmp_path / "r.html").read_text()  # the report's assets are in the wheel
    ctl = subprocess.run(
        [str(venv / "bin" / "poolctl"), "--help"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ctl.returncode == 0 and "control a running poolsvc service" in ctl.stdout
