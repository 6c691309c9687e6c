"""Pattern-matcher activity per fusion pass: patterns registered and matches made, while a log is open."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

_active: list[FusionLog] = []


class FusionLog:
    """Counts that passes report while this log is open (see :func:`fusion_log`)."""

    def __init__(self) -> None:
        self._patterns: dict[str, list[str]] = {}
        self._matches: dict[str, Counter[str]] = {}

    def patterns(self, pass_name: str) -> int:
        """How many patterns ``pass_name`` registered."""
        return len(self._patterns.get(pass_name, []))

    def matched(self, pass_name: str, pattern: str | None = None) -> int:
        """How many matches ``pass_name`` replaced (of one ``pattern`` when given)."""
        counts = self._matches.get(pass_name, Counter())
        return counts[pattern] if pattern is not None else sum(counts.values())

    def passes(self) -> list[str]:
        return sorted(set(self._patterns) | set(self._matches))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "patterns": self.patterns(name),
                "matched": self.matched(name),
                "per_pattern": dict(self._matches.get(name, Counter())),
            }
            for name in self.passes()
        }


def record_patterns(pass_name: str, pattern_names: list[str]) -> None:
    """Called by a pass when it registers its patterns."""
    for log in _active:
        log._patterns[pass_name] = list(pattern_names)


def record_match(pass_name: str, pattern_name: str) -> None:
    """Called by a pass each time one of its patterns is replaced in a graph."""
    for log in _active:
        log._matches.setdefault(pass_name, Counter())[pattern_name] += 1


@contextlib.contextmanager
def fusion_log() -> Iterator[FusionLog]:
    """Capture pattern registrations and matches made inside the block."""
    log = FusionLog()
    _active.append(log)
    try:
        yield log
    finally:
        _active.remove(log)
