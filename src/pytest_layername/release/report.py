"""The JSON report format shared by the plugin (writer) and the gate (reader).

The format is the JSON Schema ``report.schema.json`` shipped in this package (``schema_version`` 2):
``run`` (torch, device, implementation and its modes, what was not exercised), ``tests`` (per test: mode,
outcome, torch's compile counts, fusion counts) and ``summary``. :func:`load_report` validates a report
against it before anyone reads a field, and fails closed naming the field.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
SCHEMA_FILE = "report.schema.json"
OUTCOMES = ("passed", "failed", "skipped", "xfailed", "error")
#: Counts the compatibility table shows per mode (maxima over the cell's budget tests in that mode).
KEY_COUNTS = ("pieces", "unique_pieces", "inductor_compiles", "fx_graph_cache_hits", "recompiles", "hash_disagreements")


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
        data = json.loads(source.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ReportError(f"report {source} is unreadable: {error}") from error
    if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
        raise ReportError(
            f"report {source} has schema_version {data.get('schema_version')!r}; this version reads {SCHEMA_VERSION}"
        )
    if problem := schema_problem(data):
        raise ReportError(f"report {source} does not match {SCHEMA_FILE}: {problem}")
    return data


@functools.cache
def report_schema() -> dict[str, Any]:
    """The report's JSON Schema, as shipped in this package."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def schema_problem(data: Any) -> str | None:
    """The most relevant schema violation of ``data`` as ``field: message``, or None when it is valid."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(report_schema()).iter_errors(data))
    if error is None:
        return None
    field = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"{field}: {error.message}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
