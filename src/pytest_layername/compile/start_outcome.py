"""What a start on an existing cache did: a clean warm load, a recompile and why, or a loud error.

:func:`classify` reads it from torch's counters (and the engine's) and the cache events of the start
(:mod:`.cache_events`): *loaded* when nothing was compiled, rebuilt or saved and something was loaded;
*recompiled* when an FX-graph lookup missed or bypassed (inductor compiled), an AOT-autograd entry was
rebuilt, an artifact was saved or the engine said it compiles again; *empty* when nothing was compiled
or loaded at all (not a warm start); *error* when the start failed. Every recompile carries the reasons
torch gave, one line per miss, bypass and load failure; where torch counted more misses or bypasses than
it logged, a line says so. :func:`expect_outcome` asserts the outcome a test expects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cache_events import AOT_AUTOGRAD, FX_GRAPH, CacheEvent
from .stats import CompileStats

OUTCOMES = ("loaded", "recompiled", "empty", "error")
CACHE_NAMES = {FX_GRAPH: "FX-graph", AOT_AUTOGRAD: "AOT-autograd"}


class OutcomeMismatch(AssertionError):
    """A start's outcome (or its reason) is not the one a test expected."""


@dataclass(frozen=True)
class StartOutcome:
    """A start's outcome, the counts behind it and torch's reasons (see the module docstring)."""

    kind: str
    compiled: int = 0  # inductor compiles: FX-graph cache misses plus bypasses
    rebuilt: int = 0  # AOT-autograd cache misses plus bypasses
    saved: int = 0  # artifacts written (the engine's count where its adapter names one)
    loaded: int = 0  # artifacts loaded (the engine's count, else FX-graph cache hits)
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "compiled": self.compiled,
            "rebuilt": self.rebuilt,
            "saved": self.saved,
            "loaded": self.loaded,
            "reasons": list(self.reasons),
        }


def _reason(event: CacheEvent) -> str:
    name = CACHE_NAMES.get(event.cache, event.cache)
    if event.state == "miss":
        return f"{name} cache miss: no loadable entry (key {event.key})"
    if event.state == "bypass":
        return f"{name} cache bypass: {event.reason}"
    if event.state == "load_failure":
        return f"{name} cache could not load an entry: {event.reason}"
    return f"{name}: {event.reason}"


def _unlogged(events: Sequence[CacheEvent], cache: str, state: str, counted: int) -> list[str]:
    """A line for the lookups torch counted but did not log. The one AOT-autograd miss torch counts silently
    is an entry found whose FX-graph entry did not load (``FXGraphCacheMiss``): its FX-graph miss is logged."""
    missing = counted - sum(e.cache == cache and e.state == state for e in events)
    if missing <= 0:
        return []
    if (cache, state) == (AOT_AUTOGRAD, "miss") and any(e.cache == FX_GRAPH and e.state == "miss" for e in events):
        return [f"{missing} AOT-autograd cache entr(ies) found whose FX-graph entry did not load (FXGraphCacheMiss)"]
    return [f"torch counted {missing} {CACHE_NAMES[cache]} cache {state}(es) more than it logged: reason not logged"]


def classify(stats: CompileStats, events: Sequence[CacheEvent]) -> StartOutcome:
    """The outcome of a finished start from its statistics and cache events."""
    compiled = stats.fx_graph_cache_misses + stats.fx_graph_cache_bypasses
    rebuilt = stats.aot_autograd_cache_misses + stats.aot_autograd_cache_bypasses
    saved = stats.artifacts_saved or 0
    engine_recompiles = [e for e in events if e.state == "recompile"]
    reasons = [_reason(e) for e in events if e.state != "hit"]
    for cache, state, counted in (
        (FX_GRAPH, "miss", stats.fx_graph_cache_misses),
        (FX_GRAPH, "bypass", stats.fx_graph_cache_bypasses),
        (AOT_AUTOGRAD, "miss", stats.aot_autograd_cache_misses),
        (AOT_AUTOGRAD, "bypass", stats.aot_autograd_cache_bypasses),
    ):
        reasons += _unlogged(events, cache, state, counted)
    if compiled or rebuilt or saved or engine_recompiles:
        kind = "recompiled"
    else:
        kind = "loaded" if stats.artifacts_loaded else "empty"
    return StartOutcome(kind, compiled, rebuilt, saved, stats.artifacts_loaded, tuple(reasons))


def error_outcome(message: str) -> StartOutcome:
    """The outcome of a start that failed loudly; ``message`` is its reason."""
    return StartOutcome("error", reasons=(message,))


def expect_outcome(outcome: StartOutcome, kind: str, *, reason: str | None = None, label: str = "start") -> None:
    """Raise :class:`OutcomeMismatch` unless ``outcome`` is ``kind`` with a reason matching ``reason`` (a regex).

    ``loaded`` is a clean warm load: any reason (a load failure torch skipped, say) fails it unless ``reason``
    matches one. ``recompiled`` needs a reason from torch (or the engine) for the recompile.
    """
    __tracebackhide__ = True
    if kind not in OUTCOMES:
        raise ValueError(f"unknown outcome {kind!r}; choose one of {', '.join(OUTCOMES)}")
    said = "\n  ".join(outcome.reasons) or "(no reason given)"
    counts = f"compiled {outcome.compiled}, rebuilt {outcome.rebuilt}, saved {outcome.saved}, loaded {outcome.loaded}"
    head = f"{label}: expected {kind}, got {outcome.kind} ({counts})"
    if outcome.kind != kind:
        raise OutcomeMismatch(f"{head}; reasons:\n  {said}")
    if reason is not None and not any(re.search(reason, line) for line in outcome.reasons):
        raise OutcomeMismatch(f"{label}: {kind}, but no reason matches {reason!r}; reasons:\n  {said}")
    if kind == "loaded" and reason is None and outcome.reasons:
        raise OutcomeMismatch(f"{label}: loaded, but not cleanly; reasons:\n  {said}")
    if kind == "recompiled" and not outcome.reasons:
        raise OutcomeMismatch(f"{label}: recompiled with no reason from torch or the engine ({counts})")
