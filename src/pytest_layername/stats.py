"""Compile statistics read from what torch did: Dynamo frames and recompiles, pieces, compiles, caches."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch._dynamo.utils as dynamo_utils

from .graph_hash import BakedString

COUNTER_FIELDS = {
    # CompileStats field: (torch counter group, counter name)
    "graphs": ("stats", "unique_graphs"),
    "aot_autograd_cache_hits": ("aot_autograd", "autograd_cache_hit"),
    "aot_autograd_cache_misses": ("aot_autograd", "autograd_cache_miss"),
    "fx_graph_cache_hits": ("inductor", "fxgraph_cache_hit"),
    "fx_graph_cache_misses": ("inductor", "fxgraph_cache_miss"),
    "fx_graph_cache_bypasses": ("inductor", "fxgraph_cache_bypass"),
}


@dataclass
class PieceRecord:
    """One piece of a split graph and what compiling it took."""

    name: str
    digest: str
    masked_digest: str
    baked_strings: list[BakedString]
    compiled: bool  # False when an identical piece's artifact was reused
    compile_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["baked_strings"] = [str(b) for b in self.baked_strings]
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
    )

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNT_FIELDS}

    def unique_because_of_strings(self) -> list[PieceRecord]:
        """Compiled pieces that would have matched another piece but for a baked string constant."""
        compiled = [p for p in self.piece_records if p.compiled]
        masked = Counter(p.masked_digest for p in compiled)
        return [p for p in compiled if masked[p.masked_digest] > 1 and p.baked_strings]

    def as_dict(self) -> dict[str, Any]:
        data = {**self.counts(), "compile_seconds": round(self.compile_seconds, 4)}
        data["recompile_reasons"] = list(self.recompile_reasons)
        data["pieces_detail"] = [p.as_dict() for p in self.piece_records]
        return data


def _counter_values() -> dict[str, int]:
    counters = dynamo_utils.counters
    return {name: int(counters[group][key]) for name, (group, key) in COUNTER_FIELDS.items()}


class CompileSession:
    """Collects :class:`CompileStats` for everything compiled between ``start()`` and now.

    Starting resets Dynamo, so frames compiled before do not count and guards from earlier tests do
    not turn compiles into cache hits. Backends built with :meth:`backend` report their pieces here.
    """

    def __init__(self) -> None:
        self._pieces: list[PieceRecord] = []
        self._backend_compilations = 0
        self._compile_seconds = 0.0
        self._baseline: dict[str, int] = {}
        self._metrics_limit_before: int | None = None

    def start(self) -> None:
        torch._dynamo.reset()
        dynamo_utils.clear_compilation_metrics()
        self._metrics_limit_before = dynamo_utils._compilation_metrics.maxlen
        dynamo_utils.set_compilation_metrics_limit(1_000_000)
        self._baseline = _counter_values()

    def stop(self) -> None:
        if self._metrics_limit_before is not None:
            dynamo_utils.set_compilation_metrics_limit(self._metrics_limit_before)
            self._metrics_limit_before = None

    def record_piece(self, piece: PieceRecord) -> None:
        self._pieces.append(piece)
        if piece.compiled:
            self._backend_compilations += 1
            self._compile_seconds += piece.compile_seconds

    def backend(self, compiler: str = "inductor", splitting_ops: tuple[str, ...] | None = None, **options: Any):
        """A :class:`~pytest_layername.backend.PiecewiseBackend` reporting into this session."""
        from .backend import PiecewiseBackend

        return PiecewiseBackend(splitting_ops=splitting_ops, compiler=compiler, session=self, **options)

    @property
    def stats(self) -> CompileStats:
        """The statistics so far (read afresh from torch on every access)."""
        now = _counter_values()
        deltas = {name: now[name] - self._baseline.get(name, 0) for name in COUNTER_FIELDS}
        frames = [m for m in dynamo_utils.get_compilation_metrics() if not m.is_runtime and m.is_forward is not False]
        reasons = [m.recompile_reason for m in frames if m.recompile_reason]
        recompiles = [m for m in frames if (m.cache_size or 0) > 0 or m.recompile_reason]
        return CompileStats(
            dynamo_frames=len(frames),
            recompiles=len(recompiles),
            recompile_reasons=[r.strip() for r in reasons],
            pieces=len(self._pieces),
            unique_pieces=len({p.digest for p in self._pieces}),
            backend_compilations=self._backend_compilations,
            inductor_compiles=deltas["fx_graph_cache_misses"] + deltas["fx_graph_cache_bypasses"],
            compile_seconds=self._compile_seconds,
            piece_records=list(self._pieces),
            **deltas,
        )


@contextlib.contextmanager
def compile_session(fresh_inductor_cache: bool = True) -> Iterator[CompileSession]:
    """A :class:`CompileSession` with fresh Dynamo state and (by default) an empty inductor cache dir."""
    session = CompileSession()
    cache = _fresh_inductor_cache() if fresh_inductor_cache else contextlib.nullcontext()
    with cache:
        session.start()
        try:
            yield session
        finally:
            session.stop()
            torch._dynamo.reset()


def _fresh_inductor_cache() -> contextlib.AbstractContextManager[None]:
    from torch._inductor import utils as inductor_utils

    fresh = getattr(inductor_utils, "fresh_cache", None) or inductor_utils.fresh_inductor_cache
    return fresh()
