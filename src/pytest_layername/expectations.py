"""Assert compile counts like vLLM's ``compilation_counter.expect``, with a readable diff."""

from __future__ import annotations

from .stats import CompileStats


class CountMismatch(AssertionError):
    """Compile counts differ from what a test expected."""


def explain_unique_pieces(stats: CompileStats) -> list[str]:
    """Lines naming the op and the string constant that made a piece unique, one per such piece."""
    lines = []
    for piece in stats.unique_because_of_strings():
        baked = ", ".join(str(b) for b in piece.baked_strings)
        lines.append(f"piece {piece.name} is unique only because of baked string constant(s): {baked}")
    return lines


def expect_counts(stats: CompileStats, **expected: int) -> None:
    """Raise :class:`CountMismatch` listing every field whose count differs from ``expected``."""
    counts = stats.counts()
    unknown = sorted(set(expected) - set(counts))
    if unknown:
        raise TypeError(f"unknown count field(s) {', '.join(unknown)}; known: {', '.join(counts)}")
    wrong = {name: (value, counts[name]) for name, value in expected.items() if counts[name] != value}
    if not wrong:
        return
    width = max(len(name) for name in wrong)
    lines = ["compile counts differ from expectation:", f"  {'field':{width}}  expected  actual"]
    lines += [f"  {name:{width}}  {exp:8}  {act:6}" for name, (exp, act) in wrong.items()]
    explanation = explain_unique_pieces(stats)
    if explanation:
        lines.append(f"{len(explanation)} piece(s) are unique only because a string is baked into the graph:")
        lines += [f"  {line}" for line in explanation[:8]]
        if len(explanation) > 8:
            lines.append(f"  ... and {len(explanation) - 8} more")
    if stats.recompile_reasons:
        lines.append("recompile reasons:")
        lines += [f"  {reason.splitlines()[0]}" for reason in stats.recompile_reasons[:8]]
    raise CountMismatch("\n".join(lines))
