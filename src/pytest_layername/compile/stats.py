"""Compile statistics read from what torch did: Dynamo frames and recompiles, pieces, compiles, caches.

Sources: Dynamo's ``CompilationMetrics`` (frames, recompiles and their reasons) and ``counters``
(``stats.unique_graphs``; ``inductor.fxgraph_cache_{hit,miss,bypass}``; ``aot_autograd.autograd_cache_{hit,
miss,bypass}``), as deltas over the session. ``inductor_compiles`` is FX-graph-cache misses plus bypasses.
Per piece, the backend records the cache outcome torch reported for that piece's ``compile_fx`` call and
the structural hash's opinion (:mod:`.graph_hash`); where they differ the piece is a *hash disagreement*.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch._dynamo.utils as dynamo_utils

from .graph_hash import BakedConstant

COUNTER_FIELDS = {
    # CompileStats field: (torch counter group, counter name); every read of these counters goes through this table
    "graphs": ("stats", "unique_graphs"),
    "aot_autograd_cache_hits": ("aot_autograd", "autograd_cache_hit"),
    "aot_autograd_cache_misses": ("aot_autograd", "autograd_cache_miss"),
    "fx_graph_cache_hits": ("inductor", "fxgraph_cache_hit"),
    "fx_graph_cache_misses": ("inductor", "fxgraph_cache_miss"),
    "fx_graph_cache_bypasses": ("inductor", "fxgraph_cache_bypass"),
    "aot_autograd_cache_bypasses": ("aot_autograd", "autograd_cache_bypass"),
}


def counter_values(fields: Iterable[str] = COUNTER_FIELDS) -> dict[str, int]:
    """Torch's counters for ``fields`` (keys of :data:`COUNTER_FIELDS`, the one table of their names), now."""
    counters = dynamo_utils.counters
    return {name: int(counters[group][key]) for name in fields for group, key in (COUNTER_FIELDS[name],)}


CacheOutcome = str  # "hit" | "miss" | "bypass" | "none" (torch reported no lookup)


@dataclass(frozen=True)
class CacheCounts:
    """A snapshot of torch's FX-graph and AOT-autograd cache counters."""

    values: tuple[int, ...]
    FIELDS: ClassVar[tuple[str, ...]] = (
        "fx_graph_cache_hits",
        "fx_graph_cache_misses",
        "fx_graph_cache_bypasses",
        "aot_autograd_cache_hits",
        "aot_autograd_cache_misses",
        "aot_autograd_cache_bypasses",
    )

    @classmethod
    def now(cls) -> CacheCounts:
        return cls(tuple(counter_values(cls.FIELDS).values()))

    def outcomes_since(self, before: CacheCounts) -> tuple[CacheOutcome, CacheOutcome]:
        """(FX-graph cache, AOT-autograd cache) outcome of what ran between ``before`` and this snapshot."""
        hit, miss, bypass, aot_hit, aot_miss, aot_bypass = (
            a - b for a, b in zip(self.values, before.values, strict=True)
        )
        return _outcome(hit, miss, bypass), _outcome(aot_hit, aot_miss, aot_bypass)


def _outcome(hit: int, miss: int, bypass: int) -> CacheOutcome:
    if bypass:
        return "bypass"
    if miss:
        return "miss"
    return "hit" if hit else "none"


@dataclass
class PieceRecord:
    """One piece of a split graph: its hash, and what compiling it took according to torch."""

    name: str
    digest: str
    masked_digest: str  # the digest with layer-name constants (strings, opaque objects) masked
    baked: list[BakedConstant]  # layer-name constants baked into the piece
    hash_new: bool  # the session had not seen this digest before
    compiled: bool  # a new artifact was built (inductor: FX-graph-cache miss/bypass), else one was reused
    compile_seconds: float = 0.0
    fx_graph_cache: CacheOutcome | None = None  # inductor only: what torch's caches reported for this piece
    aot_autograd_cache: CacheOutcome | None = None

    @property
    def disagreement(self) -> str | None:
        """Where torch decided (inductor) and the hash says otherwise: why, else None."""
        if self.fx_graph_cache is None or self.hash_new == self.compiled:
            return None
        if self.compiled:
            return (
                f"piece {self.name}: the hash matches an earlier piece but torch compiled it anew "
                f"(FX-graph cache {self.fx_graph_cache}): the hash misses something the artifact depends on"
            )
        return (
            f"piece {self.name}: the hash is new but torch reused an artifact (FX-graph cache hit): "
            "the hash describes something the artifact does not depend on"
        )

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["baked"] = [str(b) for b in self.baked]
        data["disagreement"] = self.disagreement
        return data


@dataclass
class CompileStats:
    """Counts for one compile session; every number is read from torch or from the backend's own work."""

    dynamo_frames: int = 0
    recompiles: int = 0
    recompile_reasons: list[str] = field(default_factory=list)
    graphs: int = 0
    pieces: int = 0
    unique_pieces: int = 0
    backend_compilations: int = 0
    inductor_compiles: int = 0
    compile_seconds: float = 0.0
    aot_autograd_cache_hits: int = 0
    aot_autograd_cache_misses: int = 0
    fx_graph_cache_hits: int = 0
    fx_graph_cache_misses: int = 0
    fx_graph_cache_bypasses: int = 0
    aot_autograd_cache_bypasses: int = 0
    hash_disagreements: int = 0
    piece_records: list[PieceRecord] = field(default_factory=list)

    COUNT_FIELDS = (
        "dynamo_frames",
        "recompiles",
        "graphs",
        "pieces",
        "unique_pieces",
        "backend_compilations",
        "inductor_compiles",
        "aot_autograd_cache_hits",
        "aot_autograd_cache_misses",
        "fx_graph_cache_hits",
        "fx_graph_cache_misses",
        "fx_graph_cache_bypasses",
        "aot_autograd_cache_bypasses",
        "hash_disagreements",
    )

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNT_FIELDS}

    def unique_because_of_constants(self) -> list[PieceRecord]:
        """Hash-new pieces that would have matched another piece but for a baked string or opaque constant."""
        new = [p for p in self.piece_records if p.hash_new]
        masked = Counter(p.masked_digest for p in new)
        return [p for p in new if masked[p.masked_digest] > 1 and p.baked]

    def disagreements(self) -> list[str]:
        """One line per piece where the structural hash and torch's caches disagree."""
        return [d for p in self.piece_records if (d := p.disagreement)]

    def as_dict(self) -> dict[str, Any]:
        data = {**self.counts(), "compile_seconds": round(self.compile_seconds, 4)}
        data["recompile_reasons"] = list(self.recompile_reasons)
        data["pieces_detail"] = [p.as_dict() for p in self.piece_records]
        return data


class PieceLog:
    """The pieces a backend compiled, in order; the backend records into it, the session reads it."""

    def __init__(self) -> None:
        self.pieces: list[PieceRecord] = []
        self.backend_compilations = 0
        self.compile_seconds = 0.0
        self._digests: set[str] = set()

    def seen(self, digest: str) -> bool:
        """Whether a piece with this structural digest was recorded."""
        return digest in self._digests

    def record(self, piece: PieceRecord, inner_compiler_ran: bool) -> None:
        self.pieces.append(piece)
        self._digests.add(piece.digest)
        self.compile_seconds += piece.compile_seconds
        self.backend_compilations += inner_compiler_ran
