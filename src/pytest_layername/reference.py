"""The bundled reference implementation: ``LayerName`` and the encode/resolve pair, named as in vLLM."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, TypeAlias

from .compat import opaque_support
from .modes import Mode, auto_mode, resolve_mode

if opaque_support().supported:
    from torch._opaque_base import OpaqueBase as _Base
else:  # torch without hoisted opaque types: a plain class, strings are used instead
    _Base = object  # type: ignore[assignment,misc]


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
    from torch._library.opaque_object import is_opaque_type, register_opaque_type

    if not is_opaque_type(cls):
        register_opaque_type(cls, typ="value", hoist=True)
    return True


OPAQUE_REGISTERED = register_layer_name_type()
LayerNameType: TypeAlias = LayerName if OPAQUE_REGISTERED else str  # type: ignore[misc]

_current_mode: contextvars.ContextVar[Mode | None] = contextvars.ContextVar("layername_mode", default=None)


def current_mode() -> Mode:
    """The mode :func:`_encode_layer_name` uses now (``auto`` unless :func:`use_mode` is active)."""
    return _current_mode.get() or auto_mode()


@contextlib.contextmanager
def use_mode(mode: str) -> Iterator[Mode]:
    """Make :func:`_encode_layer_name` wrap (``opaque``) or not (``string``) inside the block."""
    token = _current_mode.set(resolve_mode(mode))
    try:
        yield current_mode()
    finally:
        _current_mode.reset(token)


def _encode_layer_name(name: str) -> LayerName | str:
    """Wrap ``name`` for a custom op in opaque mode; pass it through in string mode."""
    return LayerName(name) if current_mode() == "opaque" else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    """Inside an op: the plain name, whether it arrived wrapped or not."""
    if isinstance(layer_name, LayerName):
        return layer_name.value
    if isinstance(layer_name, str):
        return layer_name
    raise TypeError(f"expected LayerName or str, got {type(layer_name).__name__}: {layer_name!r}")
