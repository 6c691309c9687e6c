"""``layername cell NAME``: run one matrix cell's suite in this interpreter (no nox, no install, no torch here)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..release.cell import CellError, run_cell, unaccepted_arguments
from ..release.matrix import DEFAULT_MATRIX, DEFAULT_REPORTS_DIR, MatrixError, load_matrix
from . import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername cell``."""
    p.add_argument("name", help="cell name in the matrix file")
    p.add_argument("--matrix", default=DEFAULT_MATRIX, help="matrix file (default: %(default)s)")
    p.add_argument("--reports", default=DEFAULT_REPORTS_DIR, help="reports folder (default: %(default)s)")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments as one string, e.g. '-n 4 -x'")
    p.set_defaults(func=_cmd_cell, usage_errors=(MatrixError, CellError))


def _extra_arguments(text: str) -> list[str]:
    try:
        extra = shlex.split(text)
    except ValueError as error:
        raise CellError(f"--pytest-args {text[:80]!r}: {error} (quote as in a shell)") from None
    if bad := unaccepted_arguments(extra):
        print(
            f"layername: warning: --pytest-args {shlex.join(bad)[:200]} may change which tests run or how they are "
            "judged: the gate will not accept this run's report (only output and -n/--dist options are accepted)",
            file=sys.stderr,
        )
    return extra


def _cmd_cell(args: argparse.Namespace) -> int:
    reports = Path(args.reports)
    try:
        if reports.exists() and not reports.is_dir():
            raise CellError(f"--reports {reports} is not a directory")
        cell = load_matrix(args.matrix).cell(args.name)
        return run_cell(cell, reports, extra=_extra_arguments(args.pytest_args))
    except OSError as error:
        raise CommandError(f"{error.filename or args.reports}: {error.strerror or error}") from None
