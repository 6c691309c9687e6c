"""Bug: ``LayerName`` is registered hoisted by the first ``_encode_layer_name`` call, not when the module is imported.

An engine that declares its ops at import (``torch.library.custom_op`` with a ``LayerName`` annotation) fails.
"""

from __future__ import annotations

from pytest_layername.core.compat import is_registered_opaque_type, opaque_base, opaque_support, register_value_type

from ._value import NamedValue


class LayerName(NamedValue, opaque_base() if opaque_support().supported else object):  # type: ignore[misc]
    """Correct in itself: the bug is when it is registered."""


_USE_LAYERNAME = opaque_support().supported


def _encode_layer_name(name: str) -> LayerName | str:
    if opaque_support().supported and not is_registered_opaque_type(LayerName):
        register_value_type(LayerName, hoist=True)  # the bug: registered on first use
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return layer_name.value if isinstance(layer_name, LayerName) else layer_name
