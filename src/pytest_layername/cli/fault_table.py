"""``layername fault-table``: the compile-cache fault table of runs, from their JSON reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..release.fault_table import FaultTableError, fault_rows, render_markdown


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername fault-table``."""
    p.add_argument(
        "reports", nargs="+", metavar="[TARGET=]REPORT",
        help="a --layername-report JSON of a run of cache-fault tests, optionally named by what it started "
        "(reference=reports/cache-faults.json engine=reports/vllm-cache-faults.json)",
    )  # fmt: skip
    p.add_argument("--output", type=Path, help="write the Markdown table here instead of printing it")
    p.set_defaults(func=_cmd_fault_table, usage_errors=(FaultTableError, OSError, json.JSONDecodeError))


def _cmd_fault_table(args: argparse.Namespace) -> int:
    rows = []
    for given in args.reports:
        target, _, path = given.rpartition("=")
        rows += fault_rows(json.loads(Path(path).read_text(encoding="utf-8")), target or "-")
    table = render_markdown(rows)
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    else:
        print(table, end="")
    return 0
