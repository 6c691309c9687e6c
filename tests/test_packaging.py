"""What users install: the distributions' metadata and files, and the built wheel in clean venvs (one
without torch, one with this machine's torch)."""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pytest_layername.release.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None, reason="needs uv to build distributions and venvs quickly")


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


def test_both_distributions_carry_the_license_py_typed_and_the_metadata(tmp_path: Path) -> None:
    done = _run(UV, "build", "--out-dir", tmp_path, ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,), (sdist,) = tmp_path.glob("*.whl"), tmp_path.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.parser.BytesHeaderParser().parsebytes(
            archive.read(next(n for n in names if n.endswith("/METADATA")))
        )
        license_text = archive.read(next(n for n in names if n.endswith("/licenses/LICENSE")))
    assert "pytest_layername/py.typed" in names
    assert license_text == (ROOT / "LICENSE").read_bytes() and b"Apache License" in license_text
    with tarfile.open(sdist) as archive:
        sdist_names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"LICENSE", "src/pytest_layername/py.typed"} <= sdist_names
    assert metadata["License-Expression"] == "Apache-2.0" and metadata["License-File"] == "LICENSE"
    assert metadata["Author"] and metadata["Maintainer"]
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues"} <= set(urls)
    classifiers = metadata.get_all("Classifier")
    assert "Framework :: Pytest" in classifiers and "Typing :: Typed" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    required = {r.split(";")[0].split(">")[0].split("=")[0].strip() for r in metadata.get_all("Requires-Dist")}
    assert "numpy" in required
    plain = {r.split(";")[0].split(">")[0].strip() for r in metadata.get_all("Requires-Dist") if "extra ==" not in r}
    assert not {"nox", "pytest-xdist"} & plain  # the matrix tools are the [matrix] extra, not run-time needs


@pytest.mark.layername_slow
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


@pytest.mark.layername_slow
def test_plain_install_collects_and_runs_the_shipped_suite(wheel: Path, tmp_path: Path) -> None:
    """The wheel and torch, nothing else asked for: no nox, no xdist, NumPy there (torch does not warn)."""
    import torch

    python = _venv(tmp_path / "venv", wheel, f"torch=={torch.__version__}")
    assert _run(python, "-c", "import nox").returncode != 0 and _run(python, "-c", "import xdist").returncode != 0
    elsewhere = tmp_path / "project"  # a user's project: no checkout, no conftest, no ini of ours
    elsewhere.mkdir()
    suite = [python, "-m", "pytest", "--pyargs", "pytest_layername.suite", "-p", "no:cacheprovider"]
    collected = _run(*suite, "--co", "-q", cwd=elsewhere)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert "error" not in collected.stdout.lower().splitlines()[-1], collected.stdout[-500:]
    ran = _run(*suite, "-q", "--layername-mode=both", "-k", "test_ops", "-W", "error::UserWarning", cwd=elsewhere)
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert " passed" in ran.stdout.splitlines()[-1]
    assert "NumPy" not in ran.stdout + ran.stderr, (ran.stdout + ran.stderr)[-3000:]
