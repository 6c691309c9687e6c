"""``layername matrix``: list the matrix cells, or print them as a GitHub Actions matrix (no torch)."""

from __future__ import annotations

import argparse
import json

from ..release.matrix import DEFAULT_MATRIX, MatrixError, load_matrix
from . import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername matrix``."""
    p.add_argument("--matrix", default=DEFAULT_MATRIX, help="matrix file (default: %(default)s)")
    p.add_argument("--tier", action="append", default=[], help="only cells of this tier (repeatable)")
    p.add_argument("--cell", action="append", default=[], help="only this cell (repeatable)")
    p.add_argument("--github", action="store_true", help='print {"include": [...]} JSON for strategy.matrix')
    p.set_defaults(func=_cmd_matrix)


def _cmd_matrix(args: argparse.Namespace) -> int:
    try:
        matrix = load_matrix(args.matrix)
        cells = matrix.select(args.tier, args.cell)
    except MatrixError as error:
        raise CommandError(str(error)) from None
    if args.github:
        print(json.dumps(matrix.github_matrix(args.tier, args.cell), separators=(",", ":")))
        return 0
    rows = [("cell", "torch", "modes", "device", "tier", "budgets")]
    for c in cells:
        budgets = " ".join(f"{k}={v}" for k, v in c.budgets.items())
        budgets += "".join(f" {m}:" + ",".join(f"{k}={v}" for k, v in b.items()) for m, b in c.mode_budgets.items())
        rows.append((c.name, str(c.torch), ",".join(c.run_modes), c.device, c.tier, budgets))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0
