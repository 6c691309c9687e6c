"""The compile-cache fault table, from the JSON reports of runs (no torch).

Every test that injected faults through ``compile_cache.record`` has ``stats.cache_faults``: per judged
start, the fault, the outcome (loaded / recompiled with torch's or the engine's reasons / empty / error), how
many artifacts it compiled, rebuilt and loaded, and its output against the ground truth. :func:`fault_rows`
reads them with the test's mode and result, and what the run started (``target``: the reference decoder,
an engine); :func:`render_markdown` makes the table ``layername fault-table`` prints.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

REASON_CHARS = 160
#: a reason's cache key (one per piece: the table counts the reasons alike without it)
KEY = re.compile(r" \(key [^)]*\)")
#: torch's generated file names: shown by their first 8 characters
LONG_NAME = re.compile(r"\b([a-z0-9]{8})[a-z0-9]{40,}\b")
#: an absolute path (a test's temporary directory): its file name is enough
PATH = re.compile(r"(?:/[^\s/]+)+/([^\s/]+)")
#: an object's repr with its address (``<pkg.Backend object at 0x7f...>``): its class name is enough
OBJECT_REPR = re.compile(r"<(?:[\w.]+\.)?(\w+) object at 0x[0-9a-f]+>")


class FaultTableError(ValueError):
    """A report without fault results."""


def fault_rows(report: Mapping[str, Any], target: str = "-") -> list[dict[str, Any]]:
    """One row per judged start of every test's ``cache_faults``, in report order; ``target`` names what
    the run started."""
    rows = []
    for test in report.get("tests", []):
        for entry in (test.get("stats") or {}).get("cache_faults", []):
            outcome = entry["outcome"]
            rows.append(
                {
                    "target": target,
                    "fault": entry["fault"],
                    "mode": test.get("mode") or "-",
                    "start": entry["label"],
                    "outcome": outcome["kind"],
                    "compiled": outcome["compiled"],
                    "rebuilt": outcome["rebuilt"],
                    "loaded": outcome["loaded"],
                    "reasons": outcome["reasons"],
                    "output": entry["output"],
                    "test": test["outcome"],
                    "nodeid": test["nodeid"],
                }
            )
    if not rows:
        raise FaultTableError("the report has no cache_faults: run the cache-fault tests with --layername-report")
    return rows


def _reason(reasons: Sequence[str]) -> str:
    """The distinct reasons with how often each came, keys and paths shortened, for one table cell."""
    shortened = (OBJECT_REPR.sub(r"<\1>", LONG_NAME.sub(r"\1…", PATH.sub(r"\1", KEY.sub("", r)))) for r in reasons)
    counted = Counter(shortened)
    text = "; ".join(f"{reason} (x{count})" if count > 1 else reason for reason, count in counted.items())
    text = text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."
    return text.replace("|", "\\|") or "-"


def render_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table: target, fault, mode, start, outcome, compiled/rebuilt/loaded, torch's or the engine's
    reason, output, test result."""
    lines = [
        "| target | fault | mode | start | outcome | compiled / rebuilt / loaded | reason (torch's or the engine's "
        "words) | output | test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        counts = f"{row['compiled']} / {row['rebuilt']} / {row['loaded']}"
        lines.append(
            f"| {row['target']} | {row['fault']} | {row['mode']} | {row['start']} | {row['outcome']} | {counts} | "
            f"{_reason(row['reasons'])} | {row['output']} | {row['test']} |"
        )
    return "\n".join(lines) + "\n"
