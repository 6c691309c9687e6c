"""The benchmark machinery at tiny N with the eager inner compiler: structure and measured relations, no timings."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_layername.bench import report as bench_report
from pytest_layername.bench import runner as bench
from pytest_layername.bench import starts as bench_starts
from pytest_layername.bench import startup
from pytest_layername.cli import bench as bench_cli
from pytest_layername.cli import build_parser, main

LAYERS = (2, 4)


def _has_matplotlib() -> bool:
    try:
        bench_report.require_matplotlib()
    except bench_report.PlotUnavailable:
        return False
    return True


#: the report's plot is the optional ``bench`` extra: without matplotlib these skip, saying so
needs_matplotlib = pytest.mark.skipif(
    not _has_matplotlib(), reason="the bench plot needs matplotlib: pip install 'pytest-layername[bench]'"
)


@pytest.fixture(scope="module")
def cells() -> list[dict[str, Any]]:
    """Decoder cells at N=2 and 4 in both modes, measured in this process with the eager inner compiler."""
    return [bench.measure_cell("decoder", n, mode, compiler="eager") for n in LAYERS for mode in ("opaque", "string")]


def _data(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "command": "layername bench --compiler eager",
        "date": "2026-01-01T00:00:00+00:00",
        "machine": bench.machine(),
        "load_average_start": None,
        "load_average_end": None,
        "cells_seconds": 0.0,
        "note": "",
        "compiler": "eager",
        "device": "cpu",
        "cells": [{**c, "load_before": None} for c in cells],
        "suite": {"available": False, "reason": "--no-suite"},
    }


def test_cells_count_pieces_per_mode(cells: list[dict[str, Any]]) -> None:
    by = bench_report.index(cells)
    for n in LAYERS:
        opaque, string = by[("decoder", n, "opaque")], by[("decoder", n, "string")]
        assert opaque["pieces"] == string["pieces"] == n + 1
        assert string["unique_pieces"] == n + 1
        assert opaque["unique_pieces"] == opaque["backend_compilations"]
        assert opaque["inductor_compiles"] == string["inductor_compiles"] == 0  # eager compiles nothing
        assert set(opaque["harness_seconds"]) == {"split", "hash", "record", "stats"}
        assert all(v >= 0 for v in opaque["harness_seconds"].values())
        assert opaque["max_abs_error"] == 0.0
    assert by[("decoder", 2, "opaque")]["unique_pieces"] == by[("decoder", 4, "opaque")]["unique_pieces"]


def test_checks_and_ratios_follow_the_cells(cells: list[dict[str, Any]]) -> None:
    claims = {claim: ok for claim, ok, _ in bench_report.checks(cells)}
    assert claims["decoder, opaque: unique pieces constant in N"]
    assert claims["decoder, string: unique pieces = N+1"]
    ratios = {r["layers"]: r for r in bench_report.ratios(cells)}
    assert set(ratios) == set(LAYERS)
    assert ratios[4]["unique"] == 5 / bench_report.index(cells)[("decoder", 4, "opaque")]["unique_pieces"]


@needs_matplotlib
def test_report_files(cells: list[dict[str, Any]], tmp_path: Path) -> None:
    paths = bench_report.write_outputs(_data(cells), tmp_path)
    assert [p.name for p in paths] == ["benchmarks.json", "benchmarks.png", "benchmarks.md"]
    assert (tmp_path / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    md = (tmp_path / "benchmarks.md").read_text()
    for heading in ("## Results", "## String / opaque", "## What it must show", "## Harness overhead"):
        assert heading in md
    for c in cells:
        assert f"| decoder | {c['layers']} | {c['mode']} | {c['pieces']} | {c['unique_pieces']} |" in md
    assert "Not measured: --no-suite." in md
    assert json.loads((tmp_path / "benchmarks.json").read_text())["cells"][0]["model"] == "decoder"


@needs_matplotlib
def test_cli_runs_cells_in_worker_processes_and_rerenders(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    argv = ["bench", "--models", "decoder", "--layers", "2", "--compiler", "eager", "--no-suite", "--no-starts"]
    # --no-startup: 40 plain pytest start-ups this test never read (test_startup_* measure and judge them)
    assert main([*argv, "--no-startup", "--out-dir", str(out)]) == 0
    data = json.loads((out / "benchmarks.json").read_text())
    assert [(c["layers"], c["mode"]) for c in data["cells"]] == [(2, "opaque"), (2, "string")]
    assert all(c["warmup_seconds"] > 0 and c["max_abs_error"] == 0.0 for c in data["cells"])
    again = tmp_path / "again"
    assert main(["bench", "--from-json", str(out / "benchmarks.json"), "--out-dir", str(again)]) == 0
    assert (again / "benchmarks.md").read_text() == (out / "benchmarks.md").read_text()


def test_command_line_reproduces_the_arguments() -> None:
    argv = ["bench", "--models", "moe", "--layers", "4", "8", "--no-suite", "--out-dir", "x"]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    again = parser.parse_args(shlex.split(bench_cli.command_line(args))[1:])
    assert vars(again) == vars(args)


@needs_matplotlib
def test_failing_worker_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["bench", "--models", "decoder", "--layers", "1", "--impl", "no.such.module", "--no-suite", "--no-starts"]
    assert main([*argv, "--compiler", "eager", "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "warm-up failed in the opaque worker" in err
    assert "no.such.module" in err
    assert not (tmp_path / "benchmarks.md").exists()


def test_startup_measures_both_ways_and_reports_the_ratio_of_medians() -> None:
    measured = startup.measure_startup(repeats=1)
    assert [r["plugin"] for r in measured["runs"]] == [True, False]  # one pair: the plugin side first
    assert all(r["seconds"] > 0 and r["max_rss_mib"] > 0 for r in measured["runs"])
    on, off = measured["runs"]
    assert measured["seconds_ratio"] == on["seconds"] / off["seconds"]
    text = "\n".join(startup.render(measured))
    assert f"{measured['seconds_ratio']:.3f}" in text and "target" in text


def test_startup_verdict_flags_an_expensive_plugin() -> None:
    runs = [
        {"plugin": True, "seconds": 4.67, "max_rss_mib": 311.0},
        {"plugin": False, "seconds": 0.89, "max_rss_mib": 44.0},
    ]
    text = "\n".join(startup.render({"available": True, "repeats": 1, "runs": runs, **startup.startup_ratios(runs)}))
    assert "**not within** the 5 % target" in text


@pytest.mark.layername_slow  # four fresh processes compiling with inductor
def test_reference_starts_cold_then_warm_in_both_modes() -> None:
    """One round at one layer: 2 pieces, both distinct; cold compiles them, warm loads them (torch's counts)."""
    measured = bench_starts.measure_reference_starts(layers=1, rounds=1)
    by = {(s["mode"], s["phase"]): s for s in measured["starts"]}
    assert set(by) == {(m, p) for m in ("opaque", "string") for p in ("cold", "warm")}
    for mode in ("opaque", "string"):
        assert (
            by[mode, "cold"]["counts"]["fx_graph_cache_misses"],
            by[mode, "warm"]["counts"]["fx_graph_cache_hits"],
        ) == (2, 2)
        assert by[mode, "warm"]["counts"]["fx_graph_cache_misses"] == 0
    (row,) = bench_starts.start_ratios(measured["starts"])
    assert row["string_over_opaque"]["warm"] == by["string", "warm"]["seconds"] / by["opaque", "warm"]["seconds"]
    text = "\n".join(bench_starts.render({"reference": measured, "engine": {"available": False, "reason": "x"}}))
    assert "## Cold and warm start, string against opaque" in text and "| decoder x1 |" in text


def _engine_report(tmp_path: Path) -> Path:
    """A report as the engine stage writes it: one test, four starts with known seconds, and a negative
    control's start and a family that could not start, which the figures leave out."""
    seconds = {("1", "cold"): 100.0, ("1", "warm"): 50.0, ("0", "cold"): 300.0, ("0", "warm"): 60.0}
    starts = [
        {"label": f"llama x8 inside {mode} {phase}", "target": "vllm_start:start_engine",
         "seconds": s, "target_seconds": s - 20, "counts": {"artifacts_saved": 3, "artifacts_loaded": 0},
         "result": {"split": "inside", "layers": 8, "use_layername": flag == "1",
                    "start": {"family": "llama", "mode": mode, "variant": "", "phase": phase, "tamper": None}}}
        for (flag, phase), s in seconds.items()
        for mode in ["LayerName" if flag == "1" else "str"]
    ]  # fmt: skip
    tampered = {**starts[0], "seconds": 1e6, "result": {**starts[0]["result"], "start": {
        **starts[0]["result"]["start"], "tamper": "moe-to-first"}}}  # fmt: skip
    failed = {**starts[0], "seconds": 1e6, "result": {**starts[0]["result"], "error": "RuntimeError: x"}}
    test = {
        "nodeid": "test_vllm_engine.py::test_family_against_transformers[llama]",
        "stats": {"process_starts": [*starts, tampered, failed]},
    }
    path = tmp_path / "vllm-engine.json"
    path.write_text(json.dumps({"run": {"start": "2026-12-01T00:00:00"}, "tests": [test]}), encoding="utf-8")
    return path


def test_engine_figures_are_read_from_the_engine_stage_report(tmp_path: Path) -> None:
    engine = bench_starts.engine_starts(_engine_report(tmp_path))
    (row,) = bench_starts.start_ratios(engine["starts"], ("family", "split", "layers"))
    assert (row["family"], row["split"], row["layers"]) == ("llama", "inside", 8)
    assert row["string_over_opaque"] == {"cold": 3.0, "warm": 1.2}
    assert row["warm_over_cold"] == {"opaque": 0.5, "string": 0.2}
    text = "\n".join(
        bench_starts.render({"reference": {"available": False, "reason": "--no-starts"}, "engine": engine})
    )
    assert "**read from**" in text and "| llama inside x8 | 100.0 | 300.0 | 50.0 | 60.0 | 3.00x | 1.20x |" in text
    missing = bench_starts.engine_starts(tmp_path / "none.json")
    assert not missing["available"] and "run nox -s vllm first" in missing["reason"]


def test_without_matplotlib_the_command_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["bench", "--no-suite", "--compiler", "eager", "--out-dir", str(tmp_path)]) == 2
    assert "pip install 'pytest-layername[bench]'" in capsys.readouterr().err


BLOCK_MATPLOTLIB = "import sys\nsys.modules['matplotlib'] = None\n"


def test_the_plot_tests_skip_with_the_reason_where_matplotlib_is_absent(tmp_path: Path) -> None:
    """This module run in a fresh process whose matplotlib cannot be imported: those tests skip, saying why."""
    (tmp_path / "no_matplotlib.py").write_text(BLOCK_MATPLOTLIB, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", __file__, "-p", "no_matplotlib", "-p", "no:xdist", "-rs", "-q"]
    selected = "report_files or rerenders or failing_worker or says_how_to_install"
    done = subprocess.run([*command, "-k", selected], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed, 3 skipped" in done.stdout, done.stdout[-3000:]
    assert done.stdout.count("SKIPPED [1] ") == 3 and done.stdout.count("the bench plot needs matplotlib") == 3
