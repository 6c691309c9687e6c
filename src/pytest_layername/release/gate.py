"""The release gate: turn the matrix cells' JSON reports into one fail-closed pass/fail decision.

Rules (``layername gate --matrix matrix.toml [--tier T] [--cell C] REPORTS_DIR``):

* The cells selected by ``--tier``/``--cell`` (all cells when neither is given) are *required*: each must
  have a report ``<cell>.json`` that passes every check. A required cell that is missing, unreadable or
  incomplete fails the gate. A required cell is *not gated* only when it has a skip marker
  (``<cell>.skipped.json``, left by a run that found no device) and the gate itself finds that this machine
  lacks the cell's device: a marker of a CPU cell, a marker on a machine that has the device, a marker of
  another cell, or a marker next to a report fails. The gate says loudly which tiers it did not gate; with
  ``--strict`` (a release) such a skip fails the gate. A gate that gated no cell fails.
* A cell that is not required may be missing or skipped, but if it has a report, the report must pass
  too: a failure is never ignored.
* A report passes when it is about this run of this cell: complete; its ``run.cell`` is the cell and its
  ``run.cell_digest`` is the digest of the cell's table (and known bugs) in this matrix file; its
  implementation is the cell's ``impl``; its pytest arguments are ``layername cell``'s command plus only
  output and parallelism options; it deselected nothing the cell's own ``pytest_args`` do not, and every
  selected test has a result; it was made by this pytest-layername version from the expected commit
  (``--commit``, default the HEAD of the checkout the gate runs in), from a clean tree (``--allow-dirty``
  accepts changes), and ended at most ``--max-age-days`` ago, not in the future. A report that records no
  commit (a run outside a git checkout, such as a GPU machine's copy of the tree) passes only with
  ``--allow-no-commit``; a gate outside a checkout needs ``--commit`` or ``--allow-no-commit``.
* Then it must match the cell: its torch satisfies the cell's spec, it ran on the cell's device, its
  ``detected_mode`` equals the cell's ``expected_mode``, it ran exactly the cell's modes and exercised every
  one (no ``not_exercised`` mode, no ``allow_not_exercised`` opt-out), it did not skip opaque-mode tests of
  an unhoisted ``LayerName`` (``allow_unhoisted``) unless the cell allows it, its summary agrees with its
  tests and stays within ``max_failed``/``min_passed``/``max_skipped``, the known torch bugs it hit (strict
  expected failures) are exactly the cell's ``known_bugs``, and for each mode the maximum of each budgeted
  stat over the cell's ``budget_tests`` run in that mode stays within that mode's budget (a budget that no
  test recorded is a failure, not a pass).

Every problem names the cell and the report field.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion

from .cell import command_problem
from .inputs import short
from .matrix import Cell, MatrixError, device_available, load_matrix, read_skip_marker
from .provenance import git_state, project_version, resolve_commit
from .report import ReportError, load_report, summarize

PASSED, FAILED, MISSING, SKIPPED, NOT_GATED = "passed", "failed", "missing", "skipped", "not gated"
#: how far in the future a run's end may lie (clocks of the machines that ran the cells)
CLOCK_SKEW = dt.timedelta(minutes=5)
DEFAULT_MAX_AGE_DAYS = 7.0


class GateUsageError(ValueError):
    """Gate options that cannot be acted on (exit status 2)."""


@dataclass(frozen=True)
class Expectations:
    """What every report must show beyond its cell: where it came from and when."""

    commit: str | None  # the commit reports must come from; None: only with allow_no_commit
    commit_source: str  # where ``commit`` came from, for the output
    allow_no_commit: bool = False
    allow_dirty: bool = False
    max_age: dt.timedelta = dt.timedelta(days=DEFAULT_MAX_AGE_DAYS)
    version: str = field(default_factory=project_version)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    @classmethod
    def resolve(
        cls,
        commit: str | None = None,
        allow_no_commit: bool = False,
        allow_dirty: bool = False,
        max_age_days: float = DEFAULT_MAX_AGE_DAYS,
        directory: str | os.PathLike[str] = ".",
    ) -> Expectations:
        """The expected commit: ``commit`` (a SHA or, in a checkout, any revision), else HEAD of ``directory``'s
        checkout; outside one, :class:`GateUsageError` unless ``allow_no_commit``."""
        if not max_age_days > 0:
            raise GateUsageError(f"--max-age-days must be a positive number of days, got {max_age_days}")
        if commit is not None:
            resolved = resolve_commit(commit, directory)
            if resolved is None:
                raise GateUsageError(f"--commit {short(commit)} is neither a full commit SHA nor a revision here")
            commit, source = resolved, "--commit"
        else:
            commit = git_state(directory)[0]
            source = f"HEAD of the checkout at {Path(directory).resolve()}"
            if commit is None and not allow_no_commit:
                raise GateUsageError(
                    f"no expected commit: {Path(directory).resolve()} is not a git checkout; pass --commit SHA "
                    "(the commit the reports must come from) or --allow-no-commit"
                )
        if commit is None:
            source = "not in a git checkout"
        return cls(commit, source, allow_no_commit, allow_dirty, dt.timedelta(days=max_age_days))


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
    expect: Expectations | None = None

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results) and any(r.required and r.status == PASSED for r in self.results)

    @property
    def not_gated(self) -> list[CellResult]:
        """Required cells skipped for a missing device and not gated (only without ``--strict``)."""
        return [r for r in self.results if r.status == NOT_GATED]


def _check_identity(cell: Cell, run: dict[str, Any], problems: list[str]) -> None:
    """The report is of this cell, as defined now, run the way ``layername cell`` runs it."""
    if run["cell"] != cell.name:
        problems.append(
            f"run.cell: the report is of cell {short(run['cell'])}, not {cell.name!r} (another cell's report?)"
            if run["cell"] is not None
            else f"run.cell: the report is of no cell (run it with `layername cell {cell.name}`)"
        )
    elif run["cell_digest"] != cell.digest:
        problems.append(
            f"run.cell_digest: {str(run['cell_digest'])[:12]} is not this cell's {cell.digest[:12]}: the run was "
            "made for another definition of the cell or of a known bug it lists (rerun the cell)"
        )
    if run["impl"] != cell.impl:
        problems.append(f"run.impl: the run tested {short(run['impl'])}, the cell tests {cell.impl}")
    if problem := command_problem(cell, run["pytest_args"]):
        problems.append(f"run.pytest_args: {problem}")


def _check_origin(run: dict[str, Any], expect: Expectations, problems: list[str]) -> None:
    """The report was made by this version from the expected commit, recently."""
    if run["project_version"] != expect.version:
        made_by = short(run["project_version"])
        problems.append(f"run.project_version: made by pytest-layername {made_by}, the gate is {expect.version}")
    commit = run["git_commit"]
    if commit is None and not expect.allow_no_commit:
        problems.append(
            "run.git_commit: the run recorded no commit (it ran outside a git checkout); "
            "--allow-no-commit accepts such reports"
        )
    elif commit is not None and expect.commit is not None and commit != expect.commit:
        problems.append(
            f"run.git_commit: made from {commit[:12]}, not the expected {expect.commit[:12]} ({expect.commit_source})"
        )
    if run["git_dirty"] and not expect.allow_dirty:
        problems.append("run.git_dirty: the run's checkout had uncommitted changes (commit, rerun; or --allow-dirty)")
    start, end = _time(run["start"]), _time(run["end"])
    if start is None:
        problems.append(f"run.start: {short(run['start'])} is not an ISO 8601 time with a UTC offset")
    if end is None:
        problems.append(f"run.end: {short(run['end'])} is not an ISO 8601 time with a UTC offset (session not ended?)")
    if start is None or end is None:
        return
    if end < start:
        problems.append(f"run.end: {run['end']} is before run.start {run['start']}")
    if end > expect.now + CLOCK_SKEW:
        problems.append(f"run.end: {run['end']} is in the future (now {expect.now.isoformat(timespec='seconds')})")
    elif expect.now - end > expect.max_age:
        problems.append(f"run.end: {run['end']} is older than {expect.max_age.days} day(s) (--max-age-days)")


def _check_collection(cell: Cell, run: dict[str, Any], tests: list[dict[str, Any]], problems: list[str]) -> None:
    """The run kept every test it collected (beyond the cell's own selection) and reports each one."""
    collected, selected, deselected = run["collected"], run["selected"], run["deselected"]
    if collected is None or selected is None or deselected is None:
        problems.append("run.collected: the run recorded no collection counts (it never finished collecting)")
        return
    if deselected and not cell.selects:
        problems.append(
            f"run.deselected: {deselected} of the {collected} collected tests were deselected (-k, -m, --deselect): "
            "a subset of the suite"
        )
    if collected != selected + deselected:
        problems.append(
            f"run.selected: {selected} selected and {deselected} deselected of {collected} collected: "
            f"{collected - selected - deselected} tests were dropped without being deselected"
        )
    if len(tests) != selected:
        problems.append(f"tests: {len(tests)} results for the {selected} selected tests (run.selected)")


def _check_modes(cell: Cell, run: dict[str, Any], problems: list[str]) -> None:
    """The run exercised every mode the cell lists, and did not opt out of hoisting unless the cell allows it."""
    if set(run["modes"]) != set(cell.run_modes):
        problems.append(f"run.modes: the suite ran modes {list(run['modes'])}, the cell runs {list(cell.run_modes)}")
    if missed := [m for m in cell.run_modes if m in run["not_exercised"]]:
        why = "; ".join(f"{m}: {short(run['not_exercised'][m])}" for m in missed)
        problems.append(f"run.not_exercised: the cell's mode(s) {', '.join(missed)} were not exercised ({why})")
    if run["allow_not_exercised"] and (dropped := [m for m in cell.run_modes if m not in run["modes"]]):
        problems.append(
            f"run.allow_not_exercised: the run opted out of the cell's mode(s) {', '.join(dropped)} "
            "(--layername-allow-not-exercised)"
        )
    if run["allow_unhoisted"] and not cell.allow_unhoisted:
        problems.append(
            "run.allow_unhoisted: the run skips opaque-mode tests of an unhoisted LayerName instead of failing "
            "them (--layername-allow-unhoisted); the cell does not allow it (allow_unhoisted = true)"
        )


def _check_report(cell: Cell, report: dict[str, Any], result: CellResult, expect: Expectations) -> None:
    problems = result.problems
    run = report["run"]  # load_report validated the report against its schema
    result.run = run
    if report["complete"] is not True:
        problems.append(f"complete: the report is incomplete: {report.get('incomplete_reason') or 'no reason given'}")
    _check_identity(cell, run, problems)
    _check_origin(run, expect, problems)
    tests = report["tests"]
    _check_collection(cell, run, tests, problems)
    result.torch = run["torch"]
    try:
        if not cell.allows(result.torch):
            problems.append(f"run.torch: ran torch {result.torch}, which is not {cell.requirement} (wrong environment)")
    except InvalidVersion:
        problems.append(f"run.torch: {short(result.torch)} is not a version")
    device = run["device"]
    if device != cell.device:
        problems.append(f"run.device: ran on device {device!r}, the cell is {cell.device!r}")
    result.detected_mode = run["detected_mode"]
    if result.detected_mode != cell.expected_mode:
        problems.append(
            f"run.detected_mode: detected mode {result.detected_mode!r} but torch {cell.torch} must detect "
            f"{cell.expected_mode!r}"
        )
    result.modes = list(run["modes"])
    _check_modes(cell, run, problems)
    result.seconds = _seconds(run["start"], run["end"])

    result.summary = report["summary"]
    if summarize(tests) != result.summary:
        problems.append(f"summary: {result.summary} disagrees with the {len(tests)} tests listed")
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


def _time(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time with a UTC offset, or None."""
    try:
        when = dt.datetime.fromisoformat(text) if text is not None else None
    except ValueError:
        return None
    return when if when is not None and when.utcoffset() is not None else None


def _seconds(start: str, end: str | None) -> float | None:
    begun, ended = _time(start), _time(end)
    return (ended - begun).total_seconds() if begun is not None and ended is not None else None


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


def _judge_skip(cell: Cell, marker: Path, result: CellResult, required: bool, strict: bool) -> None:
    """A skip marker stands for a cell only when this machine, too, lacks the cell's device."""
    try:
        reason = read_skip_marker(marker, cell.name)
    except MatrixError as error:
        result.problems.append(str(error))
        return
    if cell.device == "cpu":
        result.problems.append(f"skip marker {marker}: a cpu cell always runs, this one is left over (rerun the cell)")
        return
    present, found = device_available(cell.device)
    if present:
        result.problems.append(
            f"skip marker {marker} says {short(reason)}, but this machine has {cell.device} ({found}): "
            "the cell can run here (rerun it)"
        )
        return
    result.skip_reason = reason
    result.status = NOT_GATED if required and not strict else SKIPPED
    if required and strict:
        result.problems.append(f"required cell was skipped (--strict): {reason}")


def evaluate_cell(
    cell: Cell,
    reports_dir: str | os.PathLike[str],
    required: bool,
    strict: bool,
    expect: Expectations,
) -> CellResult:
    """Judge one cell from its report (or skip marker) in ``reports_dir``."""
    report_path = cell.report_path(reports_dir)
    marker_path = cell.skip_marker_path(reports_dir)
    result = CellResult(cell=cell, required=required, status=MISSING)
    report_there, marker_there = os.path.lexists(report_path), os.path.lexists(marker_path)
    if report_there and marker_there:
        result.status = FAILED
        result.problems.append(f"both {report_path} and {marker_path}: results of two runs (rerun the cell)")
        return result
    if marker_there:
        _judge_skip(cell, marker_path, result, required, strict)
        return result
    if not report_there:
        result.problems.append(
            f'no report {report_path} (run `nox -s "matrix({cell.name})"` or collect its reports here)'
        )
        return result
    try:
        report = load_report(report_path)
        _check_report(cell, report, result, expect)
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
    expect: Expectations | None = None,
) -> GateResult:
    """Evaluate every cell of the matrix; the ones selected by ``tiers``/``names`` are required.

    ``strict`` (a release): a required cell skipped for a missing device fails instead of being not gated.
    ``expect``: the commit, version and age every report must show (default: :meth:`Expectations.resolve`,
    HEAD of the current directory's checkout).
    """
    matrix = load_matrix(matrix_path)
    expect = expect or Expectations.resolve()
    required = {c.name for c in matrix.select(tiers or (), names or ())}
    results = [evaluate_cell(c, reports_dir, c.name in required, strict, expect) for c in matrix.cells]
    known = {c.report_path(reports_dir).name for c in matrix.cells}
    folder = Path(reports_dir)
    stray = sorted(
        p.name
        for p in (folder.glob("*.json") if folder.is_dir() else [])
        if p.name not in known and not p.name.endswith(".skipped.json")
    )
    return GateResult(results=results, stray=stray, expect=expect)


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


def _commit_text(run: dict[str, Any]) -> str:
    if not run:
        return "-"
    commit = run.get("git_commit")
    return f"{commit[:12]}{'+dirty' if run.get('git_dirty') else ''}" if commit else "none"


def rows(gate: GateResult) -> list[list[str]]:
    """The gate table: a header row, then one row per cell."""
    table = [["cell", "tier", "required", "torch", "expected", "detected", "modes", "passed", "failed", "skipped"]]
    table[0] += ["known bugs", "budgets", "commit", "verdict"]
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
                _commit_text(r.run),
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
    lines += ["", _expected_line(gate), _decision(gate)]
    return "\n".join(lines) + "\n"


def _expected_line(gate: GateResult) -> str:
    expect = gate.expect
    if expect is None:
        return "expected commit: -"
    commit = expect.commit or "none"
    flags = (("--allow-no-commit", expect.allow_no_commit), ("--allow-dirty", expect.allow_dirty))
    extra = [flag for flag, on in flags if on]
    return f"expected commit: {commit} ({expect.commit_source}){'; ' + ', '.join(extra) if extra else ''}"


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
    lines += ["", escape(_expected_line(gate)), "", _decision(gate)]
    return "\n".join(lines) + "\n"
