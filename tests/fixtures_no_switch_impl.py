"""An implementation without a mode switch: its encoder always wraps (only opaque mode can be exercised)."""

from __future__ import annotations

from pytest_layername.core.reference import LayerName, _resolve_layer_name  # noqa: F401 (the implementation's API)


def _encode_layer_name(name: str) -> LayerName:
    return LayerName(name)
