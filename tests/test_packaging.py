"""What users install: the built wheel, in clean venvs (one without torch, one with this machine's torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_layername.release.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
pytestmark = [pytest.mark.layername_slow, pytest.mark.skipif(UV is None, reason="needs uv to build venvs quickly")]


def _run(*command: str | Path, cwd: Path = ROOT, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def _venv(path: Path, *requirements: str | Path, no_deps: bool = False) -> Path:
    assert _run(UV, "venv", "--python", sys.executable, path).returncode == 0
    python = path / "bin" / "python"
    links = [arg for link in os.environ.get("PIP_FIND_LINKS", "").split() for arg in ("--find-links", link)]
    done = _run(UV, "pip", "install", "--python", python, *(["--no-deps"] if no_deps else []), *links, *requirements)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))


def test_release_tools_run_in_a_venv_without_torch(wheel: Path, tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv", wheel, no_deps=True)
    deps = _run(UV, "pip", "install", "--python", python, "packaging", "jsonschema")
    assert deps.returncode == 0, deps.stderr
    assert _run(python, "-c", "import torch").returncode != 0  # the control: there is no torch here
    assert _run(python, "-c", "import pytest_layername.release.gate").returncode == 0
    empty = tmp_path / "reports"
    empty.mkdir()
    done = _run(python, "-m", "pytest_layername", "gate", "--matrix", "matrix.toml", empty)
    assert done.returncode == 1, done.stderr
    assert "Error" not in done.stderr and "FAIL" in done.stdout, done.stdout + done.stderr
    assert "MISSING" in done.stdout.upper()


def test_plain_install_collects_and_runs_the_shipped_suite(wheel: Path, tmp_path: Path) -> None:
    python = _venv(tmp_path / "venv", wheel, f"torch=={torch.__version__}")
    elsewhere = tmp_path / "project"  # a user's project: no checkout, no conftest, no ini of ours
    elsewhere.mkdir()
    suite = [python, "-m", "pytest", "--pyargs", "pytest_layername.suite", "-p", "no:cacheprovider"]
    collected = _run(*suite, "--co", "-q", cwd=elsewhere)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert "error" not in collected.stdout.lower().splitlines()[-1], collected.stdout[-500:]
    ran = _run(*suite, "-q", "--layername-mode=both", "-k", "test_ops", cwd=elsewhere)
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert " passed" in ran.stdout.splitlines()[-1]
