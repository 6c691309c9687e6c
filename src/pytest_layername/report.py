"""The JSON report format shared by the plugin (writer) and the gate (reader).

Layout (``schema_version`` 1)::

    {
      "schema_version": 1,
      "complete": true,                 # false when a worker crashed or the run was interrupted
      "incomplete_reason": null,
      "run": {"torch": ..., "python": ..., "platform": ..., "device": ..., "impl": ..., "impl_enabled": true,
              "requested_mode": "both", "modes": ["opaque", "string"], "detected_mode": "opaque",
              "opaque_supported": true, "opaque_reason": null, "workers": 2,
              "start": "<iso8601>", "end": "<iso8601>"},
      "tests": [{"nodeid": ..., "mode": "opaque" | "string" | null,
                 "outcome": "passed" | "failed" | "skipped" | "error", "duration": 0.12,
                 "stats": {<CompileStats.as_dict()>} | null,
                 "fusion": {"<pass>": {"patterns": 1, "matched": 4, "per_pattern": {...}}} | null}],
      "summary": {"passed": 0, "failed": 0, "skipped": 0, "error": 0, "total": 0}
    }
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
OUTCOMES = ("passed", "failed", "skipped", "error")
REQUIRED_KEYS = ("schema_version", "complete", "run", "tests", "summary")


class ReportError(ValueError):
    """A report that is missing, unreadable or not in this schema."""


def summarize(tests: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(t["outcome"] for t in tests)
    return {**{o: counts.get(o, 0) for o in OUTCOMES}, "total": len(tests)}


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``report`` atomically (a crash mid-write never leaves a truncated file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a report; every problem is a :class:`ReportError` naming the file."""
    source = Path(path)
    if not source.is_file():
        raise ReportError(f"report {source} does not exist (did the cell run and write --layername-report?)")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"report {source} is unreadable: {error}") from error
    if not isinstance(data, dict):
        raise ReportError(f"report {source} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ReportError(f"report {source} lacks {', '.join(missing)}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ReportError(
            f"report {source} has schema_version {data['schema_version']!r}; this version reads {SCHEMA_VERSION}"
        )
    return data
