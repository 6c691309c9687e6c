"""A deliberately broken implementation: it has the ``_USE_LAYERNAME`` switch, but its encoder never wraps."""

from __future__ import annotations

from pytest_layername.core.reference import LayerName, _resolve_layer_name  # noqa: F401 (the implementation's API)

_USE_LAYERNAME = True


def _encode_layer_name(name: str) -> LayerName | str:
    return name  # the bug: ignores the switch
