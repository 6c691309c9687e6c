"""The release gate: turn the matrix cells' JSON reports into one fail-closed pass/fail decision.

Rules (``layername gate --matrix matrix.toml [--tier T] [--cell C] REPORTS_DIR``):

* The cells selected by ``--tier``/``--cell`` (all cells when neither is given) are *required*: each must
  have a report ``<cell>.json`` that passes every check. A required cell that is missing, unreadable,
  incomplete or skipped (``<cell>.skipped.json``, e.g. no GPU) fails the gate: a skip is not a pass.
* A cell that is not required may be missing or skipped, but if it has a report, the report must pass
  too: a failure is never ignored.
* A report passes when it is complete, its torch satisfies the cell's spec, it ran on the cell's device,
  its ``detected_mode`` equals the cell's ``expected_mode`` (which it also ran), its summary agrees with
  its tests and stays within ``max_failed``/``min_passed``/``max_skipped``, and the maximum of each budgeted
  stat over the cell's ``budget_tests`` run in the expected mode stays within budget (a budget that no
  test recorded is a failure, not a pass).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion

from .matrix import DEFAULT_MATRIX, Cell, MatrixError, load_matrix, read_skip_marker
from .report import ReportError, load_report, summarize

PASSED, FAILED, MISSING, SKIPPED = "passed", "failed", "missing", "skipped"


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
    stats: dict[str, int | None] = field(default_factory=dict)  # budgeted stat -> max over expected-mode tests
    skip_reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether this cell lets the gate pass."""
        return self.status == PASSED or (not self.required and self.status in (MISSING, SKIPPED))

    @property
    def verdict(self) -> str:
        if self.status == SKIPPED:
            text = f"skipped ({self.skip_reason})" if self.skip_reason else "skipped"
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
        return bool(self.results) and all(r.ok for r in self.results) and any(r.required for r in self.results)


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
    if device.split(":")[0] != cell.device:
        problems.append(f"ran on device {device!r}, the cell is {cell.device!r}")
    result.detected_mode = run.get("detected_mode")
    if result.detected_mode != cell.expected_mode:
        problems.append(
            f"detected mode {result.detected_mode!r} but torch {cell.torch} must detect {cell.expected_mode!r}"
        )
    modes = run.get("modes") or []
    if cell.expected_mode not in modes:
        problems.append(f"the suite ran modes {modes}, not the expected mode {cell.expected_mode!r}")

    tests = report["tests"]
    result.summary = report["summary"]
    if summarize(tests) != {k: result.summary.get(k) for k in summarize(tests)}:
        problems.append(f"summary {result.summary} disagrees with the {len(tests)} tests listed")
    bad = result.summary.get("failed", 0) + result.summary.get("error", 0)
    if bad > cell.max_failed:
        failing = [t["nodeid"] for t in tests if t["outcome"] in ("failed", "error")]
        shown = ", ".join(failing[:5]) + (" ..." if len(failing) > 5 else "")
        problems.append(f"{bad} tests failed or errored (budget max_failed={cell.max_failed}): {shown}")
    if cell.max_skipped is not None and result.summary.get("skipped", 0) > cell.max_skipped:
        skipped = [t["nodeid"] for t in tests if t["outcome"] == "skipped"]
        problems.append(
            f"{len(skipped)} tests skipped (budget max_skipped={cell.max_skipped}): {', '.join(skipped[:5])}"
        )
    if result.summary.get("passed", 0) < cell.min_passed:
        problems.append(f"{result.summary.get('passed', 0)} tests passed, fewer than min_passed={cell.min_passed}")

    budgeted = [
        t for t in tests if t.get("mode") == cell.expected_mode and t.get("stats") and cell.budgeted(t["nodeid"])
    ]
    unchecked = []
    for stat, limit in cell.stat_budgets().items():
        values = {t["nodeid"]: t["stats"][stat] for t in budgeted if t["stats"].get(stat) is not None}
        result.stats[stat] = max(values.values()) if values else None
        if not values:
            unchecked.append(f"max_{stat}")
        elif max(values.values()) > limit:
            over = [f"{nodeid} ({value})" for nodeid, value in values.items() if value > limit]
            problems.append(f"{stat} over budget max_{stat}={limit} in {', '.join(over[:5])}")
    if unchecked:
        problems.append(
            f"budget {', '.join(unchecked)} unchecked: no {cell.expected_mode}-mode test matching "
            f"budget_tests {list(cell.budget_tests)} recorded stats"
        )


def evaluate_cell(cell: Cell, reports_dir: str | os.PathLike[str], required: bool) -> CellResult:
    """Judge one cell from its report (or skip marker) in ``reports_dir``."""
    report_path = cell.report_path(reports_dir)
    marker_path = cell.skip_marker_path(reports_dir)
    result = CellResult(cell=cell, required=required, status=MISSING)
    if not report_path.exists():
        if marker_path.exists():
            try:
                result.skip_reason = read_skip_marker(marker_path)
                result.status = SKIPPED
                if required:
                    result.problems.append(f"required cell was skipped: {result.skip_reason}")
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
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        result.status = FAILED
        result.problems.append(f"report {report_path} is malformed ({type(error).__name__}: {error})")
        return result
    result.status = FAILED if result.problems else PASSED
    return result


def run_gate(
    matrix_path: str | os.PathLike[str],
    reports_dir: str | os.PathLike[str],
    tiers: list[str] | None = None,
    names: list[str] | None = None,
) -> GateResult:
    """Evaluate every cell of the matrix; the ones selected by ``tiers``/``names`` are required."""
    matrix = load_matrix(matrix_path)
    required = {c.name for c in matrix.select(tiers or (), names or ())}
    results = [evaluate_cell(c, reports_dir, c.name in required) for c in matrix.cells]
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
        bad = result.summary.get("failed", 0) + result.summary.get("error", 0)
        parts.append(f"failed {bad}/{result.cell.max_failed}")
    for stat, limit in result.cell.stat_budgets().items():
        value = result.stats.get(stat)
        parts.append(f"{stat} {'-' if value is None else value}/{limit}")
    return ", ".join(parts) or "-"


def rows(gate: GateResult) -> list[list[str]]:
    """The gate table: a header row, then one row per cell."""
    table = [["cell", "tier", "required", "torch", "expected", "detected", "passed", "failed", "skipped", "budgets"]]
    table[0].append("verdict")
    for r in gate.results:
        s = r.summary
        passed, skipped = (str(s.get("passed", 0)), str(s.get("skipped", 0))) if s is not None else ("-", "-")
        failed = str(s.get("failed", 0) + s.get("error", 0)) if s is not None else "-"
        torch = f"{r.cell.torch} ({r.torch})" if r.torch else str(r.cell.torch)
        table.append(
            [
                r.cell.name,
                r.cell.tier,
                "yes" if r.required else "no",
                torch,
                r.cell.expected_mode,
                r.detected_mode or "-",
                passed,
                failed,
                skipped,
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
    return lines


def _decision(gate: GateResult) -> str:
    required = [r for r in gate.results if r.required]
    good = sum(r.status == PASSED for r in required)
    word = "PASS" if gate.passed else "FAIL"
    bad = [r.cell.name for r in gate.results if not r.ok]
    tail = f"; failing: {', '.join(bad)}" if bad else ""
    return f"gate: {word} ({good}/{len(required)} required cells passed{tail})"


def format_text(gate: GateResult) -> str:
    """A plain-text table, the problems, and the decision."""
    table = rows(gate)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    problems = _problems(gate)
    if problems:
        lines += ["", "problems:", *(f"  - {p}" for p in problems)]
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
    lines += ["", _decision(gate)]
    return "\n".join(lines) + "\n"


def add_parser(subparsers: Any) -> None:
    """Register ``layername gate`` on the CLI's subparsers."""
    p = subparsers.add_parser("gate", help="judge the matrix cells' reports: one fail-closed pass/fail decision")
    p.add_argument("reports_dir", metavar="REPORTS_DIR", help="folder holding <cell>.json reports")
    p.add_argument("--matrix", default=DEFAULT_MATRIX, help="matrix file (default: %(default)s)")
    p.add_argument("--tier", action="append", default=[], help="cells of this tier are required (repeatable)")
    p.add_argument("--cell", action="append", default=[], help="this cell is required (repeatable)")
    p.add_argument("--markdown", help="markdown summary path (default: REPORTS_DIR/gate.md)")
    p.set_defaults(func=_cmd_gate)


def _cmd_gate(args: argparse.Namespace) -> int:
    try:
        gate = run_gate(args.matrix, args.reports_dir, args.tier, args.cell)
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
    except OSError as error:
        print(f"layername: error: cannot write the gate summary: {error}", file=sys.stderr)
        return 1
    return 0 if gate.passed else 1
