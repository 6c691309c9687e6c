"""Run one matrix cell in the current interpreter: ``layername cell NAME``.

The interpreter must hold the cell's torch and this package (a nox venv, or, for ``install =
"preinstalled"`` cells, the environment a GPU image or vendor container ships). The runner probes torch
in a subprocess, checks the version against the cell's spec and the device, runs the reference suite in
the cell's modes on the cell's device with the JSON report and JUnit XML, then checks the detected mode.
A missing device writes a skip marker (the gate shows it), never a report. Needs no torch itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .matrix import (
    DEFAULT_MATRIX,
    DEFAULT_REPORTS_DIR,
    Cell,
    MatrixError,
    device_available,
    load_matrix,
    write_skip_marker,
)

PROBE = (
    "import json, torch; from pytest_layername.core.environment import probe; "
    "print(json.dumps({**probe(), 'torch_full': torch.__version__}))"
)
SKIPPED = 3  # exit status of a cell skipped for a missing device


class CellError(RuntimeError):
    """The cell could not run or its environment is wrong; the message says which and why."""


def cell_env(cell: Cell) -> dict[str, str]:
    """The environment the suite runs in: GPUs hidden from CPU cells."""
    env = dict(os.environ)
    if cell.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def probe(cell: Cell, python: str = sys.executable) -> dict[str, object]:
    """What the interpreter's torch says about itself (version, mode ``auto`` picks, device)."""
    done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, env=cell_env(cell), check=False)
    if done.returncode != 0:
        raise CellError(f"{cell.name}: probing torch failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_environment(cell: Cell, info: dict[str, object]) -> None:
    """The installed torch satisfies the cell's spec and sees the cell's device."""
    if not cell.allows(str(info["torch_full"])):
        where = "the environment's own torch" if cell.install.preinstalled else "installed torch"
        raise CellError(f"{cell.name}: {where} {info['torch_full']} is not {cell.requirement}")
    if cell.device == "cuda" and not info["cuda_available"]:
        raise CellError(f"{cell.name}: torch {info['torch_full']} sees no CUDA device (a CPU-only build?)")


def pytest_command(cell: Cell, reports_dir: Path, python: str = sys.executable, extra: Sequence[str] = ()) -> list[str]:
    """The suite's command line for ``cell``: the whole suite (a cell's pytest_args may narrow it) in its modes,
    on its device, with its report, JUnit XML and pytest_args."""
    return [
        python,
        "-m",
        "pytest",
        "--pyargs",
        "pytest_layername.suite",
        "-p",
        "no:cacheprovider",
        "-m",
        "",  # the whole suite, layername_slow included, whatever the checkout's addopts deselect
        f"--layername-mode={cell.mode_option}",
        f"--layername-device={cell.device}",
        f"--layername-report={cell.report_path(reports_dir)}",
        f"--junitxml={cell.junit_path(reports_dir)}",
        *cell.pytest_args,
        *extra,
    ]


def run_cell(cell: Cell, reports_dir: Path, python: str = sys.executable, extra: Sequence[str] = (), log=print) -> int:
    """Run ``cell``: 0 passed, 1 the suite failed, :data:`SKIPPED` no device; :class:`CellError` otherwise."""
    for stale in (cell.report_path(reports_dir), cell.junit_path(reports_dir), cell.skip_marker_path(reports_dir)):
        stale.unlink(missing_ok=True)  # a stale report from an earlier run must never pass for this one
    present, why = device_available(cell.device)
    if not present:
        marker = write_skip_marker(cell, reports_dir, why)
        log(f"{cell.name}: skipped: {why} (wrote {marker}; the gate reports the cell NOT GATED, --strict fails it)")
        return SKIPPED
    info = probe(cell, python)
    log(f"{cell.name}: torch {info['torch_full']}, auto mode {info['auto_mode']}, device {info['device']}")
    check_environment(cell, info)
    command = pytest_command(cell, reports_dir, python, extra)
    log(shlex.join(command))  # copy-pasteable: the empty -m shows as ''
    start = time.perf_counter()
    status = subprocess.run(command, env=cell_env(cell), check=False).returncode
    log(f"{cell.name}: suite finished with exit {status} in {time.perf_counter() - start:.0f} s")
    report = cell.report_path(reports_dir)
    if not report.is_file():
        raise CellError(f"{cell.name}: pytest wrote no report {report}; the gate will count this cell as missing")
    detected = json.loads(report.read_text(encoding="utf-8"))["run"].get("detected_mode")
    if detected != cell.expected_mode:
        raise CellError(
            f"{cell.name}: torch {info['torch_full']} detected mode {detected!r}, not {cell.expected_mode!r}"
        )
    log(f"{cell.name}: detected mode {detected} as expected; report {report}")
    return 0 if status == 0 else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername cell``."""
    p.add_argument("name", help="cell name in the matrix file")
    p.add_argument("--matrix", default=DEFAULT_MATRIX, help="matrix file (default: %(default)s)")
    p.add_argument("--reports", default=DEFAULT_REPORTS_DIR, help="reports folder (default: %(default)s)")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments as one string, e.g. '-n 4 -x'")
    p.set_defaults(func=_cmd_cell)


def _cmd_cell(args: argparse.Namespace) -> int:
    try:
        cell = load_matrix(args.matrix).cell(args.name)
        return run_cell(cell, Path(args.reports), extra=shlex.split(args.pytest_args))
    except (MatrixError, CellError) as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return 2
