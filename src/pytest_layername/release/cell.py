"""Run one matrix cell in the current interpreter: ``layername cell NAME``.

The interpreter must hold the cell's torch and this package (a nox venv, or, for ``install =
"preinstalled"`` cells, the environment a GPU image or vendor container ships). The runner removes the
cell's old results, probes torch in a subprocess, checks the version against the cell's spec and the
device, runs the reference suite in the cell's modes on the cell's device with the JSON report and JUnit
XML, then checks the detected mode. A missing device writes a skip marker (the gate shows it), never a
report. Needs no torch itself.

The suite learns which cell it runs from ``--layername-cell=NAME --layername-cell-digest=SHA256`` (the
cell's :attr:`~.matrix.Cell.digest`), which the plugin records in the report; the gate recomputes the
digest from its matrix file. :func:`command_problem` is the gate's check that a report's pytest arguments
are this command's, plus only :data:`ACCEPTED_FLAGS`/:data:`ACCEPTED_OPTIONS` (output and parallelism).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .matrix import (
    Cell,
    device_available,
    write_skip_marker,
)
from .report import ReportError, load_report

PROBE = (
    "import json, torch; from pytest_layername.core.environment import probe; "
    "print(json.dumps({**probe(), 'torch_full': torch.__version__}))"
)
SKIPPED = 3  # exit status of a cell skipped for a missing device
#: Options a cell run may add to its command (``--pytest-args``, ini ``addopts``, ``PYTEST_ADDOPTS``): they
#: change neither which tests run nor how they are judged, only output and xdist parallelism. Anything else
#: (``-k``, ``-x``, ``--ignore``, a path, ...) belongs in the cell's ``pytest_args``, which its digest covers.
ACCEPTED_FLAGS = re.compile(
    r"-[qv]+|-r[A-Za-z]+|-n\w+|-s|-l|--quiet|--verbose|--showlocals|--strict-markers|--no-header|--no-summary"
)
ACCEPTED_OPTIONS = ("--tb", "--color", "--durations", "--durations-min", "--capture", "-n", "--numprocesses", "--dist")
ACCEPTED_PLUGIN_OPTIONS = ("no:cacheprovider",)  # -p VALUE
#: Options of the cell command whose value is the run's own (paths, and the cell and digest the gate checks itself).
RUN_OWN_VALUES = ("--layername-report=", "--junitxml=", "--layername-cell=", "--layername-cell-digest=")
#: Options the cell command sets itself: the same option earlier on the line (a checkout's addopts, such as
#: ``-m "not layername_slow"``) is overridden by the command's value (pytest keeps the last).
SET_BY_THE_COMMAND = ("-m",)


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


def cell_arguments(cell: Cell, reports_dir: Path) -> list[str]:
    """The suite's pytest arguments for ``cell``: the whole suite (a cell's pytest_args may narrow it) in its
    modes, on its device, with its implementation, report and JUnit XML, the cell's name and digest, and its
    own pytest_args."""
    return [
        "--pyargs",
        "pytest_layername.suite",
        "-p",
        "no:cacheprovider",
        "-m",
        "",  # the whole suite, layername_slow included, whatever the checkout's addopts deselect
        f"--layername-mode={cell.mode_option}",
        f"--layername-device={cell.device}",
        f"--layername-impl={cell.impl}",
        *(["--layername-allow-unhoisted"] if cell.allow_unhoisted else []),
        f"--layername-report={cell.report_path(reports_dir)}",
        f"--junitxml={cell.junit_path(reports_dir)}",
        f"--layername-cell={cell.name}",
        f"--layername-cell-digest={cell.digest}",
        *cell.pytest_args,
    ]


def pytest_command(cell: Cell, reports_dir: Path, python: str = sys.executable, extra: Sequence[str] = ()) -> list[str]:
    """The suite's command line for ``cell`` (:func:`cell_arguments`), then ``extra``."""
    return [python, "-m", "pytest", *cell_arguments(cell, reports_dir), *extra]


def unaccepted_arguments(args: Sequence[str]) -> list[str]:
    """The arguments in ``args`` that are not among the accepted output and parallelism options."""
    bad, tokens = [], iter(args)
    for token in tokens:
        name, has_value, _ = token.partition("=")
        if ACCEPTED_FLAGS.fullmatch(token):
            continue
        if name in ACCEPTED_OPTIONS:
            if not has_value and next(tokens, None) is None:
                bad.append(token)
            continue
        if token == "-p":
            value = next(tokens, "")
            if value not in ACCEPTED_PLUGIN_OPTIONS:
                bad.append(f"-p {value}".strip())
            continue
        bad.append(token)
    return bad


def _without_overridden(args: Sequence[str]) -> list[str]:
    """``args`` (what precedes the cell command) less the options the command sets again later."""
    kept, tokens = [], iter(args)
    for token in tokens:
        if token in SET_BY_THE_COMMAND:
            next(tokens, None)
            continue
        kept.append(token)
    return kept


def _same(expected: str, actual: str) -> bool:
    own = next((prefix for prefix in RUN_OWN_VALUES if expected.startswith(prefix)), None)
    return actual.startswith(own) if own else actual == expected


def command_problem(cell: Cell, args: Sequence[str]) -> str | None:
    """Why ``args`` (a report's ``run.pytest_args``) are not ``layername cell``'s command for ``cell`` plus
    accepted options, or None when they are."""
    core = cell_arguments(cell, Path())
    starts = [
        i
        for i in range(len(args) - len(core) + 1)
        if all(_same(want, got) for want, got in zip(core, args[i : i + len(core)], strict=True))
    ]
    if not starts:
        return f"not the command `layername cell {cell.name}` runs for this cell ({shlex.join(core[:8])} ...)"
    rest = [*_without_overridden(args[: starts[0]]), *args[starts[0] + len(core) :]]
    if bad := unaccepted_arguments(rest):
        shown = shlex.join(bad)
        return (
            f"added {shown[:200]}, which may change which tests run or how they are judged (a run may add only "
            "output and -n/--dist options; put others in the cell's pytest_args in the matrix file)"
        )
    return None


def remove_old_results(cell: Cell, reports_dir: Path) -> None:
    """Delete the cell's report, JUnit XML and skip marker: an earlier run's result must never stand for this one."""
    for stale in (cell.report_path(reports_dir), cell.junit_path(reports_dir), cell.skip_marker_path(reports_dir)):
        stale.unlink(missing_ok=True)


def run_cell(cell: Cell, reports_dir: Path, python: str = sys.executable, extra: Sequence[str] = (), log=print) -> int:
    """Run ``cell``: 0 passed, 1 the suite failed, :data:`SKIPPED` no device; :class:`CellError` otherwise."""
    remove_old_results(cell, reports_dir)
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
    try:
        detected = load_report(report)["run"]["detected_mode"]
    except ReportError as error:
        raise CellError(f"{cell.name}: {error}") from None
    if detected != cell.expected_mode:
        raise CellError(
            f"{cell.name}: torch {info['torch_full']} detected mode {detected!r}, not {cell.expected_mode!r}"
        )
    log(f"{cell.name}: detected mode {detected} as expected; report {report}")
    return 0 if status == 0 else 1
