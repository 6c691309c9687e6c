"""The JSON report, collected from the tests' layer-name ``user_properties`` (:mod:`.properties`; no torch).

:class:`ReportCollector` runs on the process that sees every test report (the only process without
xdist, the controller with it); it is loaded only when ``--layername-report`` is given. The report is
rewritten after every test, marked incomplete until the session ends cleanly, so a crash leaves data behind.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ..release.report import SCHEMA_VERSION, summarize, write_report
from .properties import FUSION, KNOWN_BUG, MODE, STATS, TRACE, read_properties


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


class ReportCollector:
    """A pytest plugin object that builds and writes the report."""

    def __init__(self, config: pytest.Config, path: str, run_info: dict[str, Any]) -> None:
        self.path = path
        self.run = {
            **run_info,
            "workers": getattr(config.option, "numprocesses", None) or 0,
            "start": _now(),
            "end": None,
        }
        self.tests: dict[str, dict[str, Any]] = {}
        self.incomplete_reasons: list[str] = []

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
            self.write(complete=False, reason="run in progress")

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


class XdistCrashes:
    """Hooks that exist only with pytest-xdist: a worker that goes down with an error makes the report incomplete."""

    def __init__(self, collector: ReportCollector) -> None:
        self.collector = collector

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        if error:
            worker = getattr(node, "gateway", None)
            name = getattr(worker, "id", "worker")
            self.collector.mark_incomplete(f"xdist worker {name} crashed: {str(error).strip().splitlines()[0]}")

    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        self.collector.mark_incomplete(f"xdist worker crashed while running {crashitem}")
