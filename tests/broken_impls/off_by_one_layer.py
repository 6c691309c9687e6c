"""Bug: every layer resolves to the next layer of its kind (``layers.N`` to ``layers.N+1``, the last one to layer 0).

Like an engine's resolver that looks names up in its own forward context, it only returns names that exist
there, so nothing raises: every op silently reads and writes its neighbour's state.
"""

from __future__ import annotations

import re

from pytest_layername.core import reference
from pytest_layername.core.forward_context import _layers
from pytest_layername.core.reference import LayerName

_USE_LAYERNAME = reference._USE_LAYERNAME


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    name = reference._resolve_layer_name(layer_name)
    match = re.match(r"model\.layers\.(\d+)\.", name)
    if match is None:
        return name
    rest = name[match.end() :]
    following = f"model.layers.{int(match[1]) + 1}.{rest}"
    return following if following in (_layers.get() or {}) else f"model.layers.0.{rest}"
