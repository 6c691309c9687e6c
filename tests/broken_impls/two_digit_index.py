"""Bug: a layer index of two or more digits keeps only its first digit (``layers.12`` resolves to ``layers.1``)."""

from __future__ import annotations

import re

from pytest_layername.core import reference
from pytest_layername.core.reference import LayerName

_USE_LAYERNAME = reference._USE_LAYERNAME


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return re.sub(r"layers\.(\d)\d+\.", r"layers.\1.", reference._resolve_layer_name(layer_name))
