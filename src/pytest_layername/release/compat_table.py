"""The compatibility table users read: ``docs/compatibility.md`` rendered from the gate's view of the reports.

Per cell: the torch it ran, its modes, test outcomes, the known torch bugs it hit (strict expected
failures), the key compile counts per mode (maxima over the cell's budget tests, read from torch's
counters), the suite's wall time and the gate's verdict. Needs no torch.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .known_bugs import registry
from .report import KEY_COUNTS

if TYPE_CHECKING:
    from .gate import GateResult

SHORT = {
    "pieces": "pieces",
    "unique_pieces": "unique",
    "inductor_compiles": "inductor compiles",
    "fx_graph_cache_hits": "FX-cache hits",
    "recompiles": "recompiles",
    "hash_disagreements": "hash/torch disagreements",
}


def _counts(counts: dict[str, int]) -> str:
    return " / ".join(str(counts[k]) for k in KEY_COUNTS) if counts else "-"


def render(gate: GateResult, title: str = "Compatibility") -> str:
    """Markdown: one row per cell with a report, the machines the reports came from, and the known bugs."""
    ran = [r for r in gate.results if r.run]
    lines = [f"# {title}", ""]
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    machines = sorted({f"{r.run['platform']}, {r.run['device']} ({r.run['device_name']})" for r in ran})
    lines += [
        f"Rendered {stamp} by `layername gate --compat-md` from the matrix cells' reports "
        f"({len(ran)} of {len(gate.results)} cells ran). Machine(s): {'; '.join(machines) or '-'}.",
        "",
        f"Counts per mode are maxima over each cell's budget tests: {' / '.join(SHORT[k] for k in KEY_COUNTS)} "
        "(from torch's FX-graph cache and Dynamo counters; the reference decoder has 32 layers, 33 pieces).",
        "",
        "| cell | torch | device | modes | passed | skipped | xfailed (known bugs) | failed | opaque counts "
        "| string counts | suite time | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in gate.results:
        if not r.run:
            lines.append(
                f"| {r.cell.name} | {r.cell.torch} | {r.cell.device} | - | - | - | - | - | - | - | - | {r.verdict} |"
            )
            continue
        s = r.summary or {}
        bugs = f"{s.get('xfailed', 0)} ({', '.join(r.known_bugs)})" if r.known_bugs else str(s.get("xfailed", 0))
        seconds = f"{r.seconds:.0f} s" if r.seconds is not None else "-"
        lines.append(
            f"| {r.cell.name} | {r.torch} | {r.run['device']} | {', '.join(r.modes)} | {s.get('passed')} | "
            f"{s.get('skipped')} | {bugs} | {s.get('failed', 0) + s.get('error', 0)} | "
            f"{_counts(r.stats.get('opaque', {}))} | {_counts(r.stats.get('string', {}))} | {seconds} | "
            f"{r.verdict} |"
        )
    hit = sorted({bug for r in gate.results for bug in r.known_bugs})
    if hit:
        lines += ["", "## Known torch bugs hit", ""]
        bugs = registry()
        lines += [f"- `{b}` (torch {bugs[b].torch}): {bugs[b].summary}. {bugs[b].url}" for b in hit if b in bugs]
    return "\n".join(lines) + "\n"
