"""Layer-name modes: hoisted ``LayerName`` (opaque) or the plain ``str`` fallback (string)."""

from __future__ import annotations

from .compat import OpaqueSupport, opaque_support
from .names import MODES, REQUESTABLE, Mode

__all__ = ["MODES", "REQUESTABLE", "Mode", "ModeError", "auto_mode", "resolve_mode", "resolve_modes", "validate_mode"]


class ModeError(ValueError):
    """A mode that is unknown or that this torch cannot run."""


def validate_mode(requested: str) -> str:
    """Return ``requested`` if it is one of :data:`REQUESTABLE`, else raise :class:`ModeError`."""
    if requested not in REQUESTABLE:
        raise ModeError(f"unknown layer-name mode {requested!r}; choose one of: {', '.join(REQUESTABLE)}")
    return requested


def auto_mode(support: OpaqueSupport | None = None) -> Mode:
    """The mode ``auto`` picks: opaque where this torch supports hoisting, else string."""
    return "opaque" if (support or opaque_support()).supported else "string"


def resolve_mode(requested: str, support: OpaqueSupport | None = None) -> Mode:
    """Turn ``auto|opaque|string`` into a concrete mode; opaque without support is an error saying why."""
    support = support or opaque_support()
    requested = validate_mode(requested)
    if requested == "both":
        raise ModeError("mode 'both' names two modes; use resolve_modes()")
    if requested == "auto":
        return auto_mode(support)
    if requested == "opaque" and not support.supported:
        raise ModeError(f"mode 'opaque' needs hoisted opaque types, which this torch lacks: {support.reason}")
    return requested  # type: ignore[return-value]


def resolve_modes(requested: str, support: OpaqueSupport | None = None) -> list[Mode]:
    """Modes a run covers: ``both`` gives both (opaque first), anything else one concrete mode."""
    if validate_mode(requested) == "both":
        return list(MODES)
    return [resolve_mode(requested, support)]
