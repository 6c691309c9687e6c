"""Bug: a layer index of two or more digits keeps only its first digit (``layers.12`` resolves to ``layers.1``)."""

from __future__ import annotations

import re

from pytest_layername.core import reference
from pytest_layername.core.reference import LayerName, _encode_layer_name  # noqa: F401 (the implementation's API)

_USE_LAYERNAME = reference._USE_LAYERNAME


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return re.sub(r"layers\.(\d)\d+\.", r"layers.\1.", reference._resolve_layer_name(layer_name))
