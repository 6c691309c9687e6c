"""A deliberately broken implementation: ``LayerName`` registered as a value opaque type *without* ``hoist=True``.

Dynamo then bakes each layer's ``LayerName`` into the graph as a constant, exactly like a ``str``; the
harness must say so (unique pieces per layer, failing opaque-mode tests), never report a false green.
It has the vLLM-style ``_USE_LAYERNAME`` switch, so both modes are exercised.
"""

from __future__ import annotations

from typing import Any

from broken_impls._value import NamedValue
from pytest_layername.core.compat import is_registered_opaque_type, opaque_base, opaque_support, register_value_type


class LayerName(NamedValue, opaque_base() if opaque_support().supported else object):  # type: ignore[misc]
    def __repr__(self) -> str:
        return f"LayerName({self.value!r})"


if opaque_support().supported and not is_registered_opaque_type(LayerName):
    register_value_type(LayerName, hoist=False)  # the bug: no hoist=True

_USE_LAYERNAME = opaque_support().supported


def _encode_layer_name(name: str) -> LayerName | str:
    return LayerName(name) if _USE_LAYERNAME else name


def _resolve_layer_name(layer_name: LayerName | str) -> str:
    return layer_name.value if isinstance(layer_name, LayerName) else layer_name


def build_scaled_layers() -> tuple[Any, tuple[Any, ...]]:
    """An audit ``--model`` factory: three layers call an op typed with this unhoisted ``LayerName``."""
    import torch

    def scale(x, layer_name):  # annotated below: this module's annotations are strings
        return x * len(_resolve_layer_name(layer_name))

    scale.__annotations__ = {"x": torch.Tensor, "layer_name": LayerName, "return": torch.Tensor}
    op = torch.library.custom_op("layername_unhoisted_fixture::scale", scale, mutates_args=())
    op.register_fake(lambda x, layer_name: torch.empty_like(x))

    def layers(x: torch.Tensor) -> torch.Tensor:
        for i in range(3):
            x = torch.ops.layername_unhoisted_fixture.scale(x, _encode_layer_name(f"model.layers.{i}.mlp"))
        return x

    return layers, (torch.ones(2),)
