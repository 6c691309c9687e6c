"""Adapters for the compile counters an inference engine keeps itself, read beside torch's.

An adapter reads integer counters from an engine object (vLLM's ``compilation_counter``: artifacts saved
and loaded, graphs seen, backend compilations); a compile session records their deltas as
``"<name>.<counter>"`` and takes ``artifacts_saved`` / ``artifacts_loaded`` from the counters the adapter
names. An adapter may also name the engine's log lines that say it compiles again (``log_reasons``,
:class:`~.cache_events.LogReason`): a start records them as the reasons of a recompile. :func:`engine_counters`
resolves ``"vllm"`` or a ``"module:factory"`` of one's own.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cache_events import LogReason


class EngineCountersError(ValueError):
    """An engine adapter that cannot be found or read."""


@dataclass(frozen=True)
class AttributeCounters:
    """The integer attributes of ``source`` (a dataclass's fields, or ``fields``), reported under ``name``.

    ``saved`` / ``loaded`` name the counters of compiled artifacts written to / read from the engine's cache;
    ``log_reasons`` the engine's log lines that say it compiles again, and why.
    """

    name: str
    source: Any
    fields: tuple[str, ...] | None = None
    saved: str | None = None
    loaded: str | None = None
    log_reasons: tuple[LogReason, ...] = ()

    def __post_init__(self) -> None:
        names = self.names()
        missing = [f for f in (self.saved, self.loaded) if f is not None and f not in names]
        if missing:
            raise EngineCountersError(f"{self.name}: no counter(s) {', '.join(missing)} (has: {', '.join(names)})")

    def names(self) -> tuple[str, ...]:
        if self.fields is not None:
            return self.fields
        if dataclasses.is_dataclass(self.source):
            return tuple(f.name for f in dataclasses.fields(self.source) if f.type in ("int", int))
        raise EngineCountersError(f"{self.name}: {type(self.source).__name__} is not a dataclass; name its fields")

    def read(self) -> dict[str, int]:
        """Every counter's current value."""
        return {field: int(getattr(self.source, field)) for field in self.names()}


#: vLLM's warning when a saved compiled model does not load (``vllm/compilation/decorators.py``).
VLLM_LOAD_FAILURE = LogReason("vllm", "vllm.compilation.decorators", r"Compiling model again due to a load failure")


def vllm_counters() -> AttributeCounters:
    """vLLM's ``vllm.compilation.counter.compilation_counter`` (the engine must run in this process:
    ``VLLM_ENABLE_V1_MULTIPROCESSING=0``)."""
    from vllm.compilation.counter import compilation_counter

    return AttributeCounters(
        "vllm", compilation_counter, saved="num_compiled_artifacts_saved", loaded="num_compiled_artifacts_loaded",
        log_reasons=(VLLM_LOAD_FAILURE,),
    )  # fmt: skip


#: Engines known by name; anything else is given as ``"module:factory"``.
KNOWN_ENGINES: dict[str, Callable[[], AttributeCounters]] = {"vllm": vllm_counters}


def engine_counters(spec: str) -> AttributeCounters:
    """The adapter for ``spec``: a name in :data:`KNOWN_ENGINES` or ``"module:factory"`` (called with no arguments)."""
    if spec in KNOWN_ENGINES:
        return KNOWN_ENGINES[spec]()
    module_name, _, factory = spec.partition(":")
    if not factory:
        raise EngineCountersError(f"engine counters {spec!r}: give one of {', '.join(KNOWN_ENGINES)} or module:factory")
    try:
        made = getattr(importlib.import_module(module_name), factory)()
    except (ImportError, AttributeError) as error:
        raise EngineCountersError(f"engine counters {spec!r}: {error}") from error
    if not isinstance(made, AttributeCounters):
        raise EngineCountersError(f"engine counters {spec!r}: {factory}() returned {type(made).__name__}")
    return made
