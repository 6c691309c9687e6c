"""A test's layer-name results as ``user_properties``: they survive xdist and land in JUnit XML.

Per test: its mode and known bug (set at collection), one ``layername_<count>`` per compile count and
the whole statistics and fusion log as JSON (set by the fixtures at teardown), and the path of its torch
trace (``--layername-trace``, set at teardown).

PYTEST_DONT_REWRITE: loaded at every pytest start-up; it has no asserts to rewrite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

MODE = "layername_mode"
KNOWN_BUG = "layername_known_bug"
STATS = "layername_stats"  # the whole CompileStats as JSON (pieces in detail)
FUSION = "layername_fusion"  # the fusion log as JSON
TRACE = "layername_trace"  # the path of the test's torch trace
COUNT_PREFIX = "layername_"  # one property per count: layername_unique_pieces, layername_recompiles, ...


def stats_properties(stats: dict[str, Any], counts: Sequence[str]) -> list[tuple[str, object]]:
    """``user_properties`` for one test's compile statistics: each count, then everything as JSON."""
    return [*((COUNT_PREFIX + name, stats[name]) for name in counts), (STATS, json.dumps(stats, sort_keys=True))]


def fusion_properties(log: dict[str, Any]) -> list[tuple[str, object]]:
    return [(FUSION, json.dumps(log, sort_keys=True))]


def read_properties(report: pytest.TestReport) -> dict[str, Any]:
    """The layer-name properties of ``report``: mode, known bug and trace as given, stats and fusion decoded."""
    found: dict[str, Any] = {}
    for name, value in report.user_properties:
        if name in (MODE, KNOWN_BUG, TRACE):
            found[name] = value
        elif name in (STATS, FUSION):
            found[name] = json.loads(value)
    return found
