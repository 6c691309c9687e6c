"""The release gate: turn the matrix cells' JSON reports into one fail-closed pass/fail decision.

Rules (``layername gate --matrix matrix.toml [--tier T] [--cell C] REPORTS_DIR``):

* The cells selected by ``--tier``/``--cell`` (all cells when neither is given) are *required*: each must
  have a report ``<cell>.json`` that passes every check. A required cell that is missing, unreadable or
  incomplete fails the gate. A required cell skipped because this machine lacks its device
  (``<cell>.skipped.json``, e.g. no GPU) is *not gated*: the gate says so loudly and names the tiers it did
  not gate; with ``--strict`` (a release) such a skip fails the gate. A gate that gated no cell fails.
* A cell that is not required may be missing or skipped, but if it has a report, the report must pass
  too: a failure is never ignored.
* A report passes when it is complete, its torch satisfies the cell's spec, it ran on the cell's device,
  its ``detected_mode`` equals the cell's ``expected_mode``, it ran exactly the cell's modes, its summary
  agrees with its tests and stays within ``max_failed``/``min_passed``/``max_skipped``, the known torch bugs
  it hit (strict expected failures) are exactly the cell's ``known_bugs``, and for each mode the maximum of
  each budgeted stat over the cell's ``budget_tests`` run in that mode stays within that mode's budget (a
  budget that no test recorded is a failure, not a pass).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion

from .matrix import DEFAULT_MATRIX, Cell, MatrixError, load_matrix, read_skip_marker
from .report import ReportError, load_report, summarize

PASSED, FAILED, MISSING, SKIPPED, NOT_GATED = "passed", "failed", "missing", "skipped", "not gated"


@dataclass
class CellResult:
    """What the gate found for one cell."""

    cell: Cell
    required: bool
    status: str  # passed | failed | missing | skipped
    problems: list[str] = field(default_factory=list)
    torch: str | None = None
    detected_mode: str | None = None
    summary: dict[str, int] | None = None
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # mode -> count -> max over budget tests
    known_bugs: list[str] = field(default_factory=list)  # known torch bugs the report's tests hit
    run: dict[str, Any] = field(default_factory=dict)  # the report's run section
    modes: list[str] = field(default_factory=list)
    seconds: float | None = None  # the suite's wall time (run.start to run.end)
    skip_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether this cell lets the gate pass."""
        return self.status in (PASSED, NOT_GATED) or (not self.required and self.status in (MISSING, SKIPPED))

    @property
    def verdict(self) -> str:
        if self.status in (SKIPPED, NOT_GATED):
            text = f"{self.status} ({self.skip_reason})" if self.skip_reason else self.status
        else:
            text = self.status
        if self.ok:
            return text if self.required else f"{text} (not required)"
        return f"FAIL: {text}"


@dataclass
class GateResult:
    """The decision over all cells."""

    results: list[CellResult]
    stray: list[str] = field(default_factory=list)  # report files naming no cell

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results) and any(r.required and r.status == PASSED for r in self.results)

    @property
    def not_gated(self) -> list[CellResult]:
        """Required cells skipped for a missing device and not gated (only without ``--strict``)."""
        return [r for r in self.results if r.status == NOT_GATED]


def _check_report(cell: Cell, report: dict[str, Any], result: CellResult, path: Path) -> None:
    problems = result.problems
    run = report["run"]  # load_report validated the report against its schema
    if report["complete"] is not True:
        problems.append(f"report is incomplete: {report.get('incomplete_reason') or 'no reason given'}")
    result.torch = run.get("torch")
    if result.torch is None:
        problems.append("report names no torch version (run.torch)")
    else:
        try:
            if not cell.allows(result.torch):
                problems.append(f"ran torch {result.torch}, which is not {cell.requirement} (wrong environment?)")
        except InvalidVersion:
            problems.append(f"run.torch {result.torch!r} is not a version")
    device = run["device"]
    if device != cell.device:
        problems.append(f"ran on device {device!r}, the cell is {cell.device!r}")
    result.detected_mode = run["detected_mode"]
    if result.detected_mode != cell.expected_mode:
        problems.append(
            f"detected mode {result.detected_mode!r} but torch {cell.torch} must detect {cell.expected_mode!r}"
        )
    result.modes = list(run["modes"])
    result.run = run
    if set(result.modes) != set(cell.run_modes):
        problems.append(f"the suite ran modes {result.modes}, the cell runs {list(cell.run_modes)}")
    result.seconds = _seconds(run["start"], run["end"])

    tests = report["tests"]
    result.summary = report["summary"]
    if summarize(tests) != result.summary:
        problems.append(f"summary {result.summary} disagrees with the {len(tests)} tests listed")
    bad = result.summary["failed"] + result.summary["error"]
    if bad > cell.max_failed:
        failing = [t["nodeid"] for t in tests if t["outcome"] in ("failed", "error")]
        shown = ", ".join(failing[:5]) + (" ..." if len(failing) > 5 else "")
        problems.append(f"{bad} tests failed or errored (budget max_failed={cell.max_failed}): {shown}")
    if cell.max_skipped is not None and result.summary["skipped"] > cell.max_skipped:
        skipped = [t["nodeid"] for t in tests if t["outcome"] == "skipped"]
        problems.append(
            f"{len(skipped)} tests skipped (budget max_skipped={cell.max_skipped}): {', '.join(skipped[:5])}"
        )
    if result.summary["passed"] < cell.min_passed:
        problems.append(f"{result.summary['passed']} tests passed, fewer than min_passed={cell.min_passed}")
    _check_known_bugs(cell, tests, result)
    for mode in cell.run_modes:
        _check_stat_budgets(cell, mode, tests, result)


def _seconds(start: str, end: str | None) -> float | None:
    if end is None:
        return None
    try:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def _check_known_bugs(cell: Cell, tests: list[dict[str, Any]], result: CellResult) -> None:
    """The strict expected failures the report shows must be exactly the cell's declared known bugs."""
    result.known_bugs = sorted({t["known_bug"] for t in tests if t["outcome"] == "xfailed" and t["known_bug"]})
    if unexplained := [t["nodeid"] for t in tests if t["outcome"] == "xfailed" and not t["known_bug"]]:
        result.problems.append(f"expected failures not tied to a known torch bug: {', '.join(unexplained[:5])}")
    if undeclared := sorted(set(result.known_bugs) - set(cell.known_bugs)):
        result.problems.append(f"hit known torch bug(s) {', '.join(undeclared)} that the cell does not declare")
    if stale := sorted(set(cell.known_bugs) - set(result.known_bugs)):
        result.problems.append(f"declared known torch bug(s) {', '.join(stale)} were not hit (fixed? not run?)")


def _check_stat_budgets(cell: Cell, mode: str, tests: list[dict[str, Any]], result: CellResult) -> None:
    budgeted = [t for t in tests if t["mode"] == mode and t["stats"] and cell.budgeted(t["nodeid"])]
    counts = [{k: v for k, v in t["stats"].items() if type(v) is int} for t in budgeted]
    result.stats[mode] = {k: max(c[k] for c in counts) for k in counts[0]} if counts else {}
    unchecked = []
    for stat, limit in cell.stat_budgets(mode).items():
        values = {t["nodeid"]: t["stats"][stat] for t in budgeted}
        if not values:
            unchecked.append(f"budgets.{mode}.max_{stat}")
        elif result.stats[mode][stat] > limit:
            over = [f"{nodeid} ({value})" for nodeid, value in values.items() if value > limit]
            result.problems.append(f"{mode} {stat} over budget max_{stat}={limit} in {', '.join(over[:5])}")
    if unchecked:
        result.problems.append(
            f"budget {', '.join(unchecked)} unchecked: no {mode}-mode test matching "
            f"budget_tests {list(cell.budget_tests)} recorded stats"
        )


def evaluate_cell(cell: Cell, reports_dir: str | os.PathLike[str], required: bool, strict: bool = False) -> CellResult:
    """Judge one cell from its report (or skip marker) in ``reports_dir``."""
    report_path = cell.report_path(reports_dir)
    marker_path = cell.skip_marker_path(reports_dir)
    result = CellResult(cell=cell, required=required, status=MISSING)
    if not report_path.exists():
        if marker_path.exists():
            try:
                result.skip_reason = read_skip_marker(marker_path)
                result.status = NOT_GATED if required and not strict else SKIPPED
                if required and strict:
                    result.problems.append(f"required cell was skipped (--strict): {result.skip_reason}")
            except MatrixError as error:
                result.problems.append(str(error))
            return result
        result.problems.append(
            f'no report {report_path} (run `nox -s "matrix({cell.name})"` or collect its reports here)'
        )
        return result
    try:
        report = load_report(report_path)
        _check_report(cell, report, result, report_path)
    except ReportError as error:
        result.status = FAILED
        result.problems.append(str(error))
        return result
    result.status = FAILED if result.problems else PASSED
    return result


def run_gate(
    matrix_path: str | os.PathLike[str],
    reports_dir: str | os.PathLike[str],
    tiers: list[str] | None = None,
    names: list[str] | None = None,
    strict: bool = False,
) -> GateResult:
    """Evaluate every cell of the matrix; the ones selected by ``tiers``/``names`` are required.

    ``strict`` (a release): a required cell skipped for a missing device fails instead of being not gated.
    """
    matrix = load_matrix(matrix_path)
    required = {c.name for c in matrix.select(tiers or (), names or ())}
    results = [evaluate_cell(c, reports_dir, c.name in required, strict) for c in matrix.cells]
    known = {c.report_path(reports_dir).name for c in matrix.cells}
    folder = Path(reports_dir)
    stray = sorted(
        p.name
        for p in (folder.glob("*.json") if folder.is_dir() else [])
        if p.name not in known and not p.name.endswith(".skipped.json")
    )
    return GateResult(results=results, stray=stray)


def _budget_text(result: CellResult) -> str:
    parts = []
    if result.summary is not None:
        bad = result.summary["failed"] + result.summary["error"]
        parts.append(f"failed {bad}/{result.cell.max_failed}")
    for mode in result.cell.run_modes:
        for stat, limit in result.cell.stat_budgets(mode).items():
            value = result.stats.get(mode, {}).get(stat)
            parts.append(f"{mode} {stat} {'-' if value is None else value}/{limit}")
    return ", ".join(parts) or "-"


def rows(gate: GateResult) -> list[list[str]]:
    """The gate table: a header row, then one row per cell."""
    table = [["cell", "tier", "required", "torch", "expected", "detected", "modes", "passed", "failed", "skipped"]]
    table[0] += ["known bugs", "budgets", "verdict"]
    for r in gate.results:
        s = r.summary
        passed, skipped = (str(s["passed"]), str(s["skipped"])) if s is not None else ("-", "-")
        failed = str(s["failed"] + s["error"]) if s is not None else "-"
        torch = f"{r.cell.torch} ({r.torch})" if r.torch else str(r.cell.torch)
        table.append(
            [
                r.cell.name,
                r.cell.tier,
                "yes" if r.required else "no",
                torch,
                r.cell.expected_mode,
                r.detected_mode or "-",
                ",".join(r.modes or r.cell.run_modes),
                passed,
                failed,
                skipped,
                ",".join(r.known_bugs) or "-",
                _budget_text(r),
                r.verdict,
            ]
        )
    return table


def _problems(gate: GateResult) -> list[str]:
    lines = [f"{r.cell.name}: {p}" for r in gate.results for p in r.problems if not r.ok]
    lines += [f"ignored {name}: no cell of the matrix has this name" for name in gate.stray]
    if not any(r.required for r in gate.results):
        lines.append("no cell is required: nothing to gate on")
    elif not any(r.required and r.status == PASSED for r in gate.results):
        lines.append("no required cell was gated")
    return lines


def _not_gated_lines(gate: GateResult) -> list[str]:
    """The loud part: which tiers and cells this gate did not judge, and why."""
    if not gate.not_gated:
        return []
    tiers = sorted({r.cell.tier for r in gate.not_gated})
    lines = [f"NOT GATED: tier(s) {', '.join(tiers)} (this machine cannot run them; a release needs --strict):"]
    lines += [f"  {r.cell.name}: {r.skip_reason}" for r in gate.not_gated]
    return lines


def _decision(gate: GateResult) -> str:
    required = [r for r in gate.results if r.required]
    good = sum(r.status == PASSED for r in required)
    word = "PASS" if gate.passed else "FAIL"
    bad = [r.cell.name for r in gate.results if not r.ok]
    tail = f"; failing: {', '.join(bad)}" if bad else ""
    if gate.not_gated:
        tail += f"; NOT GATED: {', '.join(r.cell.name for r in gate.not_gated)}"
    return f"gate: {word} ({good}/{len(required)} required cells passed{tail})"


def format_text(gate: GateResult) -> str:
    """A plain-text table, the problems, and the decision."""
    table = rows(gate)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    problems = _problems(gate)
    if problems:
        lines += ["", "problems:", *(f"  - {p}" for p in problems)]
    if not_gated := _not_gated_lines(gate):
        lines += ["", *not_gated]
    lines += ["", _decision(gate)]
    return "\n".join(lines) + "\n"


def format_markdown(gate: GateResult) -> str:
    """The same as :func:`format_text`, as GitHub-flavoured markdown."""
    table = rows(gate)
    escape = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [f"## layername gate: {'PASS' if gate.passed else 'FAIL'}", ""]
    lines.append("| " + " | ".join(table[0]) + " |")
    lines.append("|" + "---|" * len(table[0]))
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in table[1:]]
    problems = _problems(gate)
    if problems:
        lines += ["", "**Problems**", "", *(f"- {escape(p)}" for p in problems)]
    if not_gated := _not_gated_lines(gate):
        lines += ["", f"**{escape(not_gated[0])}**", "", *(f"- {escape(line.strip())}" for line in not_gated[1:])]
    lines += ["", _decision(gate)]
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername gate``."""
    p.add_argument("reports_dir", metavar="REPORTS_DIR", help="folder holding <cell>.json reports")
    p.add_argument("--matrix", default=DEFAULT_MATRIX, help="matrix file (default: %(default)s)")
    p.add_argument("--tier", action="append", default=[], help="cells of this tier are required (repeatable)")
    p.add_argument("--cell", action="append", default=[], help="this cell is required (repeatable)")
    p.add_argument("--markdown", help="markdown summary path (default: REPORTS_DIR/gate.md)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="release mode: a required cell skipped for a missing device fails (default: it is reported NOT GATED)",
    )
    p.add_argument(
        "--compat-md", metavar="PATH", help="also write the compatibility table (e.g. docs/compatibility.md)"
    )
    p.set_defaults(func=_cmd_gate)


def _cmd_gate(args: argparse.Namespace) -> int:
    try:
        gate = run_gate(args.matrix, args.reports_dir, args.tier, args.cell, strict=args.strict)
    except MatrixError as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return 2
    print(format_text(gate), end="")
    markdown = format_markdown(gate)
    summary_path = Path(args.markdown) if args.markdown else Path(args.reports_dir) / "gate.md"
    try:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(markdown, encoding="utf-8")
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(markdown)
        if args.compat_md:
            from .compat_table import render

            Path(args.compat_md).parent.mkdir(parents=True, exist_ok=True)
            Path(args.compat_md).write_text(render(gate), encoding="utf-8")
    except OSError as error:
        print(f"layername: error: cannot write the gate summary: {error}", file=sys.stderr)
        return 1
    return 0 if gate.passed else 1
