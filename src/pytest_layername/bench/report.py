"""Render benchmark results (from :mod:`.bench`) as ``benchmarks.md``, ``benchmarks.png`` and ``benchmarks.json``."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import starts, startup

Cell = dict[str, Any]
Key = tuple[str, int, str]
#: Harness overhead the issue allows, as a share of compile time.
OVERHEAD_LIMIT = 0.02
PNG_NAME = "benchmarks.png"


class PlotUnavailable(RuntimeError):
    """matplotlib is missing; it is the optional ``bench`` extra."""


def index(cells: Iterable[Cell]) -> dict[Key, Cell]:
    """Cells by (model, layers, mode)."""
    return {(c["model"], c["layers"], c["mode"]): c for c in cells}


def models_of(cells: list[Cell]) -> list[str]:
    return list(dict.fromkeys(c["model"] for c in cells))


def layers_of(cells: list[Cell], model: str) -> list[int]:
    return sorted({c["layers"] for c in cells if c["model"] == model})


def harness_total(cell: Cell, parts: Iterable[str] = ("split", "hash", "record", "stats")) -> float:
    """Seconds of the harness's own work in ``cell`` (the named parts of ``harness_seconds``)."""
    return sum(cell["harness_seconds"].get(p, 0.0) for p in parts)


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    """String/opaque ratios of unique pieces, compile seconds and first-run seconds per model and N."""
    by = index(cells)
    rows = []
    for model in models_of(cells):
        for n in layers_of(cells, model):
            s, o = by.get((model, n, "string")), by.get((model, n, "opaque"))
            if s is None or o is None:
                continue
            rows.append(
                {
                    "model": model,
                    "layers": n,
                    "unique": ratio(s["unique_pieces"], o["unique_pieces"]),
                    "compile": ratio(s["compile_seconds"], o["compile_seconds"]),
                    "first_run": ratio(s["first_run_seconds"], o["first_run_seconds"]),
                }
            )
    return rows


def checks(cells: list[Cell]) -> list[tuple[str, bool, str]]:
    """The issue's "must show" claims, each checked against the measured cells: (claim, holds, evidence)."""
    by = index(cells)
    out: list[tuple[str, bool, str]] = []
    for model in models_of(cells):
        ns = layers_of(cells, model)
        opaque = [by[(model, n, "opaque")] for n in ns if (model, n, "opaque") in by]
        string = [by[(model, n, "string")] for n in ns if (model, n, "string") in by]
        if opaque:
            uniques = [c["unique_pieces"] for c in opaque]
            evidence = ", ".join(f"N={c['layers']}: {c['unique_pieces']}" for c in opaque)
            out.append((f"{model}, opaque: unique pieces constant in N", len(set(uniques)) == 1, evidence))
            lo, hi = by.get((model, 8, "opaque")), by.get((model, 64, "opaque"))
            if lo and hi:
                factor = hi["compile_seconds"] / lo["compile_seconds"]
                first = hi["first_run_seconds"] / lo["first_run_seconds"]
                out.append(
                    (
                        f"{model}, opaque: cold compile at N=64 within a small factor (< 2x) of N=8",
                        factor < 2,
                        f"compile {factor:.2f}x ({lo['compile_seconds']:.2f} s -> {hi['compile_seconds']:.2f} s); "
                        f"whole first run {first:.2f}x",
                    )
                )
        if string:
            ok = all(c["unique_pieces"] == c["layers"] + 1 for c in string)
            evidence = ", ".join(f"N={c['layers']}: {c['unique_pieces']}" for c in string)
            out.append((f"{model}, string: unique pieces = N+1", ok, evidence))
            seconds = [c["compile_seconds"] for c in string]
            growing = all(b > a for a, b in itertools.pairwise(seconds))
            evidence = ", ".join(f"{s:.2f}" for s in seconds) + " s"
            out.append((f"{model}, string: compile time grows with N", growing, evidence))
    return out


#: What the harness adds to a piecewise compile in order to measure it.
HARNESS_PARTS = ("hash", "record", "stats")


def overhead_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """Per cell: harness seconds by part, and shares of compile s and first run s, without and with the split."""
    rows = []
    for c in cells:
        harness = harness_total(c, HARNESS_PARTS)
        with_split = harness_total(c, ("split", *HARNESS_PARTS))
        rows.append(
            {
                "model": c["model"],
                "layers": c["layers"],
                "mode": c["mode"],
                **{p: c["harness_seconds"].get(p, 0.0) for p in ("split", *HARNESS_PARTS)},
                "harness": harness,
                "of_compile": ratio(harness, c["compile_seconds"]),
                "of_first_run": ratio(harness, c["first_run_seconds"]),
                "split_of_compile": ratio(with_split, c["compile_seconds"]),
                "split_of_first_run": ratio(with_split, c["first_run_seconds"]),
            }
        )
    return rows


def worst(rows: list[dict[str, Any]], key: str) -> tuple[float, str]:
    """The largest ``key`` share over ``rows`` and the cell it came from."""
    row = max(rows, key=lambda r: r[key] or 0.0)
    return row[key] or 0.0, f"{row['model']} x{row['layers']} {row['mode']}"


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render_markdown(data: dict[str, Any], png_name: str | None = PNG_NAME) -> str:
    """The whole ``benchmarks.md`` for ``data`` (the saved ``benchmarks.json``)."""
    cells: list[Cell] = data["cells"]
    m = data["machine"]
    loads = [c["load_before"] for c in cells if c.get("load_before") is not None]
    out = ["# Benchmarks: cold compile time versus layer count, string against opaque", ""]
    out += [
        f"Generated by `{data['command']}` on {data['date']} (cells took {data['cells_seconds']:.0f} s"
        + (f", the whole run {data['total_seconds']:.0f} s)." if data.get("total_seconds") else ")."),
        "",
        f"- torch {m['torch']}, Python {m['python']}, {m['platform']}",
        f"- machine: {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), device `{data['device']}`, "
        f"inner compiler `{data['compiler']}` (inductor compile_threads={m['inductor_compile_threads']})",
    ]
    if loads:
        out.append(
            f"- load average (1 min): {_fmt(data.get('load_average_start'))} at start, "
            f"{_fmt(data.get('load_average_end'))} at end, {min(loads):.2f}-{max(loads):.2f} before the cells "
            f"(median {statistics.median(loads):.2f}); the benchmark itself keeps about one core busy."
        )
    if loads and max(loads) > (m["cores"] or 1):
        out.append(
            "- the machine was shared with other work during this run (load above its core count): absolute "
            "seconds are inflated and noisy; compare the ratios, measured within this one run."
        )
    if data.get("note"):
        out.append(f"- note: {data['note']}")
    out += [
        "",
        "Method: each mode has its own worker process, warmed up once before anything is timed (an unrelated",
        "tiny graph through the inner compiler; a one-layer model of each kind through Dynamo and the piecewise",
        "backend without compiling it). The two workers then take turns, one cell at a time, so load from other",
        "work falls on both modes alike. Each cell builds the model, runs it eagerly, and compiles it cold (fresh",
        "Dynamo, an empty inductor/AOT cache dir, in-memory inductor caches cleared) with the piecewise backend,",
        "splitting at attention; the compiled output must match eager.",
        "",
        "- *pieces*: pieces of the split graph that the inner compiler gets (one per attention, plus one);",
        "  *unique pieces*: distinct structural hashes among them; *inductor compiles*: FX graph cache misses.",
        "- *compile s*: wall time of the inner compiler over the unique pieces, the cost the layer names control.",
        "- *first run s*: the whole first call of the compiled model: Dynamo tracing (which grows with N in both",
        "  modes), splitting, hashing, compiling and running once.",
        "",
    ]
    if png_name:
        out += [f"![compile seconds and unique pieces against N]({png_name})", ""]
    out += ["## Results", ""]
    rows = [
        [
            c["model"],
            str(c["layers"]),
            c["mode"],
            str(c["pieces"]),
            str(c["unique_pieces"]),
            str(c["inductor_compiles"]),
            f"{c['compile_seconds']:.2f}",
            f"{c['first_run_seconds']:.2f}",
        ]
        for c in cells
    ]
    header = ["model", "N", "mode", "pieces", "unique pieces", "inductor compiles", "compile s", "first run s"]
    out += [*_table(header, rows), ""]

    rs = ratios(cells)
    if rs:
        out += ["## String / opaque", ""]
        rows = [
            [
                r["model"],
                str(r["layers"]),
                _fmt(r["unique"], ".1f", "x"),
                _fmt(r["compile"], ".2f", "x"),
                _fmt(r["first_run"], ".2f", "x"),
            ]
            for r in rs
        ]
        out += [*_table(["model", "N", "unique pieces", "compile s", "first run s"], rows), ""]
        for n in (32, 64):
            picked = [r for r in rs if r["layers"] == n]
            if picked:
                parts = [
                    f"{r['model']} {_fmt(r['compile'], '.2f', 'x')} (first run {_fmt(r['first_run'], '.2f', 'x')})"
                    for r in picked
                ]
                out.append(f"- measured string/opaque compile time at N={n}: " + "; ".join(parts))
        out.append("")

    out += ["## What it must show", ""]
    out += [f"- {'yes' if ok else '**no**'}: {claim} ({evidence})" for claim, ok, evidence in checks(cells)]
    out += [""]

    ov = overhead_rows(cells)
    out += ["## Harness overhead", ""]
    out += [
        "Timed inside the backend in every cell. The harness's own additions to a piecewise compile are the",
        "structural hash of every piece (`hash`), recording each piece (`record`) and reading the statistics",
        "from torch's counters (`stats`). Splitting the Dynamo graph at attention (`split`, almost all of it",
        "torch's `split_module` generating code for the pieces) is work every piecewise backend does (vLLM's",
        "too); it is shown apart, and added in the last two columns.",
        "",
    ]
    rows = [
        [r["model"], str(r["layers"]), r["mode"]]
        + [f"{1000 * r[p]:.1f}" for p in ("hash", "record", "stats", "harness", "split")]
        + [_pct(r[k]) for k in ("of_compile", "of_first_run", "split_of_compile", "split_of_first_run")]
        for r in ov
    ]
    header = ["model", "N", "mode", "hash ms", "record ms", "stats ms", "harness ms", "split ms"]
    header += ["harness / compile s", "harness / first run", "+split / compile s", "+split / first run"]
    out += [*_table(header, rows), ""]
    if ov:
        for key, what in (
            ("of_compile", "harness (hash, record, stats) as a share of compile s"),
            ("of_first_run", "harness as a share of the whole first run"),
            ("split_of_compile", "harness plus split as a share of compile s"),
            ("split_of_first_run", "harness plus split as a share of the whole first run"),
        ):
            share, cell = worst(ov, key)
            verdict = "below" if share < OVERHEAD_LIMIT else "**not below**"
            out.append(f"- {what}: at most {_pct(share)} ({cell}), {verdict} 2%.")
        out.append("")

    out += ["## Suite wall time, `-n 2` against serial", ""]
    suite = data.get("suite") or {}
    if not suite.get("available"):
        out += [f"Not measured: {suite.get('reason', 'not run')}.", ""]
    else:
        runs = suite["runs"]
        rows = []
        for r in runs:
            wall = "timed out" if r["timed_out"] else f"{r['seconds']:.1f}"
            rows.append([f"`{r['command']}`", wall, _fmt(r.get("load_before")), r.get("summary", "")])
        out += ["Run in this order, right after the cells.", ""]
        out += [*_table(["command", "wall s", "load before", "result"], rows), ""]
        parallel = next((r for r in runs if r["workers"]), None)
        serial = next((r for r in runs if not r["workers"]), None)
        if parallel and serial and not parallel["timed_out"] and not serial["timed_out"]:
            out += [f"- serial / `-n 2`: {serial['seconds'] / parallel['seconds']:.2f}x", ""]
    out += startup.render(data.get("startup") or {"available": False, "reason": "not run"})
    out += starts.render(data.get("starts") or {})
    return "\n".join(out)


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or :class:`PlotUnavailable` saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise PlotUnavailable("the plot needs matplotlib: pip install 'pytest-layername[bench]'") from error
    return plt


def plot(data: dict[str, Any], path: Path) -> Path:
    """Compile seconds, first-run seconds and unique pieces against N, both modes, every model."""
    plt = require_matplotlib()
    cells: list[Cell] = data["cells"]
    by = index(cells)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("compile_seconds", "compile s (inner compiler, unique pieces)"),
        ("first_run_seconds", "first run s (trace + compile + run)"),
        ("unique_pieces", "unique pieces"),
    ]
    styles = {"string": "o-", "opaque": "s--"}
    for ax, (field, title) in zip(axes, panels, strict=True):
        for model in models_of(cells):
            for mode in ("string", "opaque"):
                ns = [n for n in layers_of(cells, model) if (model, n, mode) in by]
                if ns:
                    ax.plot(ns, [by[(model, n, mode)][field] for n in ns], styles[mode], label=f"{model} {mode}")
        ax.set_xscale("log", base=2)
        ticks = sorted({c["layers"] for c in cells})
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.set_xlabel("layers N")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"cold compile versus layer count, torch {data['machine']['torch']}, {data['machine']['cores']} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(data: dict[str, Any], out_dir: Path, *, with_plot: bool = True) -> list[Path]:
    """Write ``benchmarks.json``, ``benchmarks.png`` (unless ``with_plot`` is False) and ``benchmarks.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "benchmarks.json"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if with_plot:
        paths.append(plot(data, out_dir / PNG_NAME))
    md = out_dir / "benchmarks.md"
    md.write_text(render_markdown(data, PNG_NAME if with_plot else None) + "\n", encoding="utf-8")
    return [*paths, md]
