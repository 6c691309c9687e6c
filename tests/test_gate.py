"""The release gate over reports written in report.py's schema: it passes only on good, complete evidence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_layername.cli import main
from pytest_layername.compile.stats import CompileStats
from pytest_layername.release.gate import run_gate
from pytest_layername.release.matrix import Cell, load_matrix, write_skip_marker
from pytest_layername.release.report import SCHEMA_VERSION, summarize, write_report

ROOT = Path(__file__).resolve().parents[1]
MATRIX_TOML = ROOT / "matrix.toml"
MATRIX = load_matrix(MATRIX_TOML)
CI = {c.expected_mode: c for c in MATRIX.select(["ci"])}  # one string and one opaque cell
SUITE = "src/pytest_layername/suite/test_models.py"
LAYERS = 32


def pinned(cell: Cell) -> str:
    """A torch version the cell's spec admits (its first clause's version)."""
    return next(iter(cell.torch)).version


def test_entry(
    nodeid: str, mode: str | None, outcome: str = "passed", known_bug: str | None = None, **stats: int
) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "mode": mode,
        "outcome": outcome,
        "duration": 0.5,
        "stats": CompileStats(**stats).as_dict() if stats else None,
        "fusion": None,
        "known_bug": known_bug,
    }


test_entry.__test__ = False  # a helper, not a test


def model_tests(cell: Cell, **overrides: int) -> list[dict[str, Any]]:
    """Reference-model tests as the suite records them, per mode, every stat at its budget unless overridden."""
    tests = []
    for mode in cell.run_modes:
        counts = {stat: limit for stat, limit in cell.stat_budgets(mode).items()}
        counts.update(overrides)
        budgeted = f"{SUITE}::test_decoder_inductor[{mode}-{LAYERS}]"
        assert cell.budgeted(budgeted), f"{cell.name}'s budget_tests no longer cover {budgeted}"
        tests += [
            test_entry(budgeted, mode, pieces=LAYERS + 1, **counts),
            test_entry(f"{SUITE}::test_schema_takes_opaque_or_str[{mode}]", mode),
            test_entry(f"{SUITE}::test_triton_pieces_are_shared_like_on_cpu[{mode}-decoder]", mode, outcome="skipped"),
        ]
    tests += [test_entry(f"{SUITE}::test_bug_{bug}", None, "xfailed", known_bug=bug) for bug in cell.known_bugs]
    return tests


def make_report(cell: Cell, tests: list[dict[str, Any]] | None = None, **run: Any) -> dict[str, Any]:
    tests = model_tests(cell) if tests is None else tests
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": True,
        "incomplete_reason": None,
        "run": {
            "torch": pinned(cell),
            "device": cell.device,
            "device_name": "Test CPU",
            "cuda_version": None,
            "driver_version": None,
            "cuda_available": False,
            "known_bugs": [],
            "requested_mode": cell.mode_option,
            "modes": list(cell.run_modes),
            "detected_mode": cell.expected_mode,
            "opaque_supported": cell.expected_mode == "opaque",
            "opaque_reason": None,
            "impl": "pytest_layername.core.reference",
            "impl_native_mode": cell.expected_mode,
            "impl_switch": "pytest_layername.core.reference._USE_LAYERNAME",
            "not_exercised": {},
            "allow_unhoisted": False,
            "python": "3.11.7",
            "platform": "Linux",
            "workers": 2,
            "start": "2026-11-26T15:00:00+00:00",
            "end": "2026-11-26T15:05:00+00:00",
            **run,
        },
        "tests": tests,
        "summary": summarize(tests),
    }


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """A reports folder holding a good report for each ci cell."""
    folder = tmp_path / "reports"
    for cell in CI.values():
        write_report(cell.report_path(folder), make_report(cell))
    return folder


def gate(reports: Path, *args: str) -> int:
    return main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--tier", "ci", *args])


def assert_fails(reports: Path, capsys: pytest.CaptureFixture[str], cell: Cell, needle: str) -> str:
    assert gate(reports) == 1
    out = capsys.readouterr().out
    assert f"- {cell.name}: " in out and needle in out, out
    assert "gate: FAIL" in out
    return out


def test_good_reports_pass_and_write_markdown(reports, capsys, monkeypatch, tmp_path):
    step_summary = tmp_path / "step_summary.md"
    step_summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    assert gate(reports) == 0
    out = capsys.readouterr().out
    assert f"gate: PASS ({len(CI)}/{len(CI)} required cells passed)" in out
    for cell in CI.values():
        assert cell.name in out
    markdown = (reports / "gate.md").read_text(encoding="utf-8")
    assert markdown.startswith("## layername gate: PASS")
    assert step_summary.read_text(encoding="utf-8") == "earlier step\n" + markdown


def test_markdown_path_option(reports, capsys, tmp_path):
    target = tmp_path / "out" / "summary.md"
    assert gate(reports, "--markdown", str(target)) == 0
    assert "| cpu" in target.read_text(encoding="utf-8")


@pytest.mark.parametrize("mode", sorted(CI))
def test_missing_report_fails(reports, capsys, mode):
    cell = CI[mode]
    cell.report_path(reports).unlink()
    out = assert_fails(reports, capsys, cell, f"no report {cell.report_path(reports)}")
    assert "FAIL: missing" in out


def test_missing_reports_folder_fails(tmp_path, capsys):
    assert gate(tmp_path / "never-written") == 1
    assert "no report" in capsys.readouterr().out


@pytest.mark.parametrize("mode", sorted(CI))
def test_detected_mode_differs_fails(reports, capsys, mode):
    cell = CI[mode]
    other = "string" if mode == "opaque" else "opaque"
    write_report(cell.report_path(reports), make_report(cell, detected_mode=other))
    assert_fails(reports, capsys, cell, f"detected mode {other!r} but torch {cell.torch} must detect {mode!r}")


def test_opaque_unique_pieces_n_plus_1_fails(reports, capsys):
    """The unhoisted outcome (every layer its own piece) in an opaque cell is over budget."""
    cell = CI["opaque"]
    write_report(cell.report_path(reports), make_report(cell, model_tests(cell, unique_pieces=LAYERS + 1)))
    limit = cell.stat_budgets("opaque")["unique_pieces"]
    assert_fails(reports, capsys, cell, f"opaque unique_pieces over budget max_unique_pieces={limit}")


@pytest.mark.parametrize("cell_mode", sorted(CI))
def test_each_stat_budget_of_each_mode_fails_one_over(reports, capsys, cell_mode):
    """Every mode's budgets are checked separately: one stat one over in one mode fails the cell."""
    cell = CI[cell_mode]
    for mode in cell.run_modes:
        assert cell.stat_budgets(mode), f"{cell.name} sets no {mode} stat budget"
        for stat, limit in cell.stat_budgets(mode).items():
            tests = [
                {**t, "stats": {**t["stats"], stat: limit + 1}} if t["mode"] == mode and t["stats"] else t
                for t in model_tests(cell)
            ]
            write_report(cell.report_path(reports), make_report(cell, tests))
            out = assert_fails(reports, capsys, cell, f"{mode} {stat} over budget max_{stat}={limit}")
            assert f"({limit + 1})" in out


def test_tests_outside_budget_tests_do_not_count(reports, capsys):
    """The broken-op test records N+1 unique pieces on purpose; budget_tests leaves it out."""
    cell = CI["opaque"]
    broken = f"{SUITE}::test_broken_op_is_caught[opaque]"
    assert not cell.budgeted(broken)
    tests = [*model_tests(cell), test_entry(broken, "opaque", unique_pieces=17, pieces=17)]
    write_report(cell.report_path(reports), make_report(cell, tests))
    assert gate(reports) == 0


def test_budget_nothing_recorded_fails(reports, capsys):
    cell = CI["opaque"]
    tests = [test_entry(f"{SUITE}::test_schema_takes_opaque_or_str[opaque]", "opaque")]
    write_report(cell.report_path(reports), make_report(cell, tests))
    assert_fails(reports, capsys, cell, "unchecked: no opaque-mode test matching")


def test_stats_from_another_mode_do_not_satisfy_a_budget(reports, capsys):
    cell = CI["opaque"]
    tests = [{**t, "mode": "string"} for t in model_tests(cell)]
    write_report(cell.report_path(reports), make_report(cell, tests, modes=["opaque", "string"]))
    assert_fails(reports, capsys, cell, "unchecked")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "is unreadable"),
        ("[]", "(top level): [] is not of type 'object'"),
        (f'{{"schema_version": {SCHEMA_VERSION}}}', "(top level): 'complete' is a required property"),
        ('{"schema_version": 2, "complete": NaN}', "NaN is not a JSON number"),
    ],
)
def test_unreadable_report_fails(reports, capsys, content, needle):
    cell = CI["string"]
    cell.report_path(reports).write_text(content, encoding="utf-8")
    assert_fails(reports, capsys, cell, needle)


def test_other_schema_version_fails(reports, capsys):
    cell = CI["string"]
    write_report(cell.report_path(reports), {**make_report(cell), "schema_version": SCHEMA_VERSION + 1})
    assert_fails(reports, capsys, cell, f"schema_version {SCHEMA_VERSION + 1}")


def test_malformed_report_fails_without_crashing(reports, capsys):
    cell = CI["opaque"]
    report = make_report(cell)
    del report["tests"][0]["outcome"]
    write_report(cell.report_path(reports), report)
    assert_fails(reports, capsys, cell, "tests.0: 'outcome' is a required property")


def test_incomplete_report_fails(reports, capsys):
    cell = CI["opaque"]
    report = {**make_report(cell), "complete": False, "incomplete_reason": "xdist worker gw1 crashed"}
    write_report(cell.report_path(reports), report)
    assert_fails(reports, capsys, cell, "report is incomplete: xdist worker gw1 crashed")


def test_wrong_torch_fails(reports, capsys):
    cell = CI["string"]
    write_report(cell.report_path(reports), make_report(cell, torch=pinned(CI["opaque"])))
    assert_fails(reports, capsys, cell, f"which is not {cell.requirement}")


def test_local_version_tag_is_accepted(reports):
    cell = CI["opaque"]
    write_report(cell.report_path(reports), make_report(cell, torch=f"{pinned(cell)}+cpu"))
    assert gate(reports) == 0


def test_wrong_device_fails(reports, capsys):
    cell = CI["string"]
    write_report(cell.report_path(reports), make_report(cell, device="cuda"))
    assert_fails(reports, capsys, cell, "ran on device 'cuda', the cell is 'cpu'")


def test_expected_mode_not_run_fails(reports, capsys):
    cell = CI["opaque"]
    tests = [{**t, "mode": "string"} for t in model_tests(cell)]
    write_report(cell.report_path(reports), make_report(cell, tests, requested_mode="string", modes=["string"]))
    assert_fails(reports, capsys, cell, "the suite ran modes ['string'], the cell runs ['opaque', 'string']")


@pytest.mark.parametrize("outcome", ["failed", "error"])
def test_failures_over_budget_fail(reports, capsys, outcome):
    cell = CI["string"]
    broken = f"{SUITE}::test_fake_and_real_agree[string-moe]"
    tests = [*model_tests(cell)] + [test_entry(broken, "string", outcome=outcome)] * (cell.max_failed + 1)
    write_report(cell.report_path(reports), make_report(cell, tests))
    assert_fails(reports, capsys, cell, f"budget max_failed={cell.max_failed}): {broken}")


def test_summary_that_disagrees_with_tests_fails(reports, capsys):
    cell = CI["string"]
    report = make_report(cell)
    report["tests"][0]["outcome"] = "failed"  # the summary still counts it as passed
    write_report(cell.report_path(reports), report)
    assert_fails(reports, capsys, cell, "disagrees with the")


def test_no_passed_tests_fails(reports, capsys):
    cell = CI["string"]
    write_report(cell.report_path(reports), make_report(cell, [], modes=[cell.expected_mode]))
    assert_fails(reports, capsys, cell, f"fewer than min_passed={cell.min_passed}")


def test_required_skipped_cell_fails_with_strict_and_says_why(reports, capsys):
    for gpu in MATRIX.select(["gpu"]):
        write_skip_marker(gpu, reports, "no cuda: nvidia-smi is not on PATH")
    assert gate(reports, "--tier", "gpu", "--strict") == 1
    out = capsys.readouterr().out
    assert "FAIL: skipped (no cuda: nvidia-smi is not on PATH)" in out
    assert f"{MATRIX.select(['gpu'])[0].name}: required cell was skipped (--strict)" in out


def test_device_skipped_cells_are_not_gated_loudly_without_strict(reports, capsys):
    """The main job on a CPU-only machine: CPU cells gate, GPU cells are NOT GATED (loudly), exit 0."""
    for gpu in MATRIX.select(["gpu"]):
        write_skip_marker(gpu, reports, "no cuda: nvidia-smi is not on PATH")
    for cell in MATRIX.cells:
        if cell.device == "cpu" and not cell.report_path(reports).exists():
            write_report(cell.report_path(reports), make_report(cell))
    assert main(["gate", "--matrix", str(MATRIX_TOML), str(reports)]) == 0
    out = capsys.readouterr().out
    assert "NOT GATED: tier(s) gpu (this machine cannot run them; a release needs --strict):" in out
    cpu = sum(c.device == "cpu" for c in MATRIX.cells)
    assert f"gate: PASS ({cpu}/{len(MATRIX.cells)} required cells passed; NOT GATED: " in out
    assert main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--strict"]) == 1


def test_a_gate_that_gated_nothing_fails(reports, capsys):
    for gpu in MATRIX.select(["gpu"]):
        write_skip_marker(gpu, reports, "no cuda: nvidia-smi is not on PATH")
    assert main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--tier", "gpu"]) == 1
    assert "no required cell was gated" in capsys.readouterr().out


def test_skipped_cell_that_is_not_required_is_shown_not_failed(reports, capsys):
    gpu = MATRIX.select(["gpu"])[0]
    write_skip_marker(gpu, reports, "no cuda: nvidia-smi is not on PATH")
    assert gate(reports) == 0
    assert "skipped (no cuda: nvidia-smi is not on PATH) (not required)" in capsys.readouterr().out


def test_unreadable_skip_marker_is_not_a_skip(reports, capsys):
    gpu = MATRIX.select(["gpu"])[0]
    gpu.skip_marker_path(reports).write_text("nope", encoding="utf-8")
    assert gate(reports, "--tier", "gpu") == 1
    assert "is unreadable" in capsys.readouterr().out


def test_failing_report_of_a_cell_that_is_not_required_still_fails(reports, capsys):
    other = next(c for c in MATRIX.cells if c.tier != "ci")
    wrong = "string" if other.expected_mode == "opaque" else "opaque"
    write_report(other.report_path(reports), make_report(other, detected_mode=wrong))
    assert gate(reports) == 1
    assert f"- {other.name}: detected mode {wrong!r}" in capsys.readouterr().out


def test_all_cells_required_without_tier(reports, capsys):
    """With no --tier/--cell every cell is required: a CPU-only reports folder does not pass a release."""
    assert main(["gate", "--matrix", str(MATRIX_TOML), str(reports)]) == 1
    assert f"{len(CI)}/{len(MATRIX.cells)} required cells passed" in capsys.readouterr().out


def test_required_cell_by_name(reports, capsys):
    cell = CI["opaque"]
    assert main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--cell", cell.name]) == 0
    assert "1/1 required cells passed" in capsys.readouterr().out


def test_stray_report_is_noted(reports, capsys):
    (reports / "cpu-torch9.9.json").write_text("{}", encoding="utf-8")
    assert gate(reports) == 0
    assert "ignored cpu-torch9.9.json: no cell of the matrix has this name" in capsys.readouterr().out


def test_max_skipped_budget(tmp_path):
    matrix_file = tmp_path / "matrix.toml"
    matrix_file.write_text(
        '[cells.gpu13]\ntorch = "==2.13.0"\nexpected_mode = "opaque"\ndevice = "cuda"\ntier = "gpu"\n'
        "budgets = { max_failed = 0, max_skipped = 0, opaque = {} }\n",
        encoding="utf-8",
    )
    cell = load_matrix(matrix_file).cell("gpu13")
    write_report(cell.report_path(tmp_path), make_report(cell))
    result = run_gate(matrix_file, tmp_path)
    assert not result.passed
    assert any("1 tests skipped (budget max_skipped=0)" in p for p in result.results[0].problems)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tier", "nightly"], "no cell has tier 'nightly'"),
        (["--cell", "nope"], "no cell named 'nope'"),
        (["--matrix", "missing.toml"], "matrix file missing.toml does not exist"),
    ],
)
def test_usage_errors_exit_2(reports, capsys, args, needle):
    assert main(["gate", str(reports), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layername: error: ") and needle in err


def test_console_script_exit_codes(reports):
    command = [sys.executable, "-m", "pytest_layername", "gate", "--matrix", str(MATRIX_TOML), str(reports)]
    assert subprocess.run([*command, "--tier", "ci"], capture_output=True, check=False).returncode == 0
    CI["opaque"].report_path(reports).unlink()
    failed = subprocess.run([*command, "--tier", "ci"], capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "gate: FAIL" in failed.stdout
    assert "Traceback" not in failed.stderr


def _set(report: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    target: Any = report
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value


DELETE = object()
STATS = "tests.0.stats"


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("run.device", DELETE, "run: 'device' is a required property"),
        ("run.device", "", "run.device: '' is not one of ['cpu', 'cuda']"),
        ("run.torch", 2.13, "run.torch: 2.13 is not of type 'string'"),
        ("run.detected_mode", "Opaque", "run.detected_mode: 'Opaque' is not one of"),
        ("run.modes", [], "run.modes: [] should be non-empty"),
        ("run.workers", -1, "run.workers: -1 is less than the minimum of 0"),
        (f"{STATS}.unique_pieces", -5, f"{STATS}.unique_pieces: -5 is less than the minimum of 0"),
        (f"{STATS}.unique_pieces", 3.9, f"{STATS}.unique_pieces: 3.9 is not of type 'integer'"),
        (f"{STATS}.inductor_compiles", "3", f"{STATS}.inductor_compiles: '3' is not of type 'integer'"),
        (f"{STATS}.hash_disagreements", DELETE, "'hash_disagreements' is a required property"),
        (f"{STATS}.recompiles", None, f"{STATS}.recompiles: None is not of type 'integer'"),
        ("tests.0.outcome", "pass", "tests.0.outcome: 'pass' is not one of"),
        ("tests.0.mode", "hoisted", "tests.0.mode: 'hoisted' is not one of"),
        ("tests.0.duration", -0.5, "tests.0.duration: -0.5 is less than the minimum of 0"),
        ("tests.0.nodeid", DELETE, "tests.0: 'nodeid' is a required property"),
        ("summary.failed", -1, "summary.failed: -1 is less than the minimum of 0"),
        ("summary.passed", 2.5, "summary.passed: 2.5 is not of type 'integer'"),
        ("summary.flaky", 0, "summary: Additional properties are not allowed ('flaky' was unexpected)"),
        ("complete", "yes", "complete: 'yes' is not of type 'boolean'"),
        ("tests", {}, "tests: {} is not of type 'array'"),
    ],
)
def test_corrupted_report_fails_closed_naming_the_field(reports, capsys, path, value, needle):
    """Every corruption of a good report fails the gate, and the message names the field."""
    cell = CI["opaque"]
    report = make_report(cell)
    _set(report, path, value)
    write_report(cell.report_path(reports), report)
    assert_fails(reports, capsys, cell, needle)


def test_truncated_report_fails(reports, capsys):
    cell = CI["opaque"]
    text = cell.report_path(reports).read_text(encoding="utf-8")
    cell.report_path(reports).write_text(text[: len(text) // 2], encoding="utf-8")
    assert_fails(reports, capsys, cell, "is unreadable")


def test_schema_covers_every_count_the_harness_records():
    """The schema's required stats are exactly ``CompileStats.COUNT_FIELDS`` (plus seconds, reasons, pieces)."""
    from pytest_layername.release.report import report_schema

    required = set(report_schema()["$defs"]["stats"]["required"])
    assert required == {
        *CompileStats.COUNT_FIELDS,
        "compile_seconds",
        "recompile_reasons",
        "pieces_detail",
        "artifacts_source",
        "engine_counts",
    }


def test_known_bugs_must_be_exactly_the_declared_ones(reports, capsys):
    cell = CI["opaque"]
    assert cell.known_bugs, "the opaque ci cell declares its known torch bugs"
    stale = [t for t in model_tests(cell) if t["outcome"] != "xfailed"]
    write_report(cell.report_path(reports), make_report(cell, stale))
    assert_fails(reports, capsys, cell, f"declared known torch bug(s) {cell.known_bugs[0]} were not hit")
    extra = [*model_tests(cell), test_entry(f"{SUITE}::test_other", None, "xfailed", known_bug="pytorch-175973")]
    write_report(cell.report_path(reports), make_report(cell, extra))
    assert_fails(reports, capsys, cell, "hit known torch bug(s) pytorch-175973 that the cell does not declare")
    untied = [*model_tests(cell), test_entry(f"{SUITE}::test_other", None, "xfailed")]
    write_report(cell.report_path(reports), make_report(cell, untied))
    assert_fails(reports, capsys, cell, "expected failures not tied to a known torch bug")


def test_compatibility_table_lists_cells_counts_and_known_bugs(reports, tmp_path):
    target = tmp_path / "docs" / "compatibility.md"
    assert main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--tier", "ci", "--compat-md", str(target)]) == 0
    table = target.read_text(encoding="utf-8")
    opaque = CI["opaque"]
    row = next(line for line in table.splitlines() if line.startswith(f"| {opaque.name} |"))
    assert "| opaque, string |" in row and f"({', '.join(opaque.known_bugs)})" in row and "| 300 s |" in row
    assert "| 33 / 4 / 3 / 0 / 0 / 0 |" in row  # opaque maxima: pieces / unique / compiles / hits / ...
    assert f"- `{opaque.known_bugs[0]}`" in table
