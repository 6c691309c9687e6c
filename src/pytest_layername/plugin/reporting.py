"""The JSON report, collected from the tests' layer-name ``user_properties`` (:mod:`.properties`; no torch).

:class:`ReportCollector` runs on the process that sees every test report (the only process without
xdist, the controller with it); it is loaded only when ``--layername-report`` is given. The report names
the run it describes (run id, matrix cell and digest, git commit, versions, pytest arguments, what was
collected, selected and deselected). It is written when the run starts, marked incomplete, and rewritten
after every test until the session ends cleanly, so a run killed at any point leaves an incomplete report
(never an earlier run's complete one). A lock next to the report keeps a second run off the same path.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ..release.matrix import CELL_NAME
from ..release.provenance import git_state, module_version, project_version
from ..release.report import SCHEMA_VERSION, ReportError, ReportLock, summarize, write_report
from .properties import FUSION, KNOWN_BUG, MODE, STATS, TRACE, read_properties

DIGEST = re.compile(r"[0-9a-f]{64}")
#: where an xdist worker leaves its collection counts for the controller (``config.workeroutput``)
WORKER_COLLECTION = "layername_collection"
IN_PROGRESS = "run in progress (the session has not ended; a report left so was interrupted or killed)"


def _entry(nodeid: str, outcome: str) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "mode": None,
        "outcome": outcome,
        "duration": 0.0,
        "stats": None,
        "fusion": None,
        "known_bug": None,
        "trace": None,
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def cell_options(config: pytest.Config) -> tuple[str | None, str | None]:
    """``--layername-cell`` and ``--layername-cell-digest``, checked (a usage error says what is wrong)."""
    cell, digest = config.getoption("layername_cell"), config.getoption("layername_cell_digest")
    if (cell or digest) and not config.getoption("layername_report"):
        raise pytest.UsageError("layername: --layername-cell and --layername-cell-digest need --layername-report")
    if (cell is None) != (digest is None):
        raise pytest.UsageError("layername: --layername-cell and --layername-cell-digest go together")
    if cell is not None and not CELL_NAME.fullmatch(cell):
        raise pytest.UsageError(f"layername: --layername-cell {cell[:80]!r} is not a cell name")
    if digest is not None and not DIGEST.fullmatch(digest):
        raise pytest.UsageError("layername: --layername-cell-digest must be 64 lowercase hex digits (a sha256)")
    return cell, digest


def pytest_arguments(config: pytest.Config) -> list[str]:
    """The arguments pytest parsed, in its order: ini ``addopts``, ``PYTEST_ADDOPTS``, the command line."""
    return [
        *config.getini("addopts"),
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *config.invocation_params.args,
    ]


def provenance(config: pytest.Config, impl: str) -> dict[str, Any]:
    """The report's record of which run this is: cell, checkout, versions, arguments, a fresh run id."""
    cell, digest = cell_options(config)
    commit, dirty = git_state(config.invocation_params.dir)
    return {
        "run_id": uuid.uuid4().hex,
        "cell": cell,
        "cell_digest": digest,
        "project_version": project_version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "impl_version": module_version(impl),
        "pytest_args": pytest_arguments(config),
        "collected": None,
        "selected": None,
        "deselected": None,
    }


class CollectionCounter:
    """What this process collected, deselected and kept, counted as pytest's terminal does ("collected N
    items / M deselected"); ``done`` receives the counts when collection finishes."""

    def __init__(self, done: Callable[[dict[str, int]], None]) -> None:
        self.done = done
        self.collected = 0
        self.deselected = 0

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.passed:
            self.collected += sum(isinstance(node, pytest.Item) for node in report.result)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.config.pluginmanager.hasplugin("dsession"):
            return  # an xdist controller collects nothing itself: its workers send their counts
        self.done({"collected": self.collected, "selected": len(session.items), "deselected": self.deselected})


class ReportCollector:
    """A pytest plugin object that builds and writes the report."""

    def __init__(self, config: pytest.Config, path: str, run_info: dict[str, Any]) -> None:
        self.path = path
        self.run = {
            **provenance(config, run_info["impl"]),
            **run_info,
            "workers": getattr(config.option, "numprocesses", None) or 0,
            "start": _now(),
            "end": None,
        }
        self.tests: dict[str, dict[str, Any]] = {}
        self.incomplete_reasons: list[str] = []
        self.lock = ReportLock(path)

    def open(self) -> None:
        """Take the report's path and write the report as incomplete, before anything else can go wrong."""
        try:
            self.lock.acquire()
            self.write(complete=False, reason=IN_PROGRESS)
        except ReportError as error:
            raise pytest.UsageError(f"layername: {error}") from None
        except OSError as error:
            self.lock.release()
            raise pytest.UsageError(f"layername: cannot write the report {self.path}: {error}") from None

    def collection_done(self, counts: dict[str, int]) -> None:
        """Collection counts (from this process, or from the first xdist worker to report them)."""
        if self.run["collected"] is None:
            self.run.update(counts)
            self.write(complete=False, reason=IN_PROGRESS)

    def _record(self, report: pytest.TestReport) -> dict[str, Any]:
        entry = self.tests.setdefault(report.nodeid, _entry(report.nodeid, "passed"))
        entry["duration"] = round(entry["duration"] + report.duration, 4)
        found = read_properties(report)
        fields = (("mode", MODE), ("known_bug", KNOWN_BUG), ("stats", STATS), ("fusion", FUSION), ("trace", TRACE))
        for key, name in fields:
            if name in found:
                entry[key] = found[name]
        return entry

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self._record(report)
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        if report.when == "teardown":
            self.write(complete=False, reason=IN_PROGRESS)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.tests[report.nodeid] = _entry(report.nodeid, "error")

    def mark_incomplete(self, reason: str) -> None:
        self.incomplete_reasons.append(reason)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
            self.mark_incomplete(f"pytest exited with {pytest.ExitCode(exitstatus).name}")
        self.run["end"] = _now()
        self.write(complete=not self.incomplete_reasons, reason="; ".join(self.incomplete_reasons) or None)

    def pytest_unconfigure(self) -> None:
        self.lock.release()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_sep("-", f"layername report written to {self.path}")

    def write(self, complete: bool, reason: str | None) -> None:
        tests = list(self.tests.values())
        write_report(
            self.path,
            {
                "schema_version": SCHEMA_VERSION,
                "complete": complete,
                "incomplete_reason": None if complete else reason,
                "run": self.run,
                "tests": tests,
                "summary": summarize(tests),
            },
        )


class XdistHooks:
    """Hooks that exist only with pytest-xdist: the workers' collection counts, and a worker that goes down
    with an error makes the report incomplete."""

    def __init__(self, collector: ReportCollector) -> None:
        self.collector = collector

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        counts = getattr(node, "workeroutput", {}).get(WORKER_COLLECTION)
        if counts is not None:
            self.collector.collection_done(counts)
        if error:
            worker = getattr(node, "gateway", None)
            name = getattr(worker, "id", "worker")
            self.collector.mark_incomplete(f"xdist worker {name} crashed: {str(error).strip().splitlines()[0]}")

    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        self.collector.mark_incomplete(f"xdist worker crashed while running {crashitem}")


def register(config: pytest.Config, report_path: str, run_info: dict[str, Any]) -> None:
    """Set up the report for this process: the collector on the controller, collection counts on a worker."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller writes, from the counts sent here
        output: dict[str, Any] = config.workeroutput  # type: ignore[attr-defined]
        counter = CollectionCounter(lambda counts: output.__setitem__(WORKER_COLLECTION, counts))
        config.pluginmanager.register(counter, "layername-collection")
        return
    collector = ReportCollector(config, report_path, run_info)
    collector.open()
    config.pluginmanager.register(collector, "layername-report")
    config.pluginmanager.register(CollectionCounter(collector.collection_done), "layername-collection")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(collector), "layername-report-xdist")
