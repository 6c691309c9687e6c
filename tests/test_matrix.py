"""matrix.toml loading and validation, the CI export and the device check."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pytest_layername.cli import main
from pytest_layername.compile.stats import CompileStats
from pytest_layername.release import matrix
from pytest_layername.release.matrix import MatrixError, load_matrix

ROOT = Path(__file__).resolve().parents[1]
MATRIX_TOML = ROOT / "matrix.toml"

GOOD_CELL = """
[cells."cpu-torch2.10"]
torch = "==2.10.0"
expected_mode = "string"
device = "cpu"
tier = "ci"
budgets = { max_failed = 0, string = {} }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cell_text(**fields: str) -> str:
    """A one-cell matrix whose fields are GOOD_CELL's, overridden (value None drops the line)."""
    lines = {
        "torch": '"==2.10.0"',
        "expected_mode": '"string"',
        "device": '"cpu"',
        "tier": '"ci"',
        "budgets": "{ max_failed = 0, string = {} }",
    }
    lines.update(fields)
    body = "\n".join(f"{key} = {value}" for key, value in lines.items() if value is not None)
    return f'[cells."c1"]\n{body}\n'


# --- the project's own matrix.toml ------------------------------------------------------------------


def test_project_matrix_is_valid_and_covers_both_modes_and_devices():
    m = load_matrix(MATRIX_TOML)
    assert {c.expected_mode for c in m.cells} == set(matrix.EXPECTED_MODES)
    assert {c.device for c in m.cells} == set(matrix.DEVICES)
    ci = m.select(["ci"])
    assert {c.expected_mode for c in ci} == {"string", "opaque"}
    assert all(c.device == "cpu" for c in ci), "ci cells must run on a CPU-only machine"
    for cell in m.cells:
        assert cell.expected_mode == matrix.mode_for_spec(cell.torch, cell.name)


def test_project_matrix_has_cells_for_the_ci_torch_versions():
    m = load_matrix(MATRIX_TOML)
    ci = {c.name: c for c in m.select(["ci"])}
    assert ci["cpu-torch2.10"].allows("2.10.0") and ci["cpu-torch2.10"].expected_mode == "string"
    assert ci["cpu-torch2.13"].allows("2.13.0+cpu") and ci["cpu-torch2.13"].expected_mode == "opaque"


def test_stat_budgets_name_compile_stats_counts():
    for budget in matrix.STAT_BUDGETS:
        assert budget.removeprefix("max_") in CompileStats.COUNT_FIELDS, budget


# --- validation errors name the file, the cell and the field ------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"torhc": '"==2.10.0"'}, "unknown key 'torhc'"),
        ({"torch": '"=>2.10"'}, "torch '=>2.10' is not a version specifier"),
        ({"torch": '""'}, "torch must not be empty"),
        ({"torch": None}, "missing required field 'torch'"),
        ({"expected_mode": None}, "missing required field 'expected_mode'"),
        ({"budgets": None}, "missing required field 'budgets'"),
        ({"expected_mode": '"opaque"'}, "expected_mode is 'opaque' but torch '==2.10.0' must run 'string'"),
        ({"torch": '"==2.13.0"'}, "expected_mode is 'string' but torch '==2.13.0' must run 'opaque'"),
        ({"expected_mode": '"hoisted"'}, "expected_mode 'hoisted' is not one of"),
        ({"torch": '">=2.9"'}, "admits versions both below and from 2.11"),
        ({"device": '"tpu"'}, "device 'tpu' is not one of cpu, cuda"),
        ({"device": "3"}, "device must be a string, got int 3"),
        ({"tier": '""'}, "tier must not be empty"),
        ({"budgets": "{ max_failed = -1, string = {} }"}, "budgets.max_failed must be >= 0"),
        ({"budgets": "{ max_failed = true, string = {} }"}, "budgets.max_failed must be an integer, got True"),
        ({"budgets": "{ max_failed = 0, max_uniq = 3, string = {} }"}, "unknown budget 'max_uniq'"),
        ({"budgets": "{ min_passed = 1, string = {} }"}, "budgets lacks 'max_failed'"),
        ({"budgets": "{ max_failed = 0 }"}, "no stat budgets for mode(s) string: add budgets.string"),
        ({"budgets": "{ max_failed = 0, max_unique_pieces = 3, string = {} }"}, "must sit in a per-mode table"),
        ({"budgets": "{ max_failed = 0, string = { max_unique_pieces = -1 } }"}, "budgets.string.max_unique_pieces"),
        ({"budgets": "{ max_failed = 0, string = {}, opaque = {} }"}, "budgets.opaque is set but the cell does not"),
        ({"modes": '["opaque", "string"]'}, "torch below 2.11 cannot run opaque mode"),
        ({"modes": '["opaque"]'}, "modes must list distinct modes including expected_mode 'string'"),
        ({"modes": '["fast"]'}, "modes ['fast'] are not among"),
        ({"known_bugs": '["no-such-bug"]'}, "known_bugs names 'no-such-bug', which known_bugs.toml does not define"),
        ({"known_bugs": '["hoisted-kwargs-nyi"]'}, "known bug 'hoisted-kwargs-nyi' is for torch >=2.11, not ==2.10.0"),
        ({"install": '"prebuilt"'}, "install must be a table of index_url"),
        ({"install": '{ index = "x" }'}, "unknown install key 'index'"),
        ({"install": "{ find_links = '/opt' }"}, "install.find_links must be a list"),
        ({"budget_tests": "[]"}, "budget_tests must list non-empty nodeid patterns"),
        ({"pytest_args": '"-x"'}, "pytest_args must be a list"),
    ],
)
def test_invalid_cell_names_file_cell_and_field(tmp_path, fields, needle):
    path = write(tmp_path, cell_text(**fields))
    with pytest.raises(MatrixError) as caught:
        load_matrix(path)
    message = str(caught.value)
    assert str(path) in message and "cell 'c1'" in message
    assert needle in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[cells", "is not valid TOML"),
        ("", "no cells"),
        ("[defaults]\nx = 1\n" + GOOD_CELL, "unknown top-level key 'defaults'"),
        ('[cells."a b"]\ntorch = "==2.10.0"\n', "a cell name may not"),
    ],
)
def test_invalid_file(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(MatrixError, match=needle) as caught:
        load_matrix(path)
    assert str(path) in str(caught.value)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(MatrixError, match=r"does not exist \(pass --matrix PATH\)"):
        load_matrix(tmp_path / "nope.toml")


# --- cells ----------------------------------------------------------------------------------------------


def test_cell_fields_and_install_options(tmp_path):
    text = cell_text(
        install='{ index_url = "https://i/simple", extra_index_urls = ["https://e"], find_links = ["/w"], pre = true }',
        budget_tests='["*::test_a*"]',
        budgets="{ max_failed = 2, min_passed = 5, string = { max_unique_pieces = 3 } }",
    )
    cell = load_matrix(write(tmp_path, text)).cell("c1")
    assert cell.requirement == "torch==2.10.0"
    assert cell.install.options() == [
        "--index-url",
        "https://i/simple",
        "--extra-index-url",
        "https://e",
        "--find-links",
        "/w",
        "--pre",
    ]
    assert (cell.max_failed, cell.min_passed, cell.max_skipped) == (2, 5, None)
    assert cell.stat_budgets("string") == {"unique_pieces": 3} and cell.stat_budgets("opaque") == {}
    assert cell.budgeted("suite/test_models.py::test_a[opaque]")
    assert not cell.budgeted("suite/test_models.py::test_b[opaque]")
    assert cell.allows("2.10.0+cu128") and not cell.allows("2.10.1")
    assert cell.keyword == "c1"


def test_defaults_when_optional_fields_are_absent(tmp_path):
    cell = load_matrix(write(tmp_path, GOOD_CELL)).cell("cpu-torch2.10")
    assert cell.install.options() == []
    assert cell.budget_tests == ("*",)
    assert cell.min_passed == 1
    assert cell.keyword == "cpu_torch2_10"
    assert cell.report_path("r") == Path("r/cpu-torch2.10.json")


@given(
    major=st.integers(1, 3),
    minor=st.integers(0, 30),
    micro=st.integers(0, 5),
)
def test_mode_for_pinned_versions_follows_the_2_11_boundary(major, minor, micro):
    version = Version(f"{major}.{minor}.{micro}")
    mode = matrix.mode_for_spec(SpecifierSet(f"=={version}"), "here")
    assert mode == ("opaque" if version >= Version("2.11") else "string")


@pytest.mark.parametrize(
    ("spec", "mode"),
    [("<2.11", "string"), (">=2.11", "opaque"), ("~=2.10.0", "string"), ("==2.11.*", "opaque"), ("==2.10.*", "string")],
)
def test_mode_for_ranges(spec, mode):
    assert matrix.mode_for_spec(SpecifierSet(spec), "here") == mode


def test_select_by_tier_and_name():
    m = load_matrix(MATRIX_TOML)
    assert m.select() == list(m.cells)
    by_tier = m.select(["gpu"])
    assert by_tier and all(c.tier == "gpu" for c in by_tier)
    first = m.cells[0].name
    assert [c.name for c in m.select(names=[first])] == [first]
    with pytest.raises(MatrixError, match="no cell has tier 'nightly'"):
        m.select(["nightly"])
    with pytest.raises(MatrixError, match="no cell named 'nope'"):
        m.select(names=["nope"])


# --- CLI: layername matrix --------------------------------------------------------------------------------


def test_github_export(capsys):
    assert main(["matrix", "--matrix", str(MATRIX_TOML), "--github", "--tier", "ci"]) == 0
    exported = json.loads(capsys.readouterr().out)
    ci = load_matrix(MATRIX_TOML).select(["ci"])
    assert [entry["cell"] for entry in exported["include"]] == [c.name for c in ci]
    for entry, cell in zip(exported["include"], ci, strict=True):
        assert entry["session"] == f"matrix({cell.name})"
        assert (entry["device"], entry["expected_mode"], entry["tier"]) == (cell.device, cell.expected_mode, "ci")


def test_listing_shows_every_cell(capsys):
    assert main(["matrix", "--matrix", str(MATRIX_TOML)]) == 0
    out = capsys.readouterr().out
    for cell in load_matrix(MATRIX_TOML).cells:
        assert cell.name in out


def test_console_script_bad_matrix_exits_2(tmp_path):
    path = write(tmp_path, cell_text(expected_mode='"opaque"'))
    done = subprocess.run(
        [sys.executable, "-m", "pytest_layername", "matrix", "--matrix", str(path), "--github"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("layername: error: ") and "cell 'c1'" in done.stderr
    assert done.stdout == ""


# --- skip markers and the device check -------------------------------------------------------------------


def test_skip_marker_round_trip(tmp_path):
    cell = load_matrix(MATRIX_TOML).select(["gpu"])[0]
    path = matrix.write_skip_marker(cell, tmp_path / "reports", "no cuda: test")
    assert path == cell.skip_marker_path(tmp_path / "reports")
    assert matrix.read_skip_marker(path) == "no cuda: test"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(MatrixError, match="is unreadable"):
        matrix.read_skip_marker(path)


def _fake_nvidia_smi(folder: Path, output: str, code: int = 0) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_device_available_without_and_with_a_gpu(tmp_path, monkeypatch):
    assert matrix.device_available("cpu")[0]
    monkeypatch.setenv("PATH", str(tmp_path))
    present, reason = matrix.device_available("cuda")
    assert not present and "nvidia-smi is not on PATH" in reason
    _fake_nvidia_smi(tmp_path, "No devices were found", code=6)
    present, reason = matrix.device_available("cuda")
    assert not present and "lists no GPU (exit 6)" in reason
    _fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H200 (UUID: GPU-x)")
    assert matrix.device_available("cuda") == (True, "GPU 0: NVIDIA H200 (UUID: GPU-x)")


def test_both_modes_preinstalled_and_known_bugs(tmp_path):
    text = cell_text(
        torch='"==2.11.0"',
        expected_mode='"opaque"',
        modes='["string", "opaque"]',
        install='"preinstalled"',
        known_bugs='["pytorch-175973"]',
        budgets="{ max_failed = 0, opaque = { max_unique_pieces = 4 }, string = { max_unique_pieces = 33 } }",
    )
    cell = load_matrix(write(tmp_path, text)).cell("c1")
    assert cell.run_modes == ("opaque", "string") and cell.mode_option == "both"
    assert cell.stat_budgets("opaque") == {"unique_pieces": 4} and cell.stat_budgets("string") == {"unique_pieces": 33}
    assert cell.install.preinstalled and cell.install.options() == []
    assert cell.known_bugs == ("pytorch-175973",)


def test_project_matrix_runs_both_modes_from_2_11_and_pins_known_bugs():
    for cell in load_matrix(MATRIX_TOML).cells:
        assert cell.run_modes == (("opaque", "string") if cell.expected_mode == "opaque" else ("string",)), cell.name
        assert cell.budgets.get("max_skipped") is not None, f"{cell.name}: every cell limits its skips"


def _collected(command: list[str]) -> set[str]:
    done = subprocess.run([*command, "--co", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_a_cell_runs_the_slow_tests_that_the_checkouts_addopts_deselect(tmp_path):
    """pyproject deselects layername_slow for the README's test command; a cell runs the whole suite."""
    from pytest_layername.release.cell import pytest_command

    cell = load_matrix(ROOT / "matrix.toml").cells[0]
    own_outputs = ("--layername-report", "--junitxml", "--layername-cell")  # --layername-cell needs a report
    command = [a for a in pytest_command(cell, tmp_path) if not a.startswith(own_outputs)]
    slow = {t for t in _collected(command) if "::test_piecewise_fuses_inside_pieces[" in t and t.endswith("-32]")}
    assert slow
    plain = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "pytest_layername.suite",
        f"--layername-mode={cell.mode_option}",
    ]
    assert not slow & _collected(plain)  # the control: the checkout's own command deselects them
