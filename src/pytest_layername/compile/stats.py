"""Compile statistics read from what torch did: Dynamo frames and recompiles, pieces, compiles, caches.

Sources: Dynamo's ``CompilationMetrics`` (frames, recompiles and their guard failures), its graph-break
counters and log (:mod:`.graph_breaks`) and ``counters``
(``stats.unique_graphs``; ``inductor.fxgraph_cache_{hit,miss,bypass}``; ``aot_autograd.autograd_cache_{hit,
miss,bypass,saved}``), inductor's cache statistics (FX-graph cache entries written), and the counters of any
engine adapter (:mod:`.engines`), as deltas over the session. ``inductor_compiles`` is FX-graph-cache misses
plus bypasses. ``artifacts_saved`` / ``artifacts_loaded`` are the engine's own counts where its adapter names
them (vLLM: ``num_compiled_artifacts_saved`` / ``_loaded``), else torch's FX-graph cache writes / hits.
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

from .graph_breaks import GraphBreak
from .graph_hash import BakedConstant, RenderedNode

COUNTER_FIELDS = {
    # CompileStats field: (torch counter group, counter name); every read of these counters goes through this table
    "graphs": ("stats", "unique_graphs"),
    "aot_autograd_cache_hits": ("aot_autograd", "autograd_cache_hit"),
    "aot_autograd_cache_misses": ("aot_autograd", "autograd_cache_miss"),
    "fx_graph_cache_hits": ("inductor", "fxgraph_cache_hit"),
    "fx_graph_cache_misses": ("inductor", "fxgraph_cache_miss"),
    "fx_graph_cache_bypasses": ("inductor", "fxgraph_cache_bypass"),
    "aot_autograd_cache_bypasses": ("aot_autograd", "autograd_cache_bypass"),
    "aot_autograd_cache_saved": ("aot_autograd", "autograd_cache_saved"),
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

    def hits_and_misses_since(self, before: CacheCounts) -> tuple[int, int]:
        """FX-graph plus AOT-autograd cache (hits, misses) between ``before`` and this snapshot."""
        hit, miss, _, aot_hit, aot_miss, _ = (a - b for a, b in zip(self.values, before.values, strict=True))
        return hit + aot_hit, miss + aot_miss

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
    nodes: tuple[RenderedNode, ...] = field(default=(), repr=False)  # as hashed, for diffs (not in reports)
    cache_warm: bool = False  # the FX-graph cache held entries when the session started (a warm start)

    @property
    def disagreement(self) -> str | None:
        """Where torch decided (inductor) and the hash says otherwise: why, else None.

        On a warm cache a piece the session has not seen may load an artifact an earlier process wrote:
        only a piece the hash has seen that torch compiles anew is a disagreement there.
        """
        if self.fx_graph_cache is None or self.hash_new == self.compiled or (self.cache_warm and self.hash_new):
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
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("baked", "nodes")}
        data["baked"] = [str(b) for b in self.baked]
        data["disagreement"] = self.disagreement
        return data


@dataclass(frozen=True)
class Recompile:
    """A frame Dynamo compiled again, and torch's full guard failure that made it."""

    compile_id: str  # Dynamo's "frame/compile", e.g. "0/1"
    function: str
    location: str  # "file:line" where the function starts
    reason: str


@dataclass
class CompileStats:
    """Counts for one compile session; every number is read from torch or from the backend's own work."""

    dynamo_frames: int = 0
    recompiles: int = 0
    recompile_frames: list[Recompile] = field(default_factory=list)
    graph_breaks: list[GraphBreak] = field(default_factory=list)
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
    aot_autograd_cache_saved: int = 0
    fx_graph_cache_saved: int | None = 0  # None: this torch keeps no count of FX-graph cache writes
    artifacts_saved: int | None = 0
    artifacts_loaded: int = 0
    artifacts_source: str = "torch"  # "torch" (FX-graph cache) or the engine adapter that counted them
    hash_disagreements: int = 0
    engine_counts: dict[str, int] = field(default_factory=dict)  # "<engine>.<counter>": delta
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
        "aot_autograd_cache_saved",
        "fx_graph_cache_saved",
        "artifacts_saved",
        "artifacts_loaded",
        "hash_disagreements",
    )

    def counts(self) -> dict[str, int | None]:
        """Every count field, then each engine counter (``"vllm.num_compiled_artifacts_saved"``, ...)."""
        return {**{name: getattr(self, name) for name in self.COUNT_FIELDS}, **self.engine_counts}

    @property
    def recompile_reasons(self) -> list[str]:
        """Torch's guard failure of every recompile, in full."""
        return [r.reason for r in self.recompile_frames]

    def unique_because_of_constants(self) -> list[PieceRecord]:
        """Hash-new pieces that would have matched another piece but for a baked string or opaque constant."""
        new = [p for p in self.piece_records if p.hash_new]
        masked = Counter(p.masked_digest for p in new)
        return [p for p in new if masked[p.masked_digest] > 1 and p.baked]

    def disagreements(self) -> list[str]:
        """One line per piece where the structural hash and torch's caches disagree."""
        return [d for p in self.piece_records if (d := p.disagreement)]

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in self.COUNT_FIELDS}
        data.update(compile_seconds=round(self.compile_seconds, 4), artifacts_source=self.artifacts_source)
        data["engine_counts"] = dict(self.engine_counts)
        data["recompile_reasons"] = self.recompile_reasons
        data["graph_breaks"] = [b.as_dict() for b in self.graph_breaks]
        data["pieces_detail"] = [p.as_dict() for p in self.piece_records]
        return data


class PieceLog:
    """The pieces a backend compiled, in order; the backend records into it, the session reads it."""

    def __init__(self) -> None:
        self.pieces: list[PieceRecord] = []
        self.cache_warm = False  # set by the session: its FX-graph cache held entries at start
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
