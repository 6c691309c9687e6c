"""Torch's structured trace of a block of code, in a file of its own (what ``TORCH_TRACE`` writes, ``tlparse`` reads).

``TORCH_TRACE=DIR`` gives one file per process, opened at torch import. :func:`torch_trace` gives one
per block (a test): a handler on torch's trace logger with torch's own trace formatter. Torch writes
each string it interns (file names of stack frames) to the trace once per process and refers to it by
number afterwards, so a file starts with the strings interned before it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from torch._logging import structured
from torch._logging._internal import TorchLogsFormatter, trace_log


def _interned_string_record(string: str, index: int) -> logging.LogRecord:
    """The record ``trace_structured("str", ...)`` emitted when torch interned ``string``."""
    record = trace_log.makeRecord(trace_log.name, logging.DEBUG, __file__, 0, "", (), None)
    record.metadata = {"str": [string, index]}
    record.payload = None
    return record


class TraceFile(logging.FileHandler):
    """Writes torch's trace records to ``path``; the file is created with the first record."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="w", encoding="utf-8", delay=True)
        self.setFormatter(TorchLogsFormatter(trace=True))

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:  # the file starts: first the strings later records may refer to
            for string, index in list(structured.INTERN_TABLE.items()):
                super().emit(_interned_string_record(string, index))
        super().emit(record)


@contextlib.contextmanager
def torch_trace(path: Path) -> Iterator[TraceFile]:
    """Torch's structured trace of what runs inside, written to ``path`` (nothing is written if nothing compiles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = TraceFile(path)
    trace_log.addHandler(handler)
    try:
        yield handler
    finally:
        trace_log.removeHandler(handler)
        handler.close()
