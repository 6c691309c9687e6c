"""Bug: ``LayerName.__eq__`` and ``__hash__`` ignore the name: layers 0 and 1 compare equal, a dict keeps one."""

from __future__ import annotations

from pytest_layername.core.compat import opaque_base, opaque_support, register_value_type

from ._value import NamedValue


class LayerName(NamedValue, opaque_base() if opaque_support().supported else object):  # type: ignore[misc]
    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerName)  # the bug: any two names are equal

    def __hash__(self) -> int:
        return hash(LayerName)  # the bug: one hash for every name


if opaque_support().supported:
    register_value_type(LayerName, hoist=True)
_USE_LAYERNAME = opaque_support().supported


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return layer_name.value if isinstance(layer_name, LayerName) else layer_name
