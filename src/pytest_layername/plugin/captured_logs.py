"""Keeps torch's structured-trace records out of pytest's captured logs (no torch import).

Torch emits its structured trace (what ``TORCH_TRACE`` writes) as empty-message DEBUG records on the
``torch.__trace`` logger, which never propagates. pytest attaches its capture handlers to every
non-propagating logger for each test phase, so a failing compile test's "Captured log call" fills with
hundreds of empty ``DEBUG torch.__trace:`` lines. :class:`TraceRecordsOutOfCapture` (registered once a
layer-name run starts) gives pytest's handlers a filter that drops that one logger's records: torch's
warnings (other loggers) and the test's own records are captured as before, and a trace file written by
``--layername-trace`` or ``TORCH_TRACE`` (torch's own handlers on that logger) keeps every record.
"""

from __future__ import annotations

import logging

import pytest

TRACE_LOGGER = "torch.__trace"


class DropTraceRecords(logging.Filter):
    """A handler filter that rejects the records of torch's structured-trace logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != TRACE_LOGGER


class TraceRecordsOutOfCapture:
    """Plugin object: before each test phase, filter the capture handlers pytest attached to torch's trace logger.

    pytest attaches the same handlers to the root logger and to every non-propagating logger, so the
    trace logger's handlers that the root logger also has are pytest's; torch's own are left alone.
    """

    def __init__(self) -> None:
        self.filter = DropTraceRecords()

    def _filter_capture_handlers(self) -> None:
        root_handlers = logging.getLogger().handlers
        for handler in logging.getLogger(TRACE_LOGGER).handlers:
            if handler in root_handlers:
                handler.addFilter(self.filter)  # idempotent: pytest reuses its handlers across phases

    # Non-wrapper hooks run inside pytest's logging wrappers, after its handlers are attached.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self) -> None:
        self._filter_capture_handlers()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self) -> None:
        self._filter_capture_handlers()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self) -> None:
        self._filter_capture_handlers()
