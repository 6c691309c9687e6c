"""The JSON report format shared by the plugin (writer) and the gate (reader).

The format is the JSON Schema ``report.schema.json`` shipped in this package (``schema_version`` 3):
``run`` (which run: run id, matrix cell and its digest, git commit and dirty flag, versions, pytest
arguments, collected/selected/deselected counts, start and end; torch, device, implementation and its
modes, what was not exercised), ``tests`` (per test: mode, outcome, torch's compile counts, fusion counts)
and ``summary``. :func:`load_report` reads a report strictly (:mod:`.inputs`) and validates it against the
schema before anyone reads a field, failing closed naming the field. :func:`write_report` replaces a report
atomically; :class:`ReportLock` keeps two runs off one report path.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from .inputs import InputError, read_json, short

SCHEMA_VERSION = 3
#: The largest report the gate reads (a full suite run in both modes writes about ... MiB).
MAX_REPORT_BYTES = 64 * 2**20
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
    """Write ``report`` atomically: ``path`` holds the old report or the complete new one, never a part.

    The file gets the mode any new file gets here (``0666`` less the umask, as pytest's JUnit XML), and
    SIGINT/SIGTERM arriving during the write take effect once it is done.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"  # a report that is not JSON fails here, before any file is touched
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with _signals_deferred():
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (main thread only) until the block ends, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in pending:
            signal.raise_signal(signum)


class ReportLock:
    """Holds ``.<report>.lock`` next to a report while a run writes it, so two runs never share one path.

    An advisory ``flock`` the kernel drops when the process ends (even killed); the holder's pid is written
    in the lock file for the message the other run gets. Without ``fcntl`` (Windows) nothing is locked.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        self.path = target.with_name(f".{target.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`ReportError` naming the holder when another run has it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            report = self.path.with_name(self.path.name[1:].removesuffix(".lock"))
            raise ReportError(
                f"report {report} is being written by another run (pid {holder}); "
                "wait for it or give this run another --layername-report path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a report; every problem is a :class:`ReportError` naming the file (and the field)."""
    source = Path(path)
    try:
        data = read_json(source, "report", MAX_REPORT_BYTES, "did the cell run and write --layername-report?")
    except InputError as error:
        raise ReportError(str(error)) from None
    if not isinstance(data, dict):
        problem = f"(top level): {short(data)} is not of type 'object'"
        raise ReportError(f"report {source} does not match {SCHEMA_FILE}: {problem}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ReportError(
            f"report {source} has schema_version {short(data.get('schema_version'))}; "
            f"this version reads {SCHEMA_VERSION}"
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
    message = error.message if len(error.message) <= 200 else error.message[:200] + "... (cut)"
    return f"{field}: {message}"
