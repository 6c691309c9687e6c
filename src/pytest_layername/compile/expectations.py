"""Assert compile counts like vLLM's ``compilation_counter.expect``, with a readable diff.

Disagreements between the structural hash and torch's caches (see :mod:`.stats`) fail an expectation by
default, whatever counts it names: a count the harness cannot vouch for is not a pass.
"""

from __future__ import annotations

from .stats import CompileStats

SHOWN = 8


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


def _capped(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = [title, *(f"  {line}" for line in lines[:SHOWN])]
    if len(lines) > SHOWN:
        shown.append(f"  ... and {len(lines) - SHOWN} more")
    return shown


def expect_counts(stats: CompileStats, *, allow_hash_disagreements: bool = False, **expected: int) -> None:
    """Raise :class:`CountMismatch` listing every field whose count differs from ``expected``.

    Unless ``allow_hash_disagreements``, any piece where the hash and torch's caches disagree fails too.
    """
    counts = stats.counts()
    unknown = sorted(set(expected) - set(counts))
    if unknown:
        raise TypeError(f"unknown count field(s) {', '.join(unknown)}; known: {', '.join(counts)}")
    wrong = {name: (value, counts[name]) for name, value in expected.items() if counts[name] != value}
    disagreements = [] if allow_hash_disagreements else stats.disagreements()
    if not wrong and not disagreements:
        return
    lines = []
    if wrong:
        width = max(len(name) for name in wrong)
        lines += ["compile counts differ from expectation:", f"  {'field':{width}}  expected  actual"]
        lines += [f"  {name:{width}}  {exp:8}  {act:6}" for name, (exp, act) in wrong.items()]
    lines += _capped(
        f"{len(disagreements)} piece(s) where the structural hash and torch's FX-graph cache disagree:", disagreements
    )
    explanation = explain_unique_pieces(stats)
    lines += _capped(
        f"{len(explanation)} piece(s) are unique only because a constant is baked into the graph:", explanation
    )
    lines += _capped("recompile reasons:", [reason.splitlines()[0] for reason in stats.recompile_reasons])
    raise CountMismatch("\n".join(lines))
