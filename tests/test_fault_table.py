"""``layername fault-table``: the compile-cache fault table of one run, from its JSON report (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_layername.cli import main
from pytest_layername.release.fault_table import FaultTableError, fault_rows, render_markdown

KEY = "f" + "a" * 51


def _report(faults: list[dict]) -> dict:
    stats = {"cache_faults": faults} if faults else {}
    return {"tests": [{"nodeid": "tests/x.py::test_x[string]", "mode": "string", "outcome": "passed", "stats": stats}]}


def _fault(kind: str, reasons: list[str], output: str = "ground truth") -> dict:
    outcome = {"kind": kind, "compiled": 2, "rebuilt": 1, "saved": 1, "loaded": 4, "reasons": reasons}
    return {"fault": "truncated", "label": "next", "outcome": outcome, "output": output, "output_problem": None,
            "seconds": 1.0}  # fmt: skip


def test_one_row_per_judged_start_with_torchs_reasons_counted_alike_whatever_the_key() -> None:
    reasons = [
        "FX-graph cache could not load an entry: UnpicklingError: pickle data was truncated",
        f"FX-graph cache miss: no loadable entry (key {KEY})",
        f"FX-graph cache miss: no loadable entry (key {KEY[:-1]}b)",
    ]
    rows = fault_rows(_report([_fault("recompiled", reasons), _fault("loaded", [], output="wrong")]))
    assert [(r["mode"], r["outcome"], r["output"]) for r in rows] == [
        ("string", "recompiled", "ground truth"), ("string", "loaded", "wrong")
    ]  # fmt: skip
    table = render_markdown(rows)
    assert (
        "| - | truncated | string | next | recompiled | 2 / 1 / 4 | FX-graph cache could not load an entry: "
        "UnpicklingError: pickle data was truncated; FX-graph cache miss: no loadable entry (x2) | ground truth "
        "| passed |"
    ) in table
    assert "| loaded | 2 / 1 / 4 | - | wrong | passed |" in table
    error = _fault(
        "error", ["backend='<pkg.Backend object at 0x7f96f8c8b910>' raised: / Failed to import /tmp/a/mx.py"]
    )
    rendered = render_markdown(fault_rows(_report([error | {"output": "none"}])))
    assert "| backend='<Backend>' raised: / Failed to import mx.py | none |" in rendered


def test_the_cli_writes_the_table_and_fails_on_a_report_without_faults(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report([_fault("loaded", [])])), encoding="utf-8")
    assert main(["fault-table", str(report), "--output", str(tmp_path / "table.md")]) == 0
    assert "| - | truncated | string | next | loaded |" in (tmp_path / "table.md").read_text(encoding="utf-8")
    other = tmp_path / "engine.json"
    other.write_text(json.dumps(_report([_fault("recompiled", ["vLLM: Compiling model again"])])), encoding="utf-8")
    assert main(["fault-table", f"reference={report}", f"engine={other}", "--output", str(tmp_path / "both.md")]) == 0
    both = (tmp_path / "both.md").read_text(encoding="utf-8").splitlines()
    assert [line.split(" | ")[0] for line in both[2:]] == ["| reference", "| engine"]
    report.write_text(json.dumps(_report([])), encoding="utf-8")
    assert main(["fault-table", str(report)]) == 2
    assert "the report has no cache_faults" in capsys.readouterr().err
    assert main(["fault-table", str(tmp_path / "absent.json")]) == 2
    with pytest.raises(FaultTableError):
        fault_rows({"tests": []})
