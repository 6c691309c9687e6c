"""A compile session: fresh Dynamo state, backends that report into it, statistics read from torch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch._dynamo.utils as dynamo_utils

from .backend import PiecewiseBackend
from .stats import COUNTER_FIELDS, CompileStats, PieceLog, counter_values


class CompileSession:
    """Collects :class:`~.stats.CompileStats` for everything compiled between ``start()`` and now.

    Starting resets Dynamo, so frames compiled before do not count and guards from earlier tests do
    not turn compiles into cache hits. Backends built with :meth:`backend` record their pieces here.
    """

    def __init__(self) -> None:
        self.pieces = PieceLog()
        self._baseline: dict[str, int] = {}
        self._metrics_limit_before: int | None = None

    def start(self) -> None:
        torch._dynamo.reset()
        dynamo_utils.clear_compilation_metrics()
        self._metrics_limit_before = dynamo_utils._compilation_metrics.maxlen
        dynamo_utils.set_compilation_metrics_limit(1_000_000)
        self._baseline = counter_values()

    def stop(self) -> None:
        if self._metrics_limit_before is not None:
            dynamo_utils.set_compilation_metrics_limit(self._metrics_limit_before)
            self._metrics_limit_before = None

    def backend(self, compiler: str = "inductor", splitting_ops: tuple[str, ...] | None = None) -> PiecewiseBackend:
        """A :class:`~.backend.PiecewiseBackend` recording its pieces into this session."""
        return PiecewiseBackend(splitting_ops=splitting_ops, compiler=compiler, pieces=self.pieces)

    @property
    def stats(self) -> CompileStats:
        """The statistics so far (read afresh from torch on every access)."""
        now = counter_values()
        deltas = {name: now[name] - self._baseline.get(name, 0) for name in COUNTER_FIELDS}
        frames = [m for m in dynamo_utils.get_compilation_metrics() if not m.is_runtime and m.is_forward is not False]
        reasons = [m.recompile_reason for m in frames if m.recompile_reason]
        recompiles = [m for m in frames if (m.cache_size or 0) > 0 or m.recompile_reason]
        pieces = self.pieces.pieces
        return CompileStats(
            dynamo_frames=len(frames),
            recompiles=len(recompiles),
            recompile_reasons=[r.strip() for r in reasons],
            pieces=len(pieces),
            unique_pieces=len({p.digest for p in pieces}),
            backend_compilations=self.pieces.backend_compilations,
            inductor_compiles=deltas["fx_graph_cache_misses"] + deltas["fx_graph_cache_bypasses"],
            compile_seconds=self.pieces.compile_seconds,
            hash_disagreements=sum(p.disagreement is not None for p in pieces),
            piece_records=list(pieces),
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
