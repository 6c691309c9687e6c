"""The release gate over reports written in report.py's schema: it passes only on good, complete evidence."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from pytest_layername.cli import main
from pytest_layername.compile.stats import CompileStats
from pytest_layername.release.cell import cell_arguments
from pytest_layername.release.gate import Expectations, run_gate
from pytest_layername.release.matrix import Cell, load_matrix, tomllib, write_skip_marker
from pytest_layername.release.provenance import project_version
from pytest_layername.release.report import SCHEMA_VERSION, summarize, write_report

ROOT = Path(__file__).resolve().parents[1]
MATRIX_TOML = ROOT / "matrix.toml"
MATRIX = load_matrix(MATRIX_TOML)
CI = {c.expected_mode: c for c in MATRIX.select(["ci"])}  # one string and one opaque cell
SUITE = "src/pytest_layername/suite/test_models.py"
LAYERS = 32
#: the commit the crafted reports come from; every gate here is told to expect it (--commit), so the tests
#: do not depend on the checkout (or none) they run in
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
#: pyproject's addopts, which a cell run in this checkout picks up (its -m is overridden by the cell's -m "")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INI_ADDOPTS = PYPROJECT["tool"]["pytest"]["ini_options"]["addopts"]


@pytest.fixture(autouse=True)
def _no_gpu(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An nvidia-smi that finds no GPU, first on PATH: the gate's device check answers the same on any machine."""
    folder = tmp_path_factory.mktemp("bin")
    fake_nvidia_smi(folder, "No devices were found", code=6)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n", encoding="utf-8")
    script.chmod(0o755)


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


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds")


def make_report(of: Cell, tests: list[dict[str, Any]] | None = None, **run: Any) -> dict[str, Any]:
    """A complete, well-formed report of cell ``of`` from commit :data:`COMMIT`, as ``layername cell`` makes it."""
    cell = of
    tests = model_tests(cell) if tests is None else tests
    end = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": True,
        "incomplete_reason": None,
        "run": {
            "run_id": uuid.uuid4().hex,
            "cell": cell.name,
            "cell_digest": cell.digest,
            "project_version": project_version(),
            "git_commit": COMMIT,
            "git_dirty": False,
            "impl_version": project_version(),
            "pytest_args": [*INI_ADDOPTS, *cell_arguments(cell, Path("/ran/here/reports"))],
            "collected": len(tests),
            "selected": len(tests),
            "deselected": 0,
            "allow_not_exercised": False,
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
            "start": _iso(end - dt.timedelta(minutes=5)),
            "end": _iso(end),
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
    return main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--tier", "ci", "--commit", COMMIT, *args])


def gate_all(reports: Path, *args: str) -> int:
    """The gate over every cell (no --tier), expecting :data:`COMMIT`."""
    return main(["gate", "--matrix", str(MATRIX_TOML), str(reports), "--commit", COMMIT, *args])


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
    """The 12-layer fusion model's pieces are not the budgeted models'; budget_tests leaves them out."""
    cell = CI["opaque"]
    other = f"{SUITE}::test_fusion_model_with_two_digit_names[opaque]"
    assert not cell.budgeted(other)
    tests = [*model_tests(cell), test_entry(other, "opaque", unique_pieces=17, pieces=17)]
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
    assert gate_all(reports) == 0
    out = capsys.readouterr().out
    assert "NOT GATED: tier(s) gpu (this machine cannot run them; a release needs --strict):" in out
    cpu = sum(c.device == "cpu" for c in MATRIX.cells)
    assert f"gate: PASS ({cpu}/{len(MATRIX.cells)} required cells passed; NOT GATED: " in out
    assert gate_all(reports, "--strict") == 1


def test_a_gate_that_gated_nothing_fails(reports, capsys):
    for gpu in MATRIX.select(["gpu"]):
        write_skip_marker(gpu, reports, "no cuda: nvidia-smi is not on PATH")
    assert gate_all(reports, "--tier", "gpu") == 1
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
    assert f"- {other.name}: run.detected_mode: detected mode {wrong!r}" in capsys.readouterr().out


def test_all_cells_required_without_tier(reports, capsys):
    """With no --tier/--cell every cell is required: a CPU-only reports folder does not pass a release."""
    assert gate_all(reports) == 1
    assert f"{len(CI)}/{len(MATRIX.cells)} required cells passed" in capsys.readouterr().out


def test_required_cell_by_name(reports, capsys):
    cell = CI["opaque"]
    assert gate_all(reports, "--cell", cell.name) == 0
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
    result = run_gate(matrix_file, tmp_path, expect=Expectations(COMMIT, "--commit"))
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
    assert main(["gate", str(reports), "--commit", COMMIT, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layername: error: ") and needle in err


def test_console_script_exit_codes(reports):
    command = [sys.executable, "-m", "pytest_layername", "gate", "--matrix", str(MATRIX_TOML), str(reports)]
    command += ["--commit", COMMIT]
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
    assert gate(reports, "--compat-md", str(target)) == 0
    table = target.read_text(encoding="utf-8")
    opaque = CI["opaque"]
    row = next(line for line in table.splitlines() if line.startswith(f"| {opaque.name} |"))
    assert "| opaque, string |" in row and f"({', '.join(opaque.known_bugs)})" in row and "| 300 s |" in row
    assert "| 33 / 4 / 3 / 0 / 0 / 0 |" in row  # opaque maxima: pieces / unique / compiles / hits / ...
    assert f"- `{opaque.known_bugs[0]}`" in table


# --- the report is about this run of this cell: one defect per field, each failing naming the field -------------


def _days_ago(days: float) -> str:
    return _iso(dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=days))


OPAQUE = CI["opaque"]
ONE_MODE_TESTS = [t for t in model_tests(OPAQUE) if t["mode"] != "string"]


@pytest.mark.parametrize(
    ("run", "tests", "needle"),
    [
        ({"cell": None}, None, "run.cell: the report is of no cell (run it with `layername cell cpu-torch2.13`)"),
        ({"cell_digest": "0" * 64}, None, f"run.cell_digest: 000000000000 is not this cell's {OPAQUE.digest[:12]}"),
        (
            {"impl": "vllm.utils.torch_utils"},
            None,
            "run.impl: the run tested 'vllm.utils.torch_utils', the cell tests pytest_layername.core.reference",
        ),
        ({"pytest_args": ["-k", "budget"]}, None, "run.pytest_args: not the command `layername cell cpu-torch2.13`"),
        (
            {"pytest_args": [*INI_ADDOPTS, *cell_arguments(OPAQUE, Path("r")), "-k", "decoder or bug"]},
            None,
            "run.pytest_args: added -k 'decoder or bug', which may change which tests run",
        ),
        (
            {"pytest_args": [*INI_ADDOPTS, *cell_arguments(OPAQUE, Path("r")), "-m", "not layername_slow"]},
            None,
            "run.pytest_args: added -m 'not layername_slow'",  # after the cell's -m '': it wins
        ),
        (
            {"pytest_args": [*INI_ADDOPTS, *cell_arguments(OPAQUE, Path("r")), "--ignore=x"]},
            None,
            "run.pytest_args: added --ignore=x",
        ),
        (
            {"pytest_args": ["-x", *INI_ADDOPTS, *cell_arguments(OPAQUE, Path("r"))]},
            None,
            "run.pytest_args: added -x",
        ),
        ({"deselected": 80, "collected": 80 + 7}, None, "run.deselected: 80 of the 87 collected tests were deselected"),
        ({"collected": 12}, None, "run.selected: 7 selected and 0 deselected of 12 collected: 5 tests were dropped"),
        ({"collected": 10, "selected": 10}, None, "tests: 7 results for the 10 selected tests (run.selected)"),
        ({"collected": None}, None, "run.collected: the run recorded no collection counts"),
        (
            {"not_exercised": {"string": "no switch"}},
            None,
            "run.not_exercised: the cell's mode(s) string were not exercised (string: 'no switch')",
        ),
        (
            {"allow_not_exercised": True, "modes": ["opaque"], "collected": 4, "selected": 4},
            ONE_MODE_TESTS,
            "run.allow_not_exercised: the run opted out of the cell's mode(s) string",
        ),
        ({"allow_unhoisted": True}, None, "run.allow_unhoisted: the run skips opaque-mode tests of an unhoisted"),
        ({"git_commit": OTHER_COMMIT}, None, "run.git_commit: made from fedcba987654, not the expected 0123456789ab"),
        ({"git_commit": None}, None, "run.git_commit: the run recorded no commit (it ran outside a git checkout)"),
        ({"git_dirty": True}, None, "run.git_dirty: the run's checkout had uncommitted changes"),
        ({"project_version": "0.0.1"}, None, "run.project_version: made by pytest-layername '0.0.1', the gate is"),
        (
            {"start": "2019-01-01T10:00:00+00:00", "end": "2019-01-01T10:05:00+00:00"},
            None,
            "run.end: 2019-01-01T10:05:00+00:00 is older than 7 day(s) (--max-age-days)",
        ),
        ({"end": "2099-01-01T10:05:00+00:00"}, None, "run.end: 2099-01-01T10:05:00+00:00 is in the future"),
        ({"start": _days_ago(0), "end": _days_ago(1)}, None, "is before run.start"),
        ({"end": None}, None, "run.end: None is not an ISO 8601 time with a UTC offset"),
        ({"start": "2026-11-26T15:00:00"}, None, "run.start: '2026-11-26T15:00:00' is not an ISO 8601 time"),
    ],
)
def test_one_defect_fails_naming_the_field(reports, capsys, run, tests, needle):
    """A well-formed report of the opaque ci cell with exactly one defect: the gate names the cell and the field."""
    write_report(OPAQUE.report_path(reports), make_report(OPAQUE, tests, **run))
    out = assert_fails(reports, capsys, OPAQUE, needle)
    assert "FAIL: failed" in out


def test_another_cells_report_under_this_name_fails(reports, capsys):
    string = CI["string"]
    write_report(OPAQUE.report_path(reports), make_report(string))
    assert_fails(reports, capsys, OPAQUE, f"run.cell: the report is of cell {string.name!r}, not {OPAQUE.name!r}")


def test_duplicate_complete_key_fails(reports, capsys):
    """``"complete": false, "complete": true``: the last key would win in a lax parser; here it is an error."""
    path = OPAQUE.report_path(reports)
    text = path.read_text(encoding="utf-8")
    assert '"complete": true' in text
    path.write_text('{"complete": false, ' + text.lstrip()[1:], encoding="utf-8")
    assert_fails(reports, capsys, OPAQUE, f"report {path} is unreadable: duplicate key 'complete' in one object")


@pytest.mark.parametrize(
    ("args", "run"),
    [
        ([], {}),
        (["--allow-no-commit"], {"git_commit": None, "git_dirty": None}),
        (["--allow-dirty"], {"git_dirty": True}),
        (["--max-age-days", "30"], {"start": _days_ago(20.1), "end": _days_ago(20)}),
        ([], {"pytest_args": [*INI_ADDOPTS, *cell_arguments(OPAQUE, Path("r")), "-n", "6", "-q", "-rfExX", "--tb=no"]}),
        ([], {"pytest_args": ["-p", "no:cacheprovider", *cell_arguments(OPAQUE, Path("r")), "-n6", "--dist", "load"]}),
    ],
)
def test_well_formed_reports_pass(reports, capsys, args, run):
    """Positive controls: what the checks must let through (the flags that accept a looser report, too)."""
    write_report(OPAQUE.report_path(reports), make_report(OPAQUE, **run))
    assert gate(reports, *args) == 0, capsys.readouterr().out


def _one_cell(tmp_path: Path, extra: str = "") -> Cell:
    """A one-cell matrix in tmp_path: torch 2.13 on cpu, opaque mode, no budgets beyond max_failed."""
    matrix_file = tmp_path / "matrix.toml"
    matrix_file.write_text(
        '[cells.c13]\ntorch = "==2.13.0"\nexpected_mode = "opaque"\ndevice = "cpu"\ntier = "t"\n'
        f"{extra}budgets = {{ max_failed = 0, opaque = {{}} }}\n",
        encoding="utf-8",
    )
    return load_matrix(matrix_file).cell("c13")


def _judge(tmp_path: Path, cell: Cell, report: dict[str, Any]) -> list[str]:
    write_report(cell.report_path(tmp_path), report)
    result = run_gate(tmp_path / "matrix.toml", tmp_path, expect=Expectations(COMMIT, "--commit"))
    return result.results[0].problems


def test_a_cell_may_allow_unhoisted(tmp_path):
    allowing = _one_cell(tmp_path, "allow_unhoisted = true\n")
    assert allowing.allow_unhoisted and "--layername-allow-unhoisted" in cell_arguments(allowing, tmp_path)
    assert _judge(tmp_path, allowing, make_report(allowing, allow_unhoisted=True)) == []
    strict = _one_cell(tmp_path)  # the same cell without the field: the same kind of report fails
    problems = _judge(tmp_path, strict, make_report(strict, allow_unhoisted=True))
    assert any(p.startswith("run.allow_unhoisted:") for p in problems), problems


def test_a_cell_may_select_its_own_subset(tmp_path):
    """``-k`` in the cell's own pytest_args (covered by its digest) defines the cell: that deselection passes."""
    subset = _one_cell(tmp_path, 'pytest_args = ["-k", "decoder"]\n')
    assert subset.selects
    tests = model_tests(subset)
    report = make_report(subset, collected=len(tests) + 40, deselected=40)
    assert _judge(tmp_path, subset, report) == []
    whole = _one_cell(tmp_path)
    problems = _judge(tmp_path, whole, make_report(whole, collected=len(tests) + 40, deselected=40))
    assert any(p.startswith("run.deselected: 40 of the") for p in problems), problems


def test_a_cell_names_its_implementation(tmp_path):
    vllm = _one_cell(tmp_path, 'impl = "vllm.utils.torch_utils"\n')
    assert f"--layername-impl={vllm.impl}" in cell_arguments(vllm, tmp_path)
    assert _judge(tmp_path, vllm, make_report(vllm, impl="vllm.utils.torch_utils")) == []
    problems = _judge(tmp_path, vllm, make_report(vllm))
    assert (
        "run.impl: the run tested 'pytest_layername.core.reference', the cell tests vllm.utils.torch_utils" in problems
    )


def test_the_digest_changes_with_the_cell_and_with_a_known_bug_it_lists(tmp_path):
    base = _one_cell(tmp_path, 'known_bugs = ["hoisted-kwargs-nyi"]\n')
    assert _one_cell(tmp_path, 'known_bugs = ["hoisted-kwargs-nyi"]\n').digest == base.digest  # deterministic
    assert _one_cell(tmp_path, 'known_bugs = ["hoisted-kwargs-nyi"]\ndescription = "x"\n').digest != base.digest
    assert _one_cell(tmp_path).digest != base.digest

    from pytest_layername.release import known_bugs, matrix

    edited = known_bugs.parse_registry(
        known_bugs.resources.files(known_bugs.__package__).joinpath("known_bugs.toml").read_text(encoding="utf-8")
    )
    bug = edited["hoisted-kwargs-nyi"]
    edited["hoisted-kwargs-nyi"] = known_bugs.KnownBug(**{**bug.__dict__, "digest": "changed"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix, "registry", lambda: edited)
        assert _one_cell(tmp_path, 'known_bugs = ["hoisted-kwargs-nyi"]\n').digest != base.digest


# --- the expected commit -----------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh git checkout as the current directory; its HEAD commit."""
    if subprocess.run(["git", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.fail("git is needed to test the gate's default expected commit")
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "file").write_text("x", encoding="utf-8")
    _git(repo, "add", "file")
    _git(repo, "commit", "-q", "-m", "one")
    monkeypatch.chdir(repo)
    return _git(repo, "rev-parse", "HEAD")


def test_default_expected_commit_is_the_checkouts_head(reports, capsys, checkout):
    args = ["gate", "--matrix", str(MATRIX_TOML), str(reports), "--tier", "ci"]
    assert main(args) == 1  # the reports come from COMMIT, the checkout is at another commit
    out = capsys.readouterr().out
    assert f"run.git_commit: made from 0123456789ab, not the expected {checkout[:12]} (HEAD of the checkout at" in out
    for cell in CI.values():
        write_report(cell.report_path(reports), make_report(cell, git_commit=checkout))
    assert main(args) == 0
    assert f"expected commit: {checkout} (HEAD of the checkout at " in capsys.readouterr().out
    assert main([*args, "--commit", "HEAD"]) == 0  # a revision, resolved in the checkout
    assert main([*args, "--commit", "HEAD~5"]) == 2
    assert "--commit 'HEAD~5' is neither a full commit SHA nor a revision here" in capsys.readouterr().err


def test_outside_a_checkout_the_gate_needs_a_commit_or_allow_no_commit(reports, capsys, tmp_path, monkeypatch):
    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    monkeypatch.chdir(outside)
    args = ["gate", "--matrix", str(MATRIX_TOML), str(reports), "--tier", "ci"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("layername: error: no expected commit: ") and "pass --commit SHA" in err
    assert main([*args, "--allow-no-commit"]) == 0  # reports with a commit, and no commit to compare with
    assert "expected commit: none (not in a git checkout); --allow-no-commit" in capsys.readouterr().out


# --- skip markers: only for a device this machine lacks --------------------------------------------------------


def test_leftover_skip_marker_of_a_cpu_cell_fails(reports, capsys):
    OPAQUE.report_path(reports).unlink()
    write_skip_marker(OPAQUE, reports, "no cuda: nvidia-smi is not on PATH")
    assert_fails(reports, capsys, OPAQUE, "a cpu cell always runs, this one is left over (rerun the cell)")


def test_skip_marker_on_a_machine_with_the_device_fails(reports, capsys, _no_gpu):
    gpu = MATRIX.select(["gpu"])[0]
    write_skip_marker(gpu, reports, "no cuda: nvidia-smi is not on PATH")
    fake_nvidia_smi(_no_gpu, "GPU 0: NVIDIA H200 (UUID: GPU-x)")
    assert gate_all(reports, "--tier", "gpu") == 1
    out = capsys.readouterr().out
    assert f"- {gpu.name}: skip marker " in out and "but this machine has cuda (GPU 0: NVIDIA H200" in out


def test_skip_marker_next_to_a_report_fails(reports, capsys):
    write_skip_marker(OPAQUE, reports, "no cuda")
    assert_fails(reports, capsys, OPAQUE, f"both {OPAQUE.report_path(reports)} and {OPAQUE.skip_marker_path(reports)}")


def test_skip_marker_of_another_cell_fails(reports, capsys):
    gpu, other = MATRIX.select(["gpu"])[:2]
    write_skip_marker(other, reports, "no cuda")
    other.skip_marker_path(reports).rename(gpu.skip_marker_path(reports))
    assert gate_all(reports, "--tier", "gpu") == 1
    assert f"is of cell {other.name!r}, not {gpu.name!r}" in capsys.readouterr().out
