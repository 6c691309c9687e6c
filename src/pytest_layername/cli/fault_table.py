"""``layername fault-table``: the compile-cache fault table of one run, from its JSON report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..release.fault_table import FaultTableError, fault_rows, render_markdown


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername fault-table``."""
    p.add_argument("report", type=Path, help="a --layername-report JSON of a run of the cache-fault tests")
    p.add_argument("--output", type=Path, help="write the Markdown table here instead of printing it")
    p.set_defaults(func=_cmd_fault_table, usage_errors=(FaultTableError, OSError, json.JSONDecodeError))


def _cmd_fault_table(args: argparse.Namespace) -> int:
    table = render_markdown(fault_rows(json.loads(args.report.read_text(encoding="utf-8"))))
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    else:
        print(table, end="")
    return 0
