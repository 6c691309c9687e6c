"""The ``layername`` command line: the dispatcher; each subcommand is a module of this package.

A subcommand's module adds its arguments (``add_arguments``) and its ``func``, and calls the library. This
module imports only the one that runs, so ``layername gate`` and ``layername matrix`` work where torch is not
installed. Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import NoReturn

DESCRIPTION = "pytest-layername: layer-name compile testing, the compatibility matrix and its gate."

__all__ = ["COMMANDS", "CommandError", "build_parser", "full_parser", "main"]

#: subcommand -> (module of this package that adds its arguments and ``func``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": (".probe", "torch version, opaque support, auto mode, device"),
    "compile-stats": (".compile_stats", "compile a reference model and print its compile statistics"),
    "bench": (".bench", "cold compile time and pieces versus layer count, string against opaque"),
    "audit": (".audit", "list ops and call sites that still pass layer names as strings"),
    "matrix": (".matrix", "list the matrix cells, or print them as a GitHub Actions matrix"),
    "cell": (".cell", "run one matrix cell's suite in this interpreter (no nox, no install)"),
    "gate": (".gate", "judge the matrix cells' reports: one fail-closed pass/fail decision"),
    "docs": (".docs", "write docs/reference/ from the code and check the docs' relative links"),
    "fault-table": (".fault_table", "the compile-cache fault table of one run, from its JSON report"),
}


class CommandError(Exception):
    """A subcommand's error: ``layername: error: MESSAGE`` on stderr and exit ``status`` (2, bad input)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``layername gate: error: ... (see --help)``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parsers(chosen: str | None, every: bool) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(prog="layername", description=DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('pytest-layername')}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}
    for name, (module, help_text) in COMMANDS.items():
        p = commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(usage_errors=())
        if every or name == chosen:
            importlib.import_module(module, __package__).add_arguments(p)
    return parser, commands


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its arguments (and imports its module)."""
    return _parsers(next((word for word in argv if not word.startswith("-")), None), every=False)[0]


def full_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser with every subcommand's arguments, and each subcommand's parser (imports every command's
    module, torch included): what the reference page of the command line is made from."""
    return _parsers(None, every=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``layername ARGV``; a :class:`CommandError` or one of the subcommand's ``usage_errors`` is one
    ``layername: error:`` line and its exit status (2 for usage errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except (CommandError, *args.usage_errors) as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return error.status if isinstance(error, CommandError) else 2
