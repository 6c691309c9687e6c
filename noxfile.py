"""nox sessions: tests, lint, bench, one ``matrix(<cell>)`` per matrix.toml cell, and the release gate.

    nox -l                                      # list sessions (one per matrix cell)
    nox -s "matrix(cpu-torch2.10)" "matrix(cpu-torch2.13)" gate -- --tier ci
    nox -t ci                                   # every cell of tier ci (tags: tier, device, "matrix")
    nox -k "cpu and torch2_13"                  # by keyword: cell names with "-" and "." as "_" are tags
    nox -s matrix gate                          # the release: every cell, then the gate over all of them

Matrix cells ignore positional arguments (a cell is the fixed release definition); ``gate`` passes them
to ``layername gate`` (e.g. ``--tier ci``), ``tests`` to pytest and ``bench`` to ``layername bench``.
``tests``, ``gate`` and ``bench`` run in the environment running nox (install the project there first);
cells get their own venv with the cell's torch, via uv when available so they share one download cache.
Environment: LAYERNAME_MATRIX (matrix file), LAYERNAME_REPORTS_DIR (reports folder, default ``reports``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import nox
from nox.command import CommandFailed

ROOT = Path(__file__).resolve().parent
nox.needs_version = ">=2024.4"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint"]


def _load_matrix_module() -> ModuleType:
    """Import ``pytest_layername.matrix`` by path: it needs no torch, the package's ``__init__`` does."""
    spec = importlib.util.spec_from_file_location("_layername_matrix", ROOT / "src" / "pytest_layername" / "matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


_matrix = _load_matrix_module()
MATRIX_FILE = Path(os.environ.get("LAYERNAME_MATRIX", ROOT / _matrix.DEFAULT_MATRIX)).resolve()
REPORTS_DIR = Path(os.environ.get("LAYERNAME_REPORTS_DIR", ROOT / _matrix.DEFAULT_REPORTS_DIR)).resolve()
MATRIX = _matrix.load_matrix(MATRIX_FILE)

PROBE = (
    "import json, torch; from pytest_layername.cli import probe; "
    "print(json.dumps({**probe(), 'torch_full': torch.__version__}))"
)


def _env_find_links(session: nox.Session) -> list[str]:
    """``--find-links`` for each ``PIP_FIND_LINKS`` entry when uv installs (uv does not read pip's settings)."""
    links = os.environ.get("PIP_FIND_LINKS", "")
    if session.venv_backend != "uv" or os.environ.get("UV_FIND_LINKS") or not links:
        return []
    return [arg for link in links.split() for arg in ("--find-links", link)]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The project's own tests in the current environment."""
    session.run(sys.executable, "-m", "pytest", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check, with the ruff that pyproject's ``lint`` extra names."""
    pyproject = _matrix.tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    session.install(*pyproject["project"]["optional-dependencies"]["lint"])
    session.run("ruff", "check", *session.posargs)
    session.run("ruff", "format", "--check", *session.posargs)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """``layername bench`` in the current environment; arguments after ``--`` go to it."""
    session.run(sys.executable, "-m", "pytest_layername", "bench", *session.posargs, external=True)


@nox.session
@nox.parametrize(
    "cell",
    [nox.param(cell, id=cell.name, tags=[cell.tier, cell.device, cell.keyword, "matrix"]) for cell in MATRIX.cells],
)
def matrix(session: nox.Session, cell: _matrix.Cell) -> None:
    """One matrix cell: install its torch, run the reference suite, check the detected mode."""
    report = cell.report_path(REPORTS_DIR)
    junit = cell.junit_path(REPORTS_DIR)
    for stale in (report, junit, cell.skip_marker_path(REPORTS_DIR)):
        stale.unlink(missing_ok=True)  # a stale report from an earlier run must never pass for this one
    present, why = _matrix.device_available(cell.device)
    if not present:
        marker = _matrix.write_skip_marker(cell, REPORTS_DIR, why)
        session.skip(f"{cell.name}: {why} (wrote {marker}; the gate counts a skipped required cell as a failure)")

    env = {"CUDA_VISIBLE_DEVICES": ""} if cell.device == "cpu" else {}
    session.install(cell.requirement, *cell.install.options(), *_env_find_links(session))
    # torch < 2.11's inductor imports setuptools to build C++ on CPU; pip seeds it into venvs, uv does not.
    session.install("-e", f"{ROOT}[test]", "setuptools", *_env_find_links(session))
    probe = json.loads(session.run("python", "-c", PROBE, env=env, silent=True, stderr=None).strip().splitlines()[-1])
    session.log(f"{cell.name}: torch {probe['torch_full']}, auto mode {probe['auto_mode']}, device {probe['device']}")
    if not cell.allows(probe["torch_full"]):
        session.error(f"{cell.name}: installed torch {probe['torch_full']} is not {cell.requirement}; check install")
    if probe["device"] != cell.device:
        session.error(f"{cell.name}: torch sees device {probe['device']!r}, the cell needs {cell.device!r}")

    pytest_failed = None
    try:
        session.run(
            "python",
            "-m",
            "pytest",
            "--pyargs",
            "pytest_layername.suite",
            "-p",
            "no:cacheprovider",
            "--layername-mode=auto",
            f"--layername-report={report}",
            f"--junitxml={junit}",
            *cell.pytest_args,
            env=env,
        )
    except CommandFailed as error:
        pytest_failed = error
    if not report.is_file():
        session.error(f"{cell.name}: pytest wrote no report {report}; the gate will count this cell as missing")
    detected = json.loads(report.read_text(encoding="utf-8"))["run"].get("detected_mode")
    if detected != cell.expected_mode:
        session.error(
            f"{cell.name}: torch {probe['torch_full']} detected mode {detected!r}, expected {cell.expected_mode!r}"
        )
    if pytest_failed is not None:
        session.error(f"{cell.name}: the suite failed ({pytest_failed.reason}); see {report} and {junit}")
    session.log(f"{cell.name}: detected mode {detected} as expected; report {report}")


@nox.session(venv_backend="none")
def gate(session: nox.Session) -> None:
    """``layername gate`` over the reports folder; arguments after ``--`` (e.g. ``--tier ci``) go to it."""
    session.run(
        sys.executable,
        "-m",
        "pytest_layername",
        "gate",
        "--matrix",
        str(MATRIX_FILE),
        str(REPORTS_DIR),
        *session.posargs,
        external=True,
    )
