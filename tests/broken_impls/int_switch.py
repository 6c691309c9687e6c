"""Bug: the mode switch is an int (``_USE_LAYERNAME = 1``), so nothing recognises it as the switch."""

from __future__ import annotations

from pytest_layername.core.reference import LayerName, _resolve_layer_name  # noqa: F401 (the implementation's API)

_USE_LAYERNAME = 1  # the bug: not a bool


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name
