"""Assert compile counts like vLLM's ``compilation_counter.expect``, with a message that says why.

The first lines of a failure say which counts differ and, in one line per cause, why according to
torch: graph breaks (reason and user source line), recompiles (the guard that failed), pieces unique only
because of a baked constant, pieces where the structural hash and torch's cache disagree. The details
follow: every graph break and guard failure in full, and a diff of the first piece torch compiled again
against the earlier piece it resembles (:mod:`.piece_diff`).

Disagreements between the structural hash and torch's caches (see :mod:`.stats`) fail an expectation by
default, whatever counts it names: a count the harness cannot vouch for is not a pass.
"""

from __future__ import annotations

import os

from .graph_breaks import GraphBreak
from .piece_diff import compiled_again, first_difference, unified_diff
from .stats import CompileStats, Recompile

SHOWN = 8
#: counts about pieces and artifacts: a failure in one of them shows the piece diff
PIECE_COUNTS = frozenset(
    {
        "pieces",
        "unique_pieces",
        "backend_compilations",
        "inductor_compiles",
        "fx_graph_cache_hits",
        "fx_graph_cache_misses",
        "fx_graph_cache_bypasses",
        "aot_autograd_cache_hits",
        "aot_autograd_cache_misses",
        "aot_autograd_cache_bypasses",
        "hash_disagreements",
    }
)


class CountMismatch(AssertionError):
    """Compile counts differ from what a test expected, or the hash and torch disagree."""


def explain_unique_pieces(stats: CompileStats) -> list[str]:
    """Lines naming the op and the constant (string or opaque object) that made a piece unique."""
    lines = []
    for piece in stats.unique_because_of_constants():
        baked = ", ".join(str(b) for b in piece.baked)
        kinds = " and ".join(sorted({"string" if b.kind == "str" else "opaque-object" for b in piece.baked}))
        lines.append(f"piece {piece.name} is unique only because of baked {kinds} constant(s): {baked}")
    return lines


def _block(title: str, entries: list[list[str]]) -> list[str]:
    """``title`` and at most :data:`SHOWN` entries (each one or more lines), indented."""
    if not entries:
        return []
    shown = [title, *(f"  {line}" for entry in entries[:SHOWN] for line in entry)]
    if len(entries) > SHOWN:
        shown.append(f"  ... and {len(entries) - SHOWN} more")
    return shown


def _where(location: str) -> str:
    """``file:line`` relative to the working directory when it lies below it (as pytest shows paths)."""
    path, _, line = location.rpartition(":")
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return f"{path if relative.startswith('..') else relative}:{line}"


def _graph_break_lines(graph_break: GraphBreak) -> list[str]:
    where = _where(graph_break.location) if graph_break.location else "(location not logged)"
    lines = [f"{where} ({graph_break.count}x): {graph_break.headline}"]
    if graph_break.user_code:
        lines.append(f"  > {graph_break.user_code}")
    return [*lines, *(f"  {line}" for line in graph_break.details)]


def _recompile_lines(recompile: Recompile) -> list[str]:
    head = f"frame {recompile.compile_id}, {recompile.function} at {_where(recompile.location)}, because:"
    return [head, *(f"  {line}" for line in recompile.reason.splitlines())]


def _causes(stats: CompileStats, disagreements: list[str], unique_explained: list[str]) -> list[str]:
    """One line per reason torch gives for extra frames, graphs, recompiles and artifacts."""
    causes = []
    if breaks := stats.graph_breaks:
        first = breaks[0]
        where = f" at {_where(first.location)}" if first.location else ""
        more = f" (and {len(breaks) - 1} more)" if len(breaks) > 1 else ""
        causes.append(f"graph break{where}: {first.headline}{more}")
    if recompiles := stats.recompile_frames:
        more = f" (and {len(recompiles) - 1} more)" if len(recompiles) > 1 else ""
        # torch pads the guard to a column and appends "  # <source line>  # <shortened path>": the details show both
        guard = recompiles[0].reason.splitlines()[0].partition("  # ")[0].rstrip()
        causes.append(f"recompile of {recompiles[0].function}: {guard}{more}")
    if unique_explained:
        first = stats.unique_because_of_constants()[0]
        causes.append(
            f"{len(unique_explained)} piece(s) unique only because a constant is baked in, e.g. {first.baked[0]}"
        )
    if disagreements:
        causes.append(f"{len(disagreements)} piece(s) where the structural hash and torch's FX-graph cache disagree")
    return causes


def _piece_diff(stats: CompileStats) -> list[str]:
    pair = compiled_again(stats.piece_records)
    if pair is None:
        return []
    before, after = pair
    difference = first_difference(before.nodes, after.nodes)
    cache = f" (FX-graph cache {after.fx_graph_cache})" if after.fx_graph_cache else ""
    title = f"piece {after.name} got an artifact of its own{cache}; against {before.name}, which it resembles:"
    if difference is None:
        return [title, "  the two render alike: what made torch compile it again is not in the structural hash"]
    return [title, f"  first difference: {difference}", *(f"  {line}" for line in unified_diff(before, after))]


def failure_message(stats: CompileStats, wrong: dict[str, tuple[int, int]], disagreements: list[str]) -> str:
    """What differs, why (one line per cause), then the details."""
    if wrong:
        diffs = "; ".join(f"{name} expected {exp}, got {act}" for name, (exp, act) in wrong.items())
        lines = [f"compile counts differ from expectation: {diffs}"]
    else:
        lines = [f"the structural hash and torch's FX-graph cache disagree on {len(disagreements)} piece(s)"]
    unique_explained = explain_unique_pieces(stats)
    lines += [f"why: {cause}" for cause in _causes(stats, disagreements, unique_explained)]
    details = _block("graph breaks (torch's graph-break log):", [_graph_break_lines(b) for b in stats.graph_breaks])
    details += _block("recompiles (torch's guard failures):", [_recompile_lines(r) for r in stats.recompile_frames])
    details += _block(
        f"{len(disagreements)} piece(s) where the structural hash and torch's FX-graph cache disagree:",
        [[line] for line in disagreements],
    )
    details += _block(
        f"{len(unique_explained)} piece(s) are unique only because a constant is baked into the graph:",
        [[line] for line in unique_explained],
    )
    if disagreements or PIECE_COUNTS.intersection(wrong):
        details += _piece_diff(stats)
    lines += ["", *details] if details else []
    return "\n".join(lines)


def expect_counts(
    stats: CompileStats, *, allow_hash_disagreements: bool = False, footer: str = "", **expected: int
) -> None:
    """Raise :class:`CountMismatch` listing every field whose count differs from ``expected``, and why.

    Unless ``allow_hash_disagreements``, any piece where the hash and torch's caches disagree fails too.
    ``footer`` ends the message (the plugin says there where torch's trace of the test is).
    """
    __tracebackhide__ = True
    counts = stats.counts()
    unknown = sorted(set(expected) - set(counts))
    if unknown:
        raise TypeError(f"unknown count field(s) {', '.join(unknown)}; known: {', '.join(counts)}")
    wrong = {name: (value, counts[name]) for name, value in expected.items() if counts[name] != value}
    disagreements = [] if allow_hash_disagreements else stats.disagreements()
    if not wrong and not disagreements:
        return
    message = failure_message(stats, wrong, disagreements)
    raise CountMismatch(f"{message}\n\n{footer}" if footer else message)
