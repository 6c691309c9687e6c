"""Bug: a ``LayerName`` pickles as an index into a table of this process: it unpickles only where it was made."""

from __future__ import annotations

from typing import Any

from pytest_layername.core.compat import opaque_base, opaque_support, register_value_type

from ._value import NamedValue

_NAMES: list[str] = []  # this process's names, in order of first use


def _from_index(index: int) -> LayerName:
    return LayerName(_NAMES[index])


class LayerName(NamedValue, opaque_base() if opaque_support().supported else object):  # type: ignore[misc]
    def __init__(self, value: str) -> None:
        super().__init__(value)
        if value not in _NAMES:
            _NAMES.append(value)

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return _from_index, (_NAMES.index(self.value),)  # the bug: an index, meaningless in another process


if opaque_support().supported:
    register_value_type(LayerName, hoist=True)
_USE_LAYERNAME = opaque_support().supported


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return layer_name.value if isinstance(layer_name, LayerName) else layer_name
