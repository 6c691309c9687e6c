"""The probe: one op per layer name that records the name it resolved, called by a module as a model's layers are.

Round trips (:mod:`.roundtrip`) and fresh-process checks (:mod:`.fresh_process`) compile it and compare what
the op received with the names the caller passed: an expected value the implementation cannot influence.
"""

# No ``from __future__ import annotations``: torch.library reads the annotations as real types.

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..core.implementation import Implementation
from ..core.modes import Mode
from ..harness.custom_ops import define_op

_received: list[Any] = []


@contextlib.contextmanager
def recording() -> Iterator[list[Any]]:
    """What the probe op received inside the block (resolved names, or a description of what failed to resolve)."""
    _received.clear()
    try:
        yield _received
    finally:
        _received.clear()


_PROBES: dict[tuple[str, Mode], Any] = {}


def probe_op(impl: Implementation, mode: Mode, layer_name_type: type | None = None) -> Any:
    """``<namespace>_rt::echo[_str]``: records what it receives (resolved) and returns ``x + 1``.

    ``layer_name_type`` defaults to what the harness allows for ``mode`` (:meth:`Implementation.layer_name_type`);
    pass ``impl.LayerName`` to declare the op exactly as an engine does, whatever torch then says.
    """
    key = (impl.namespace, mode)
    if key not in _PROBES:
        if layer_name_type is None:
            layer_name_type = impl.layer_name_type(mode, "run the opaque round trip")
        qualname = f"{impl.namespace}_rt::echo" + ("" if mode == "opaque" else "_str")
        resolve = impl.resolve

        def echo(x: torch.Tensor, layer_name: object) -> torch.Tensor:
            try:
                _received.append(resolve(layer_name))
            except Exception as error:  # e.g. None after a broken cache load: record, let the check report it
                _received.append(f"<{type(layer_name).__name__} {layer_name!r}: {error}>")
            return x + 1

        fake = lambda x, layer_name: torch.empty_like(x)  # noqa: E731
        _PROBES[key] = define_op(qualname, echo, fake=fake, layer_name_type=layer_name_type)
    return _PROBES[key]


class Probe(nn.Module):
    """Calls the probe op once per name, encoding each name inside ``forward`` like a model layer."""

    def __init__(self, impl: Implementation, mode: Mode, names: Sequence[str]) -> None:
        super().__init__()
        self.impl, self.mode, self.names = impl, mode, list(names)
        self.op = probe_op(impl, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = self.op(x, self.impl.encode(name))
        return x
