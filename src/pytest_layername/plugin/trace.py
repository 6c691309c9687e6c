"""``--layername-trace=DIR``: torch's structured trace of each test in a file of its own, and where to find it.

:class:`TestTraces` (registered when the option, ini ``layername_trace`` or ``LAYERNAME_TRACE`` names a
directory) writes each test's trace with :func:`..compile.trace_file.torch_trace` from setup to teardown
and records its path as the ``layername_trace`` user property (so JUnit XML and the report carry it).
Failure messages end with the ``tlparse`` command that renders the trace, or say how to get one.
Imports no torch at load; the trace writer loads with the first test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..core.names import ENV_TRACE
from .properties import TRACE

TRACE_PATH_KEY = pytest.StashKey[Path]()
_WRITER_KEY = pytest.StashKey[contextlib.ExitStack]()
_UNSAFE = re.compile(r"[^\w.\-\[\]]")
NO_TRACE_HINT = (
    f"torch's trace of this test: rerun with --layername-trace=DIR (or {ENV_TRACE}=DIR), "
    "then render the file it names with tlparse (pip install tlparse)"
)


def trace_directory(config: pytest.Config) -> Path | None:
    """The directory asked for (option, then ini, then environment), relative to where pytest was started."""
    value = config.getoption("layername_trace") or config.getini("layername_trace") or os.environ.get(ENV_TRACE)
    return Path(config.invocation_params.dir, value).resolve() if value else None


def trace_file_name(nodeid: str) -> str:
    """A file name for the test: its node id made safe, with a short digest where that lost characters."""
    readable = nodeid.replace("::", "__").replace("/", ".")
    safe = _UNSAFE.sub("_", readable)
    if safe != readable or len(safe) > 150:
        safe = f"{safe[:150]}-{hashlib.sha256(nodeid.encode()).hexdigest()[:8]}"
    return f"{safe}.log"


def _shown(path: Path, config: pytest.Config) -> str:
    relative = os.path.relpath(path, config.invocation_params.dir)
    return str(path) if relative.startswith("..") else relative


def trace_footer(item: pytest.Item) -> str:
    """The last lines of a failure message: the test's trace and the command that renders it, or how to get one."""
    path = item.stash.get(TRACE_PATH_KEY, None)
    if path is None:
        return NO_TRACE_HINT
    shown = _shown(path, item.config)
    return (
        f"torch's trace of this test: {shown}\n"
        f"render it with: tlparse {shown} -o {_shown(path.with_suffix(''), item.config)} --overwrite"
    )


class TestTraces:
    """Plugin object: a trace file per test under ``directory``."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        from ..compile.trace_file import torch_trace

        path = item.stash[TRACE_PATH_KEY] = self.directory / trace_file_name(item.nodeid)
        writer = item.stash[_WRITER_KEY] = contextlib.ExitStack()
        writer.enter_context(torch_trace(path))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        try:
            return (yield)
        finally:
            if writer := item.stash.get(_WRITER_KEY, None):
                writer.close()
            path = item.stash.get(TRACE_PATH_KEY, None)
            if path is not None and path.exists():  # the teardown report, which JUnit XML reads, carries it
                item.user_properties.append((TRACE, str(path)))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Iterator[pytest.TestReport]:
        """A failure whose message does not name the trace (not a count expectation) gets a section that does."""
        report: pytest.TestReport = yield
        path = item.stash.get(TRACE_PATH_KEY, None)
        failed_with_trace = report.failed and report.when == "call" and path is not None and path.exists()
        if failed_with_trace and _shown(path, item.config) not in report.longreprtext:
            report.sections.append(("layername trace", trace_footer(item)))
        return report
