"""Why a piece did not share an artifact: the earlier piece it should have matched, and a diff of the two.

Pieces are compared as the structural hash renders them (:mod:`.graph_hash`): node names replaced by
positions, constants by value, so two layers' pieces line up node by node and the first line that differs
is what made the second one new (a baked layer name, another constant, an input's dtype or shape).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .graph_hash import RenderedNode
from .stats import PieceRecord

DIFF_LINES = 14


@dataclass(frozen=True)
class FirstDifference:
    """The first node where two pieces differ, and the argument (with both values) that differs there."""

    index: int
    target: str
    argument: str | None  # None when the nodes differ otherwise (another op, another number of arguments)
    before: str
    after: str

    def __str__(self) -> str:
        if self.argument is None:
            return f"node %{self.index}: {self.before}  ->  {self.after}"
        return f"node %{self.index} {self.target}, argument {self.argument}: {self.before}  ->  {self.after}"


def listing(nodes: Sequence[RenderedNode]) -> list[str]:
    return [f"%{i} = {node.text}" for i, node in enumerate(nodes)]


def first_difference(before: Sequence[RenderedNode], after: Sequence[RenderedNode]) -> FirstDifference | None:
    """Where ``after`` first departs from ``before``; None when they render alike."""
    for index, (a, b) in enumerate(zip(before, after, strict=False)):
        if a.text == b.text:
            continue
        if a.target == b.target and len(a.arguments) == len(b.arguments):
            for (name, hashed_a, shown_a), (_, hashed_b, shown_b) in zip(a.arguments, b.arguments, strict=True):
                if hashed_a != hashed_b:
                    return FirstDifference(index, a.target, name, shown_a, shown_b)
        return FirstDifference(index, a.target, None, a.text, b.text)
    if len(before) != len(after):
        index = min(len(before), len(after))
        return FirstDifference(index, "", None, f"{len(before)} nodes", f"{len(after)} nodes")
    return None


def unified_diff(before: PieceRecord, after: PieceRecord, limit: int = DIFF_LINES) -> list[str]:
    """A unified diff (one line of context) of two pieces, at most ``limit`` lines."""
    lines = list(
        difflib.unified_diff(listing(before.nodes), listing(after.nodes), before.name, after.name, n=1, lineterm="")
    )
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return lines


def _skeleton(piece: PieceRecord) -> tuple[str, ...]:
    return tuple(node.target for node in piece.nodes)


#: what "resembles" means, most telling first: equal but for layer-name constants, equal by hash (torch
#: compiled it anyway), the same ops in the same order (another constant, another input)
RESEMBLANCE: tuple[Callable[[PieceRecord], object], ...] = (
    lambda piece: piece.masked_digest,
    lambda piece: piece.digest,
    _skeleton,
)


def compiled_again(pieces: Sequence[PieceRecord]) -> tuple[PieceRecord, PieceRecord] | None:
    """(earlier piece, the first later piece that got an artifact of its own although it resembles it)."""
    for position, piece in enumerate(pieces):
        if not piece.compiled or not piece.nodes:
            continue
        for key in RESEMBLANCE:
            match = next((p for p in pieces[:position] if p.nodes and key(p) == key(piece)), None)
            if match is not None:
                return match, piece
    return None
