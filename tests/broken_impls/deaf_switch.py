"""Bug: the module has the ``_USE_LAYERNAME`` switch, but its encoder never reads it (it reads another module's).

Turning the switch off leaves every name wrapped: string mode, the engine's fallback, never runs.
"""

from __future__ import annotations

from pytest_layername.core import reference
from pytest_layername.core.reference import LayerName, _encode_layer_name, _resolve_layer_name  # noqa: F401

_USE_LAYERNAME = reference._USE_LAYERNAME
