"""A deliberately half-migrated op module: one op still takes ``layer_name: str``, the others do not.

Importing registers the ops in :data:`NAMESPACE`; :func:`build` is a ``MODULE:FACTORY`` for
``layername audit --model fixtures_broken_ops:build``.
"""

from __future__ import annotations

import torch
from torch import nn

from pytest_layername.core.reference import OPAQUE_REGISTERED, LayerName, LayerNameType

NAMESPACE = "layername_audit_fixture"
STILL_STR = f"{NAMESPACE}::still_str"
LAYERS = 3


def _op(name: str, fn, fake=None):
    if not hasattr(getattr(torch.ops, NAMESPACE), name):
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", fn, mutates_args=())
        op.register_fake(fake or (lambda x, *args: torch.empty_like(x)))
    return getattr(getattr(torch.ops, NAMESPACE), name)


def _still_str(x: torch.Tensor, layer_name: str) -> torch.Tensor:
    return x + len(layer_name)


def _hoisted(x: torch.Tensor, layer_name: LayerNameType) -> torch.Tensor:
    return x * 1.0


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:  # a str argument that is not a layer name
    return x.sum() * 0 + x if reduction == "none" else x


still_str = _op("still_str", _still_str)
hoisted = _op("hoisted", _hoisted)
reduce = _op("reduce", _reduce)

#: Ops the namespace audit must name: the str op, plus the "hoisted" one where LayerNameType falls back to str.
EXPECTED_FINDINGS = {STILL_STR} | (set() if OPAQUE_REGISTERED else {f"{NAMESPACE}::hoisted"})


class HalfMigrated(nn.Module):
    """``LAYERS`` layers; each calls ``still_str`` with its prefix and ``hoisted`` with a ``LayerName``."""

    def __init__(self) -> None:
        super().__init__()
        self.prefixes = [f"model.layers.{i}.mlp" for i in range(LAYERS)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for prefix in self.prefixes:
            name = LayerName(prefix) if OPAQUE_REGISTERED else prefix
            x = hoisted(still_str(x, prefix), name)
        return reduce(x, "none")

    def example_input(self) -> torch.Tensor:
        return torch.zeros(4)


def build() -> HalfMigrated:
    return HalfMigrated()


def build_tuple() -> tuple[nn.Module, tuple[torch.Tensor]]:
    return HalfMigrated(), (torch.zeros(4),)


def build_nothing() -> int:
    return 42


def build_raises() -> None:
    raise RuntimeError("no weights on this machine")
