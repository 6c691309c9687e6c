"""Per-layer state looked up by name inside op bodies, as inference engines do."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

_layers: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("layername_layers", default=None)


@contextlib.contextmanager
def forward_context(layers: Mapping[str, Any]) -> Iterator[None]:
    """Make ``layers`` (name -> layer module holding its state) visible to the ops for one forward."""
    token = _layers.set(layers)
    try:
        yield
    finally:
        _layers.reset(token)


def layer_state(name: str) -> Any:
    """The layer registered under ``name`` in the active forward context."""
    layers = _layers.get()
    if layers is None:
        raise RuntimeError(f"layer {name!r} looked up outside a forward context (wrap the call in model.context())")
    try:
        return layers[name]
    except KeyError:
        raise KeyError(f"no layer named {name!r} in the forward context (known: {len(layers)} layers)") from None
