"""``layername gate``: judge the matrix cells' reports, print the verdict, write its markdown (no torch)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..release.gate import (
    DEFAULT_MAX_AGE_DAYS,
    Expectations,
    GateUsageError,
    format_markdown,
    format_text,
    run_gate,
)
from ..release.matrix import DEFAULT_MATRIX, MatrixError
from . import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername gate``."""
    p.add_argument("reports_dir", metavar="REPORTS_DIR", help="folder holding <cell>.json reports")
    p.add_argument("--matrix", default=DEFAULT_MATRIX, help="matrix file (default: %(default)s)")
    p.add_argument("--tier", action="append", default=[], help="cells of this tier are required (repeatable)")
    p.add_argument("--cell", action="append", default=[], help="this cell is required (repeatable)")
    p.add_argument("--markdown", help="markdown summary path (default: REPORTS_DIR/gate.md)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="release mode: a required cell skipped for a missing device fails (default: it is reported NOT GATED)",
    )
    p.add_argument(
        "--compat-md", metavar="PATH", help="also write the compatibility table (e.g. docs/compatibility.md)"
    )
    p.add_argument(
        "--commit",
        metavar="REV",
        help="the commit every report must come from (default: HEAD of the git checkout the gate runs in)",
    )
    p.add_argument(
        "--allow-no-commit",
        action="store_true",
        help="accept reports that record no commit (runs outside a git checkout, e.g. a GPU machine's copy of the "
        "tree); also lets the gate run outside a checkout without --commit",
    )
    p.add_argument("--allow-dirty", action="store_true", help="accept reports of runs from a checkout with changes")
    p.add_argument(
        "--max-age-days",
        type=float,
        default=DEFAULT_MAX_AGE_DAYS,
        metavar="DAYS",
        help="reject reports of runs that ended longer ago (default: %(default)s)",
    )
    p.set_defaults(func=_cmd_gate)


def _cmd_gate(args: argparse.Namespace) -> int:
    try:
        folder = Path(args.reports_dir)
        if folder.exists() and not folder.is_dir():
            raise GateUsageError(f"REPORTS_DIR {folder} is not a directory")
        expect = Expectations.resolve(args.commit, args.allow_no_commit, args.allow_dirty, args.max_age_days)
        gate = run_gate(args.matrix, args.reports_dir, args.tier, args.cell, strict=args.strict, expect=expect)
    except (MatrixError, GateUsageError) as error:
        raise CommandError(str(error)) from None
    print(format_text(gate), end="")
    markdown = format_markdown(gate)
    summary_path = Path(args.markdown) if args.markdown else Path(args.reports_dir) / "gate.md"
    try:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(markdown, encoding="utf-8")
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(markdown)
        if args.compat_md:
            from ..release.compat_table import render

            Path(args.compat_md).parent.mkdir(parents=True, exist_ok=True)
            Path(args.compat_md).write_text(render(gate), encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot write the gate summary: {error}") from None
    return 0 if gate.passed else 1
