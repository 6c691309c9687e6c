"""Bad input gets one clear message (what, where, how to fix), a non-zero exit, and nothing is overwritten or lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_layername.cli import main
from pytest_layername.core.implementation import ImplementationError, load_implementation
from pytest_layername.core.modes import ModeError, resolve_mode
from pytest_layername.harness.models import ModelError, build_model
from pytest_layername.release.matrix import MatrixError, load_matrix
from pytest_layername.release.report import ReportError, load_report, write_report

COMMIT = ["--commit", "0123456789abcdef0123456789abcdef01234567"]  # the gate's expected commit, wherever this runs
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
    err = _cli_error(capsys, ["gate", str(reports), "--matrix", str(matrix), *COMMIT])
    assert "is not valid TOML" in err
    assert list(reports.iterdir()) == []  # no summary written over anything


# -- missing or corrupt report ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist (did the cell run and write --layername-report?)"),
        ('{"schema_version": 1, "tests": [', "is unreadable"),
        ("[1, 2]", "(top level): [1, 2] is not of type 'object'"),
        ('{"schema_version": 3}', "(top level): 'complete' is a required property"),
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
        code = main(["gate", str(tmp_path), "--matrix", str(matrix), "--markdown", str(tmp_path / "gate.md"), *COMMIT])
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


# -- every bad input to cell, gate, matrix and audit: one line, exit 2 ---------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
MATRIX_TOML = str(ROOT / "matrix.toml")


def _bad_paths(tmp_path: Path) -> dict[str, Path]:
    """A file, a directory, a FIFO, a link to /dev/zero, an over-long and a too deeply nested matrix file."""
    paths = {"file": tmp_path / "a-file", "dir": tmp_path / "a-dir", "fifo": tmp_path / "a-fifo"}
    paths["file"].write_text("x", encoding="utf-8")
    paths["dir"].mkdir()
    os.mkfifo(paths["fifo"])
    paths["zero"] = tmp_path / "zero-link"
    paths["zero"].symlink_to("/dev/zero")
    paths["big"] = tmp_path / "big.toml"
    with open(paths["big"], "wb") as handle:
        handle.truncate(2 * 2**20)
    paths["deep"] = tmp_path / "deep.toml"
    paths["deep"].write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    return paths


def _names_matrix(tmp_path: Path, name: str) -> str:
    path = tmp_path / "names.toml"
    path.write_text(GOOD_CELL.replace('[cells."cpu-torch2.13"]', f"[cells.{json.dumps(name)}]"), encoding="utf-8")
    return str(path)


BAD_INPUTS = [
    (["gate", "{file}", *COMMIT], "REPORTS_DIR {file} is not a directory"),
    (["gate", "{dir}", "--matrix", "/dev/zero", *COMMIT], "matrix file /dev/zero is a character device, not a regular"),
    (["gate", "{dir}", "--matrix", "{zero}", *COMMIT], "is a character device, not a regular file"),
    (["gate", "{dir}", "--matrix", "{dir}", *COMMIT], "matrix file {dir} is a directory, not a regular file"),
    (["gate", "{dir}", "--matrix", "{fifo}", *COMMIT], "matrix file {fifo} is a FIFO, not a regular file"),
    (["gate", "{dir}", "--matrix", "{big}", *COMMIT], "is 2097152 bytes, larger than the 1 MiB a matrix file may be"),
    (["gate", "{dir}", "--matrix", "{deep}", *COMMIT], "matrix file {deep} is not valid TOML: nested too deeply"),
    (["gate", "{dir}", "--commit", "not-a-commit"], "--commit 'not-a-commit' is neither a full commit SHA nor a"),
    (["gate", "{dir}", "--max-age-days", "0", *COMMIT], "--max-age-days must be a positive number of days, got 0.0"),
    (["gate", "{dir}", "--max-age-days", "soon"], "argument --max-age-days: invalid float value: 'soon'"),
    (["gate", "{dir}", "--markdown", "{dir}", *COMMIT], "cannot write the gate summary: [Errno 21] Is a directory"),
    (["gate"], "the following arguments are required: REPORTS_DIR"),
    (["cell", "cpu-torch2.13", "--matrix", MATRIX_TOML, "--reports", "{file}"], "--reports {file} is not a directory"),
    (["cell", "cpu-torch2.13", "--matrix", MATRIX_TOML, "--pytest-args", "'x"], "'x\": No closing quotation"),
    (["cell", "nope", "--matrix", MATRIX_TOML], "no cell named 'nope'; cells: cpu-torch2.10"),
    (["cell", "x" * 300, "--matrix", MATRIX_TOML], "no cell named 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxx"),
    (["cell", "c", "--matrix", "/dev/zero"], "matrix file /dev/zero is a character device, not a regular file"),
    (["cell", "c", "--matrix", "{name:" + "n" * 300 + "}"], "a cell name may not be empty or longer than 64"),
    (["cell", "c", "--matrix", "{name:..}"], "cell '..': a cell name may not be empty"),
    (["cell", "c", "--matrix", "{name:\x00}"], "cell '\\x00': a cell name may not be empty"),
    (["cell", "c", "--matrix", "{name:*}"], "cell '*': a cell name may not be empty"),
    (["cell", "c", "--matrix", "{name:C:}"], "cell 'C:': a cell name may not be empty"),
    (["cell", "c", "--matrix", "{name:}"], "cell '': a cell name may not be empty"),
    (["matrix", "--matrix", "/dev/zero"], "matrix file /dev/zero is a character device, not a regular file"),
    (["matrix", "--matrix", "{fifo}"], "matrix file {fifo} is a FIFO, not a regular file"),
    (["matrix", "--matrix", MATRIX_TOML, "--tier", "nightly"], "no cell has tier 'nightly'"),
    (["matrix", "--github", "--cell"], "argument --cell: expected one argument"),
    (["audit"], "nothing to audit: pass --walk PACKAGE, --namespace NS and/or --model MODULE:FACTORY"),
    (["audit", "--namespace", "x", "--baseline", "/dev/zero"], "--baseline '/dev/zero': not a regular file"),
    (["audit", "--namespace", "x", "--baseline", "{dir}"], "--baseline '{dir}': not a regular file"),
    (["audit", "--layers", "many"], "argument --layers: invalid int value: 'many'"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_INPUTS, ids=[" ".join(a[:3])[:40] for a, _ in BAD_INPUTS])
def test_every_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    paths = {key: str(value) for key, value in _bad_paths(tmp_path).items()}

    def fill(text: str) -> str:
        if text.startswith("{name:"):
            return _names_matrix(tmp_path, text[6:-1])
        return text.format(**paths) if text.startswith("{") or "{" in needle else text

    err = _cli_error(capsys, [fill(arg) for arg in argv])
    assert err.count("\n") == 1 and err.startswith("layername"), err
    assert needle.format(**paths) in err, err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"complete": false, "complete": true}', "is unreadable: duplicate key 'complete' in one object"),
        ("[" * 100_000 + "]" * 100_000, "is unreadable: nested deeper than 32 levels"),
        ('{"a": ' * 40 + "1" + "}" * 40, "is unreadable: nested deeper than 32 levels"),
        ("[" + "0," * (8 * 2**20) + "0]", "(top level): [0, 0, 0, 0, 0, 0, ...] is not of type 'object'"),
        ("link:/dev/zero", "is a character device, not a regular file"),
        ("dir", "is a directory, not a regular file"),
        ("fifo", "is a FIFO, not a regular file"),
        ("big", "is 67108865 bytes, larger than the 64 MiB a report may be"),
    ],
    ids=["duplicate key", "deep list", "deep objects", "16 MB list", "link to /dev/zero", "directory", "FIFO", "big"],
)
def test_a_bad_report_fails_the_gate_in_one_line_without_echoing_it(tmp_path, capsys, content, needle):
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(GOOD_CELL)
    path = tmp_path / "cpu-torch2.13.json"
    if content == "dir":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)
    elif content.startswith("link:"):
        path.symlink_to(content[5:])
    elif content == "big":
        with open(path, "wb") as handle:
            handle.truncate(64 * 2**20 + 1)
    else:
        path.write_text(content, encoding="utf-8")
    code = main(["gate", str(tmp_path), "--matrix", str(matrix), "--markdown", str(tmp_path / "gate.md"), *COMMIT])
    out = capsys.readouterr().out
    assert code == 1
    assert f"- cpu-torch2.13: report {path} " in out and needle in out, out[:3000]
    assert len(out) < 3000 and len((tmp_path / "gate.md").read_text()) < 3000  # the input is not echoed back
