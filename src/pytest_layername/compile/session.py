"""A compile session: backends that report into it, statistics read from torch (and from an engine).

:func:`compile_session` starts from fresh Dynamo state for what the caller compiles itself;
:func:`observe_compile` leaves Dynamo alone and counts whatever is compiled inside it, whoever drives the
compile (an engine's start-up), from torch's global counters and any engine adapter (:mod:`.engines`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch._dynamo.utils as dynamo_utils

from . import kernel_store
from .backend import PiecewiseBackend
from .engines import AttributeCounters
from .graph_breaks import GraphBreakLog
from .stats import CompileStats, PieceLog, Recompile, counter_values

FX_GRAPH_SAVED = "fx_graph_cache_saved"
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
TRITON_CACHE_ENV = "TRITON_CACHE_DIR"


def _fx_graph_cache_writes() -> int | None:
    """FX-graph cache entries inductor wrote to its local cache (its ``cache_stats``), None where not kept."""
    try:
        from torch._inductor.remote_cache import cache_stats
    except ImportError:
        return None
    stats = getattr(cache_stats, "_stats", None)
    return None if stats is None else int(stats["LocalFxGraphCache"].put)


def fx_graph_cache_has_entries() -> bool:
    """Whether inductor's FX-graph cache directory (under ``TORCHINDUCTOR_CACHE_DIR``) holds any entry."""
    from torch._inductor.codecache import FxGraphCache

    folder = Path(FxGraphCache._get_tmp_dir())
    return folder.is_dir() and any(folder.iterdir())


def _counter_values() -> dict[str, int | None]:
    """Torch's counters (:func:`~.stats.counter_values`) and inductor's count of FX-graph cache writes."""
    return {**counter_values(), FX_GRAPH_SAVED: _fx_graph_cache_writes()}


def _delta(now: int | None, before: int | None) -> int | None:
    return None if now is None or before is None else now - before


class CompileSession:
    """Collects :class:`~.stats.CompileStats` for everything compiled between ``start()`` and now.

    ``reset`` (the default) resets Dynamo on start, so frames compiled before do not count and guards from
    earlier tests do not turn compiles into cache hits; without it, whatever runs compiles as it would have
    (nothing is cleared) and only what happens after start counts. Backends built with :meth:`backend`
    record their pieces here; ``engines`` add their own counters; Dynamo's graph-break log is collected
    until ``stop()``.
    """

    def __init__(self, engines: Iterable[AttributeCounters] = (), reset: bool = True) -> None:
        self.pieces = PieceLog()
        self.graph_break_log = GraphBreakLog()
        self.engines = list(engines)
        self.reset = reset
        self._baseline: dict[str, int | None] = {}
        self._engine_baseline: dict[str, int] = {}
        self._metrics_start = 0
        self._metrics_limit_before: int | None = None

    def start(self) -> None:
        if self.reset:
            torch._dynamo.reset()
            dynamo_utils.clear_compilation_metrics()
        self._metrics_limit_before = dynamo_utils._compilation_metrics.maxlen
        dynamo_utils.set_compilation_metrics_limit(1_000_000)
        self._metrics_start = len(dynamo_utils.get_compilation_metrics())
        self.pieces.cache_warm = fx_graph_cache_has_entries()
        self._baseline = _counter_values()
        self.graph_break_log.attach()
        self._engine_baseline = self._engine_values()

    def watch(self, engine: AttributeCounters) -> None:
        """Count ``engine``'s counters too, from now on."""
        self.engines.append(engine)
        self._engine_baseline.update(self._engine_values([engine]))

    def _engine_values(self, engines: Iterable[AttributeCounters] | None = None) -> dict[str, int]:
        values = {}
        for engine in self.engines if engines is None else engines:
            values.update({f"{engine.name}.{name}": value for name, value in engine.read().items()})
        return values

    def stop(self) -> None:
        self.graph_break_log.detach()
        if self._metrics_limit_before is not None:
            dynamo_utils.set_compilation_metrics_limit(self._metrics_limit_before)
            self._metrics_limit_before = None

    def backend(self, compiler: str = "inductor", splitting_ops: tuple[str, ...] | None = None) -> PiecewiseBackend:
        """A :class:`~.backend.PiecewiseBackend` recording its pieces into this session."""
        return PiecewiseBackend(splitting_ops=splitting_ops, compiler=compiler, pieces=self.pieces)

    @property
    def stats(self) -> CompileStats:
        """The statistics so far (read afresh from torch on every access)."""
        now = _counter_values()
        deltas = {name: _delta(now[name], self._baseline.get(name)) for name in now}
        engine_now = self._engine_values()
        engine_counts = {name: value - self._engine_baseline.get(name, 0) for name, value in engine_now.items()}
        saved, loaded, source = deltas[FX_GRAPH_SAVED], deltas["fx_graph_cache_hits"], "torch"
        for engine in self.engines:  # the engine's own count of artifacts, where its adapter names one
            if engine.saved or engine.loaded:
                source = engine.name
                saved = engine_counts[f"{engine.name}.{engine.saved}"] if engine.saved else saved
                loaded = engine_counts[f"{engine.name}.{engine.loaded}"] if engine.loaded else loaded
        metrics = dynamo_utils.get_compilation_metrics()[self._metrics_start :]
        frames = [m for m in metrics if not m.is_runtime and m.is_forward is not False]
        recompiles = [m for m in frames if (m.cache_size or 0) > 0 or m.recompile_reason]
        recompile_frames = [
            Recompile(str(m.compile_id), m.co_name or "?", f"{m.co_filename}:{m.co_firstlineno}", reason.strip())
            for m in frames
            if (reason := m.recompile_reason)
        ]
        pieces = self.pieces.pieces
        return CompileStats(
            dynamo_frames=len(frames),
            recompiles=len(recompiles),
            recompile_frames=recompile_frames,
            graph_breaks=self.graph_break_log.graph_breaks(),
            pieces=len(pieces),
            unique_pieces=len({p.digest for p in pieces}),
            backend_compilations=self.pieces.backend_compilations,
            inductor_compiles=deltas["fx_graph_cache_misses"] + deltas["fx_graph_cache_bypasses"],
            compile_seconds=self.pieces.compile_seconds,
            hash_disagreements=sum(p.disagreement is not None for p in pieces),
            piece_records=list(pieces),
            artifacts_saved=saved,
            artifacts_loaded=loaded,  # type: ignore[arg-type]
            artifacts_source=source,
            engine_counts=engine_counts,
            **deltas,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def compile_session(fresh_inductor_cache: bool = True) -> Iterator[CompileSession]:
    """A :class:`CompileSession` with fresh Dynamo state and (by default) empty FX-graph and AOT-autograd caches."""
    session = CompileSession()
    cache = _fresh_inductor_cache() if fresh_inductor_cache else contextlib.nullcontext()
    with cache:
        session.start()
        try:
            yield session
        finally:
            session.stop()
            torch._dynamo.reset()


@contextlib.contextmanager
def observe_compile(engines: Iterable[AttributeCounters] = ()) -> Iterator[CompileSession]:
    """Count what is compiled inside the block, whoever compiles it: no reset, the caller's inductor cache.

    ``with observe_compile([vllm_counters()]) as seen: LLM(...)`` then ``seen.stats`` (or
    :func:`~.expectations.expect_counts`) has Dynamo's frames, graphs and recompiles, torch's FX-graph and
    AOT-autograd cache hits, misses, bypasses and writes, and the engine's counters, all as deltas.
    """
    session = CompileSession(engines, reset=False)
    session.start()
    try:
        yield session
    finally:
        session.stop()


#: Fresh sessions open now (a session nested in another gets a cache dir of its own).
_open_fresh_sessions: list[str] = []


@functools.cache
def _session_cache_dir(depth: int) -> str:
    """This process's inductor cache dir for fresh sessions nested ``depth`` deep, removed at exit."""
    folder = tempfile.mkdtemp(prefix=f"layername-session-cache-{depth}-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@contextlib.contextmanager
def _fresh_inductor_cache() -> Iterator[None]:
    """Empty FX-graph, AOT-autograd and Dynamo (PGO) caches; compiled C++/Triton kernels stay between sessions.

    What the counts read (FX-graph and AOT-autograd cache hits and misses) starts empty in every session,
    as with torch's ``fresh_cache``; a kernel whose source an earlier session compiled loads from disk
    instead of going through the C++ compiler again, which is most of a CPU compile's time (with a
    :mod:`.kernel_store`, kernels other processes of the run built too). A session nested in another uses
    another dir, so the outer session's entries survive it.
    """
    from torch._functorch._aot_autograd.autograd_cache import AOTAutogradCache
    from torch._inductor import utils as inductor_utils
    from torch._inductor.codecache import FxGraphCache

    clear_caches = getattr(inductor_utils, "clear_caches", None) or inductor_utils.clear_inductor_caches
    folder = _session_cache_dir(len(_open_fresh_sessions))
    saved = {key: os.environ.get(key) for key in (CACHE_ENV, TRITON_CACHE_ENV)}
    os.environ[CACHE_ENV] = folder
    os.environ[TRITON_CACHE_ENV] = os.path.join(folder, "triton")
    _open_fresh_sessions.append(folder)
    try:
        clear_caches()
        FxGraphCache.clear()
        AOTAutogradCache.clear()
        shutil.rmtree(os.path.join(folder, "dynamo"), ignore_errors=True)
        kernel_store.seed(folder)
        yield
        kernel_store.harvest(folder)  # a session that raised may have left a kernel half-built
    finally:
        _open_fresh_sessions.pop()
        clear_caches()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
