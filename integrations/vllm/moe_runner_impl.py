"""vLLM's second implementation of the layer-name contract, its MoE runner's, as an implementation module.

``vllm/model_executor/layers/fused_moe/runner/moe_runner.py`` keeps its own copy of the contract: a
module-level ``_resolve_layer_name`` (``@torch.compiler.assume_constant_result``; unwraps a
``FakeScriptObject`` too) and ``_encode_layer_name`` as a *method* of ``MoERunner`` that reads only
``self.layer_name`` and the runner module's ``_USE_LAYERNAME`` (imported by value from
``vllm.utils.torch_utils``, read at call time). This adapter gives the suite what ``--layername-impl``
expects: ``LayerName`` (vLLM's), ``_encode_layer_name(name)`` (the runner's method on a stand-in runner),
the runner's ``_resolve_layer_name``, and a bool ``_USE_LAYERNAME`` that the encoder copies into the runner
module before each call. ``pytest --pyargs pytest_layername.suite --layername-impl=moe_runner_impl`` with
this folder on ``PYTHONPATH`` (``nox -s vllm`` does).

Not exercised here: the runner's string-mode sentinel. With a vLLM forward context whose ``all_moe_layers``
is set (``fast_moe_cold_start``), the runner passes ``"from_forward_context"`` and ``get_layer_from_name``
finds the layer by call order; outside the engine there is no such context and the runner passes the name.
The engine stage covers it: ``test_mixtral_string_mode_by_call_order`` against transformers, and the
``moe-call-order`` negative control (the first two MoE layers swapped in the call order) fails that comparison.
"""

from __future__ import annotations

from typing import Any

import vllm.model_executor.layers.fused_moe.runner.moe_runner as _runner
from vllm.utils.torch_utils import LayerName

__all__ = ["_USE_LAYERNAME", "LayerName", "_encode_layer_name", "_resolve_layer_name"]

#: The mode switch (True: encode to LayerName); copied into the runner module by each encode.
_USE_LAYERNAME: bool = bool(_runner._USE_LAYERNAME)
_resolve_layer_name = _runner._resolve_layer_name


class _Runner:
    """What ``MoERunner._encode_layer_name`` reads of its runner: the layer's name."""

    __slots__ = ("layer_name",)

    def __init__(self, layer_name: str) -> None:
        self.layer_name = layer_name


def _encode_layer_name(layer_name: str) -> Any:
    """The MoE runner's own encoder, in the mode this module's switch says."""
    _runner._USE_LAYERNAME = _USE_LAYERNAME
    return _runner.MoERunner._encode_layer_name(_Runner(layer_name))
