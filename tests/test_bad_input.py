"""Bad input gets one clear message (what, where, how to fix), a non-zero exit, and nothing is overwritten or lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_layername.cli import main
from pytest_layername.core.implementation import ImplementationError, load_implementation
from pytest_layername.core.modes import ModeError, resolve_mode
from pytest_layername.harness.models import ModelError, build_model
from pytest_layername.release.matrix import MatrixError, load_matrix
from pytest_layername.release.report import ReportError, load_report, write_report

GOOD_CELL = """
[cells."cpu-torch2.13"]
torch = "==2.13.0"
expected_mode = "opaque"
device = "cpu"
tier = "ci"
budgets = { max_failed = 0, opaque = {} }
"""


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    """Run the CLI; it must exit ``code`` (argparse errors raise SystemExit) with the message on stderr."""
    try:
        result = main(argv)
    except SystemExit as exit_:
        result = exit_.code
    captured = capsys.readouterr()
    assert result == code, (result, captured.out, captured.err)
    assert "Traceback" not in captured.err
    return captured.err


# -- unknown mode -----------------------------------------------------------------------------------


def test_unknown_mode_library():
    with pytest.raises(
        ModeError, match=r"unknown layer-name mode 'hoisted'; choose one of: auto, opaque, string, both"
    ):
        resolve_mode("hoisted")


def test_unknown_mode_cli(capsys):
    err = _cli_error(capsys, ["compile-stats", "--mode", "hoisted"])
    assert "argument --mode: invalid choice: 'hoisted'" in err


def test_unknown_mode_plugin_env(pytester, monkeypatch):
    monkeypatch.setenv("LAYERNAME_MODE", "hoisted")
    pytester.makepyfile("def test_x(layername_mode):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*layername: unknown layer-name mode 'hoisted'; choose one of*"])


# -- implementation without the API -----------------------------------------------------------------


def test_impl_without_api_library():
    with pytest.raises(ImplementationError) as error:
        load_implementation("json")
    message = str(error.value)
    assert "module 'json' is not a usable layer-name implementation" in message
    assert "missing attribute 'LayerName'" in message and "The contract: LayerName" in message


@pytest.mark.parametrize(
    ("impl", "message"),
    [
        ("json", "module 'json' is not a usable layer-name implementation: missing attribute 'LayerName'"),
        ("no_such_impl_module", "cannot import layer-name implementation 'no_such_impl_module'"),
    ],
)
def test_impl_without_api_cli(capsys, impl, message):
    err = _cli_error(capsys, ["compile-stats", "--impl", impl, "--layers", "1", "--compiler", "eager"])
    assert err.startswith("layername: error: ") and message in err, err


def test_impl_without_api_plugin(pytester):
    pytester.makepyfile("def test_x(layername_impl):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--layername-impl", "json")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*module 'json' is not a usable layer-name implementation*"])


# -- unknown model name -----------------------------------------------------------------------------


def test_unknown_model_library():
    with pytest.raises(ModelError, match=r"unknown model 'llama'; choose one of: decoder, moe, hybrid"):
        build_model("llama", 2, load_implementation(), "string")


def test_unknown_model_cli(capsys):
    err = _cli_error(capsys, ["compile-stats", "--model", "llama"])
    assert "argument --model: invalid choice: 'llama'" in err


def test_zero_layers_cli(capsys):
    err = _cli_error(capsys, ["compile-stats", "--layers", "0", "--mode", "string", "--compiler", "eager"])
    assert "a model needs at least one layer, got 0" in err


# -- malformed matrix.toml --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cells.x\ntorch = 1", "is not valid TOML"),
        ("", "no cells; add at least one [cells.<name>] table"),
        (GOOD_CELL.replace('tier = "ci"\n', ""), "missing required field 'tier'"),
        (GOOD_CELL.replace('device = "cpu"', 'device = "tpu"'), "device 'tpu' is not one of"),
        (GOOD_CELL + 'colour = "red"\n', "unknown"),
    ],
)
def test_malformed_matrix(tmp_path, capsys, text, message):
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(MatrixError) as error:
        load_matrix(path)
    assert str(path) in str(error.value) and message in str(error.value), str(error.value)
    err = _cli_error(capsys, ["matrix", "--matrix", str(path)])
    assert err.startswith("layername: error: ") and message in err, err
    assert path.read_text() == text  # the user's file is left as it was


def test_missing_matrix(tmp_path, capsys):
    err = _cli_error(capsys, ["matrix", "--matrix", str(tmp_path / "nope.toml")])
    assert "does not exist (pass --matrix PATH)" in err


def test_gate_with_malformed_matrix_writes_nothing(tmp_path, capsys):
    reports, matrix = tmp_path / "reports", tmp_path / "matrix.toml"
    reports.mkdir()
    matrix.write_text("[cells.x\n")
    err = _cli_error(capsys, ["gate", str(reports), "--matrix", str(matrix)])
    assert "is not valid TOML" in err
    assert list(reports.iterdir()) == []  # no summary written over anything


# -- missing or corrupt report ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist (did the cell run and write --layername-report?)"),
        ('{"schema_version": 1, "tests": [', "is unreadable"),
        ("[1, 2]", "(top level): [1, 2] is not of type 'object'"),
        ('{"schema_version": 2}', "(top level): 'complete' is a required property"),
        ('{"schema_version": 99, "complete": true, "run": {}, "tests": [], "summary": {}}', "has schema_version 99"),
    ],
)
def test_missing_or_corrupt_report(tmp_path, capsys, content, message):
    path = tmp_path / "cpu-torch2.13.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as error:
        load_report(path)
    assert str(path) in str(error.value) and message in str(error.value)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(GOOD_CELL)
    try:
        code = main(["gate", str(tmp_path), "--matrix", str(matrix), "--markdown", str(tmp_path / "gate.md")])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr().out
    assert code == 1, out
    assert str(path) in out and "cpu-torch2.13" in out
    if content is not None:
        assert path.read_text() == content  # the corrupt report is kept for inspection, not replaced


def test_failed_report_write_keeps_the_previous_report(tmp_path):
    path = tmp_path / "report.json"
    write_report(path, {"schema_version": 1, "complete": True, "run": {}, "tests": [], "summary": {}})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_report(path, {"schema_version": 1, "not_json": object()})
    assert path.read_bytes() == before
    assert json.loads(before)["complete"] is True


def test_plugin_report_to_unwritable_path_is_an_error(pytester):
    blocker = pytester.path / "file"
    blocker.write_text("not a directory")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--layername-report", str(blocker / "r.json"))
    assert result.ret != 0
    assert Path(blocker).read_text() == "not a directory"


def test_report_error_messages_say_how_to_fix(tmp_path):
    with pytest.raises(ReportError, match=r"--layername-report"):
        load_report(tmp_path / "missing.json")
