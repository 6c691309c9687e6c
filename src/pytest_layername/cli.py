"""The ``layername`` command line.

Each subcommand lives with the code it drives; this module imports only the one that runs, so
``layername gate`` and ``layername matrix`` work where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import NoReturn

DESCRIPTION = "pytest-layername: layer-name compile testing, the compatibility matrix and its gate."

#: subcommand -> (module that adds its arguments and ``func``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": (".core.environment", "torch version, opaque support, auto mode, device"),
    "compile-stats": (".compile.measure", "compile a reference model and print its compile statistics"),
    "bench": (".bench.runner", "cold compile time and pieces versus layer count, string against opaque"),
    "audit": (".checks.audit_cli", "list ops and call sites that still pass layer names as strings"),
    "matrix": (".release.matrix", "list the matrix cells, or print them as a GitHub Actions matrix"),
    "cell": (".release.cell", "run one matrix cell's suite in this interpreter (no nox, no install)"),
    "gate": (".release.gate", "judge the matrix cells' reports: one fail-closed pass/fail decision"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``layername gate: error: ... (see --help)``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its arguments (and imports its module)."""
    parser = _Parser(prog="layername", description=DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('pytest-layername')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(usage_errors=())
        if name == chosen:
            importlib.import_module(module, __package__).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except args.usage_errors as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return 2
