"""The bundled reference implementation: ``LayerName`` and the encode/resolve pair, named as in vLLM."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeAlias

from .compat import is_registered_opaque_type, opaque_base, opaque_support, register_value_type
from .modes import Mode, resolve_mode

#: torch without hoisted opaque types: a plain class, strings are used instead.
_Base = opaque_base() if opaque_support().supported else object


class LayerName(_Base):  # type: ignore[misc,valid-type]
    """A layer name that torch.compile lifts to a graph input instead of baking it as a constant."""

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"LayerName wraps a str, got {type(value).__name__}: {value!r}")
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerName) and other.value == self.value

    def __hash__(self) -> int:
        return hash((LayerName, self.value))

    def __repr__(self) -> str:
        return f"LayerName({self.value!r})"

    def __fx_repr__(self) -> tuple[str, dict[str, type]]:
        return f"LayerName({self.value!r})", {"LayerName": LayerName}

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return LayerName, (self.value,)


def register_layer_name_type(cls: type = LayerName) -> bool:
    """Register ``cls`` as a hoisted value opaque type once; returns whether it is registered."""
    if not opaque_support().supported:
        return False
    if not is_registered_opaque_type(cls):
        register_value_type(cls, hoist=True)
    return True


OPAQUE_REGISTERED = register_layer_name_type()
LayerNameType: TypeAlias = LayerName if OPAQUE_REGISTERED else str  # type: ignore[misc]

#: The mode switch, read by :func:`_encode_layer_name` at call time (as vLLM's ``_USE_LAYERNAME``):
#: on wherever ``LayerName`` is registered hoisted; ``LAYERNAME_USE_LAYERNAME=0`` turns it off.
_USE_LAYERNAME: bool = OPAQUE_REGISTERED and os.environ.get("LAYERNAME_USE_LAYERNAME", "1") != "0"


def current_mode() -> Mode:
    """The mode :func:`_encode_layer_name` uses now."""
    return "opaque" if _USE_LAYERNAME else "string"


@contextlib.contextmanager
def use_mode(mode: str) -> Iterator[Mode]:
    """Make :func:`_encode_layer_name` wrap (``opaque``) or not (``string``) inside the block (``auto`` too)."""
    global _USE_LAYERNAME
    before, _USE_LAYERNAME = _USE_LAYERNAME, resolve_mode(mode) == "opaque"
    try:
        yield current_mode()
    finally:
        _USE_LAYERNAME = before


def _encode_layer_name(name: str) -> LayerName | str:
    """Wrap ``name`` for a custom op when the switch is on; pass it through otherwise."""
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    """Inside an op: the plain name, whether it arrived wrapped or not."""
    if isinstance(layer_name, LayerName):
        return layer_name.value
    if isinstance(layer_name, str):
        return layer_name
    raise TypeError(f"expected LayerName or str, got {type(layer_name).__name__}: {layer_name!r}")
