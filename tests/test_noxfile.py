"""The noxfile: one session per matrix cell, selection by name/tag/keyword, skips that the gate sees."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_layername.release.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[1]
MATRIX = load_matrix(ROOT / "matrix.toml")
NOX = [sys.executable, "-m", "nox", "--noxfile", str(ROOT / "noxfile.py")]
GATE = [sys.executable, "-m", "pytest_layername", "gate", "--matrix", str(ROOT / "matrix.toml")]


def nox(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NOX, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def selected(listing: str) -> list[str]:
    """Session names ``nox -l`` marks as selected (``* name ...``)."""
    return [line[2:].split(" ")[0] for line in listing.splitlines() if line.startswith("* ")]


def test_one_session_per_cell_and_the_fixed_sessions():
    done = nox("-l")
    assert done.returncode == 0, done.stderr
    listed = {line[2:].split(" ")[0] for line in done.stdout.splitlines() if line[:2] in ("* ", "- ")}
    fixed = {"tests", "docs", "lint", "bench", "gate", "vllm", "vllm_engine"}
    assert {f"matrix({c.name})" for c in MATRIX.cells} | fixed == listed
    # the vLLM integration runs only when named (nox -s vllm, which runs vllm_engine after it)
    assert {"vllm", "vllm_engine"}.isdisjoint(selected(done.stdout))


def test_docs_session_checks_the_reference_and_links():
    """``nox -s docs -- --check``: the generated reference is current and every relative link resolves."""
    done = nox("-s", "docs", "--", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("tier", sorted({c.tier for c in MATRIX.cells}))
def test_tags_select_a_tier(tier):
    done = nox("-l", "-t", tier)
    assert selected(done.stdout) == [f"matrix({c.name})" for c in MATRIX.select([tier])]


def test_session_and_keyword_selection():
    cell = MATRIX.cells[0]
    assert selected(nox("-l", "-s", f"matrix({cell.name})").stdout) == [f"matrix({cell.name})"]
    assert selected(nox("-l", "-k", cell.keyword).stdout) == [f"matrix({cell.name})"]


def test_invalid_matrix_stops_nox_naming_the_problem(tmp_path):
    bad = tmp_path / "matrix.toml"
    bad.write_text('[cells.c1]\ntorch = "==2.10.0"\nexpected_mode = "opaque"\n', encoding="utf-8")
    done = nox("-l", env={"LAYERNAME_MATRIX": str(bad)})
    assert done.returncode != 0
    assert f"{bad}: cell 'c1': missing required field 'device'" in done.stdout + done.stderr


def _no_gpu_path(tmp_path: Path) -> str:
    """PATH with a leading nvidia-smi that finds no GPU, as on a machine with a driver but no device."""
    folder = tmp_path / "bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n", encoding="utf-8")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_cuda_cell_without_gpu_skips_and_the_gate_sees_a_skip(tmp_path):
    cell = MATRIX.select(["gpu"])[0]
    reports = tmp_path / "reports"
    reports.mkdir()
    stale = cell.report_path(reports)
    stale.write_text('{"stale": true}', encoding="utf-8")
    env = {"LAYERNAME_REPORTS_DIR": str(reports), "PATH": _no_gpu_path(tmp_path)}
    done = nox("--envdir", str(tmp_path / "envs"), "-s", f"matrix({cell.name})", env=env)
    assert done.returncode == 0, done.stderr
    assert f"Session matrix({cell.name}) skipped: {cell.name}: no cuda: nvidia-smi -L lists no GPU" in done.stderr
    assert not stale.exists(), "a stale report must not survive a cell that did not run"
    assert cell.skip_marker_path(reports).is_file()

    gate = subprocess.run(
        [*GATE, str(reports), "--cell", cell.name, "--allow-no-commit"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": env["PATH"]},  # the gate, too, finds no GPU here
        check=False,
    )
    assert gate.returncode == 1  # the only required cell was not gated: nothing was judged
    assert "not gated (no cuda: nvidia-smi -L lists no GPU (exit 6)" in gate.stdout
    assert "NOT GATED: tier(s) gpu" in gate.stdout and "no required cell was gated" in gate.stdout


def _this_torch_cell(tmp_path: Path, name: str, extra: str = "") -> tuple[dict[str, str], Path]:
    """A one-cell matrix on this torch's version running a slice of the suite: (nox env, reports folder)."""
    import torch

    from pytest_layername.core.modes import auto_mode

    version, mode = torch.__version__.split("+")[0], auto_mode()
    matrix_file = tmp_path / "matrix.toml"
    matrix_file.write_text(
        f'[cells.{name}]\ntorch = "=={version}"\nexpected_mode = "{mode}"\ndevice = "cpu"\ntier = "t"\n{extra}'
        'pytest_args = ["-k", "test_schema_takes_opaque_or_str"]\n'
        f"budgets = {{ max_failed = 0, {mode} = {{}} }}\n",
        encoding="utf-8",
    )
    reports = tmp_path / "reports"
    return {"LAYERNAME_MATRIX": str(matrix_file), "LAYERNAME_REPORTS_DIR": str(reports)}, reports


@pytest.mark.layername_slow
def test_a_real_cell_runs_the_suite_and_the_gate_passes(tmp_path):
    """A one-cell matrix on this torch's version, running a slice of the suite in a fresh nox venv."""
    from pytest_layername.core.modes import auto_mode
    from pytest_layername.release.provenance import git_state

    env, reports = _this_torch_cell(tmp_path, "here")
    # the checkout this runs in may have changes, or be none: the gate's commit checks have tests of their own
    loose = ["--", "--allow-dirty", "--allow-no-commit"]
    done = nox("--envdir", str(tmp_path / "envs"), "-s", "matrix(here)", "gate", *loose, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"here: detected mode {auto_mode()} as expected" in done.stdout + done.stderr
    assert (reports / "here.json").is_file() and (reports / "here.xml").is_file()
    assert "gate: PASS (1/1 required cells passed)" in done.stdout + done.stderr
    run = json.loads((reports / "here.json").read_text(encoding="utf-8"))["run"]
    assert (run["cell"], run["git_commit"]) == ("here", git_state(ROOT)[0])


def test_a_session_that_dies_installing_leaves_the_cell_missing(tmp_path):
    """The cell's old report, JUnit XML and skip marker go before anything is installed: no old verdict stays."""
    matrix_file = tmp_path / "matrix.toml"
    matrix_file.write_text(
        '[cells.broken]\ntorch = "==2.9.1"\nexpected_mode = "string"\ndevice = "cpu"\ntier = "t"\n'
        f'install = {{ index_url = "{(tmp_path / "no-index").as_uri()}" }}\n'
        "budgets = { max_failed = 0, string = {} }\n",
        encoding="utf-8",
    )
    cell = load_matrix(matrix_file).cell("broken")
    reports = tmp_path / "reports"
    reports.mkdir()
    old = [cell.report_path(reports), cell.junit_path(reports), cell.skip_marker_path(reports)]
    for path in old:
        path.write_text('{"old": true}', encoding="utf-8")
    env = {"LAYERNAME_MATRIX": str(matrix_file), "LAYERNAME_REPORTS_DIR": str(reports)}
    args = ["-s", "matrix(broken)", "gate", "--", "--allow-no-commit"]  # wherever the tests run: a checkout or not
    done = nox("--envdir", str(tmp_path / "envs"), *args, env=env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "Session matrix(broken) failed" in output, output[-3000:]
    assert [path.name for path in old if path.exists()] == []
    assert f"- broken: no report {cell.report_path(reports)}" in output and "gate: FAIL (0/1" in output


def test_preinstalled_cell_uses_the_environments_torch_without_installing(tmp_path):
    """``install = "preinstalled"``: nothing is installed; the environment's own torch is checked and run."""
    import torch

    env, reports = _this_torch_cell(tmp_path, "pre", 'install = "preinstalled"\n')
    done = nox("--envdir", str(tmp_path / "envs"), "-s", "matrix(pre)", env=env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "pip install" not in output, "a preinstalled cell must not install anything"
    assert f"pre: torch {torch.__version__}" in output
    report = json.loads((reports / "pre.json").read_text(encoding="utf-8"))
    assert report["run"]["torch"] == torch.__version__ and report["summary"]["passed"] >= 1


def test_preinstalled_cell_with_the_wrong_torch_fails_clearly(tmp_path):
    matrix_file = tmp_path / "matrix.toml"
    matrix_file.write_text(
        '[cells.old]\ntorch = "==2.9.1"\nexpected_mode = "string"\ndevice = "cpu"\ntier = "t"\n'
        'install = "preinstalled"\nbudgets = { max_failed = 0, string = {} }\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_layername",
            "cell",
            "old",
            "--matrix",
            str(matrix_file),
            "--reports",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "old: the environment's own torch" in done.stderr and "is not torch==2.9.1" in done.stderr
