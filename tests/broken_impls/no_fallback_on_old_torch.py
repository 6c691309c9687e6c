"""Bug: registers with ``hoist=True`` wherever ``register_opaque_type`` exists, without asking whether torch takes it.

Fine on torch 2.11-2.13; on torch 2.10 (and vendor builds whose ``register_opaque_type`` has no ``hoist=``) the
import raises ``TypeError`` instead of falling back to plain strings.
"""

from __future__ import annotations

from ._value import NamedValue

try:
    from torch._library.opaque_object import register_opaque_type
except ImportError:
    register_opaque_type = None

try:
    from torch._opaque_base import OpaqueBase as _Base
except ImportError:
    _Base = object  # type: ignore[misc,assignment]


class LayerName(NamedValue, _Base):  # type: ignore[misc,valid-type]
    """Correct in itself: the bug is how it is registered."""


_USE_LAYERNAME = register_opaque_type is not None
if register_opaque_type is not None:
    register_opaque_type(LayerName, typ="value", hoist=True)  # the bug: no check that hoist= exists


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return layer_name.value if isinstance(layer_name, LayerName) else layer_name
