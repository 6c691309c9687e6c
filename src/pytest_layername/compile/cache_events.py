"""What torch's compile caches (and an engine's) said about each lookup, read from their own log records.

Torch's counters say how many FX-graph and AOT-autograd cache lookups hit, missed or bypassed; its loggers
(``torch._inductor.codecache``, ``torch._functorch._aot_autograd.autograd_cache``) say which key and why:
``Bypassing FX Graph Cache because '...'``, ``fx graph cache unable to load compiled graph`` (with the
exception; logged for an unreadable entry of either cache: the lookup on the stack says which),
``AOTAutograd cache unable to load compiled graph: ...``. :func:`cache_event_log` turns those
records into :class:`CacheEvent` s while a block runs. An engine adds its own line through a
:class:`LogReason` (vLLM's ``Compiling model again due to a load failure ...``), named by its adapter.
Standard library only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

FX_GRAPH = "fx_graph"
AOT_AUTOGRAD = "aot_autograd"
#: torch logs ``fx graph cache unable to load compiled graph`` for an unreadable entry of either cache (both
#: iterate their entries through ``GuardedCache``): the lookup on the stack says which; else this
UNATTRIBUTED = "unattributed"
#: (file name, function) of each cache's lookup, nearest on the stack wins (an FX-graph lookup runs inside
#: an AOT-autograd one)
LOOKUPS = {("codecache.py", "_lookup_graph"): FX_GRAPH, ("autograd_cache.py", "_lookup"): AOT_AUTOGRAD}
#: torch's log message (its format string) -> (cache, state); hit/miss carry the key, the rest the reason.
TORCH_MESSAGES: dict[str, tuple[str, str]] = {
    "fx graph cache hit for key %s": (FX_GRAPH, "hit"),
    "fx graph cache miss for key %s": (FX_GRAPH, "miss"),
    "Bypassing FX Graph Cache because '%s'": (FX_GRAPH, "bypass"),
    "fx graph cache unable to load compiled graph": (UNATTRIBUTED, "load_failure"),
    "AOTAutograd cache hit for key %s": (AOT_AUTOGRAD, "hit"),
    "AOTAutograd cache miss for key %s": (AOT_AUTOGRAD, "miss"),
    "Bypassing autograd cache due to: %s": (AOT_AUTOGRAD, "bypass"),
    "AOTAutograd cache unable to load compiled graph: %s": (AOT_AUTOGRAD, "load_failure"),
}
TORCH_LOGGERS = ("torch._inductor.codecache", "torch._functorch._aot_autograd.autograd_cache")


@dataclass(frozen=True)
class CacheEvent:
    """One lookup or load failure: which cache, what happened (hit, miss, bypass, load_failure, recompile),
    the key where torch logs one, and the reason in torch's (or the engine's) words."""

    cache: str
    state: str
    key: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LogReason:
    """An engine's log line saying it compiles again: ``logger``'s records whose message matches ``pattern``
    become ``recompile`` events of cache ``cache`` with the whole message as the reason."""

    cache: str
    logger: str
    pattern: str


def _exception_text(record: logging.LogRecord) -> str | None:
    if not record.exc_info or record.exc_info[1] is None:
        return None
    error = record.exc_info[1]
    return f"{type(error).__name__}: {error}"


def torch_event(record: logging.LogRecord) -> CacheEvent | None:
    """The event a record of torch's cache loggers reports, or None for any other record."""
    known = TORCH_MESSAGES.get(str(record.msg))
    if known is None:
        return None
    cache, state = known
    cache = _looking_up() if cache == UNATTRIBUTED else cache
    argument = str(record.args[0]) if isinstance(record.args, tuple) and record.args else None
    if state in ("hit", "miss"):
        return CacheEvent(cache, state, key=argument)
    return CacheEvent(cache, state, reason=argument or _exception_text(record) or record.getMessage())


def _looking_up() -> str:
    """The cache whose lookup is nearest on the calling stack (the record is handled where it is logged)."""
    frame = sys._getframe()
    while frame is not None:
        cache = LOOKUPS.get((os.path.basename(frame.f_code.co_filename), frame.f_code.co_name))
        if cache is not None:
            return cache
        frame = frame.f_back
    return UNATTRIBUTED


class _Collector(logging.Handler):
    """Appends the events of torch's records it sees; WARNING and above still reach torch's own handlers."""

    def __init__(self, events: list[CacheEvent]) -> None:
        super().__init__(logging.DEBUG)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        event = torch_event(record)
        if event is not None:
            self.events.append(event)
        parent = logging.getLogger(record.name).parent
        if record.levelno >= logging.WARNING and parent is not None:
            parent.handle(record)  # the collector stops propagation of torch's loggers: keep warnings visible


class _EngineLines(logging.Filter):
    """Appends an event for each record of an engine's logger that matches its line, and lets every record
    through. A filter, not a handler: an engine that configures its logging when imported (vLLM's
    ``dictConfig``) resets the handlers of its loggers, not their filters."""

    def __init__(self, events: list[CacheEvent], reason: LogReason) -> None:
        super().__init__()
        self.events, self.reason = events, reason

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if re.search(self.reason.pattern, message):
            self.events.append(CacheEvent(self.reason.cache, "recompile", reason=message))
        return True


@contextlib.contextmanager
def cache_event_log(reasons: Iterable[LogReason] = ()) -> Iterator[list[CacheEvent]]:
    """The cache events of what runs inside, in order (torch's caches, and each engine ``reasons`` line)."""
    events: list[CacheEvent] = []
    reasons = list(reasons)
    collector = _Collector(events)
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name in TORCH_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)  # hits, misses and bypasses are INFO records
        logger.propagate = False  # ... which torch's handlers would print: only warnings go on (see _Collector)
        logger.addHandler(collector)
    engine_lines = [(logging.getLogger(r.logger), _EngineLines(events, r)) for r in reasons]
    for logger, lines in engine_lines:
        logger.addFilter(lines)
    try:
        yield events
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(collector)
            logger.setLevel(level)
            logger.propagate = propagate
        for logger, lines in engine_lines:
            logger.removeFilter(lines)
