"""Attention + static per-tensor quantization -> one fused attention writing quantized output.

Post-grad, the mutating ``attention_with_output`` is ``auto_functionalized(attention_with_output, ...)``
whose ``output`` result feeds ``static_scaled_quant(output, scale, dtype)``. The replacement allocates
a tensor of the quantized dtype and calls ``auto_functionalized(attention_with_quant_output, ...,
scale=scale)``. Supported: ``float8_e4m3fn`` and ``int8``; a quant to another dtype, a non-scalar
(not per-tensor) scale, or an attention with no quant after it is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch._higher_order_ops.auto_functionalize import auto_functionalized
from torch._inductor.pattern_matcher import Match

from ..core.implementation import Implementation
from ..core.modes import Mode
from .passes import LayerNameFusionPass, PatternSpec, example_tensors, wildcard_layer_name
from .quant_ops import FUSED_QUANT_DTYPES, check_quant_dtype


class AttnQuantFusionPass(LayerNameFusionPass):
    """Fuse ``attention_with_output`` + ``static_scaled_quant`` to ``quant_dtype`` into the fused attention."""

    name = "attn_quant_fusion"
    fused_role = "attention_with_quant_output"
    removed_role = "static_scaled_quant"

    def __init__(
        self,
        impl: Implementation,
        mode: Mode,
        quant_dtype: torch.dtype = torch.float8_e4m3fn,
        layer_names: Sequence[str] | None = None,
    ) -> None:
        self.quant_dtype = check_quant_dtype(quant_dtype, FUSED_QUANT_DTYPES)
        super().__init__(impl, mode, layer_names)

    def config_key(self) -> tuple[Any, ...]:
        return (self.quant_dtype,)

    def accepts(self, match: Match) -> bool:
        """Only quantization to the pass's dtype with a single (per-tensor) scale."""
        quantized = match.output_node().meta.get("val")
        scale = getattr(match.kwargs["scale"], "meta", {}).get("val")
        return (
            isinstance(quantized, torch.Tensor)
            and quantized.dtype == self.quant_dtype
            and isinstance(scale, torch.Tensor)
            and scale.numel() == 1
        )

    def pattern(self, layer_name: str | None) -> PatternSpec:
        attention = self.ops.base.attention_with_output.default
        quant = self.ops.static_scaled_quant.default
        fused = self.ops.attention_with_quant_output.default
        dtype = self.quant_dtype

        def search(query, key, value, output, layer_name, kv_cache_dummy_dep, scale):
            attended = auto_functionalized(
                attention,
                query=query,
                key=key,
                value=value,
                output=output,
                layer_name=layer_name,
                kv_cache_dummy_dep=kv_cache_dummy_dep,
            )
            return quant(attended[1], scale, dtype)

        def replace(query, key, value, output, layer_name, kv_cache_dummy_dep, scale):
            quantized = torch.empty(output.shape, dtype=dtype, device=output.device)
            attended = auto_functionalized(
                fused,
                query=query,
                key=key,
                value=value,
                output=quantized,
                layer_name=layer_name,
                kv_cache_dummy_dep=kv_cache_dummy_dep,
                scale=scale,
            )
            return attended[1]

        tensors = example_tensors((8, 2, 16), (8, 2, 16), (8, 2, 16), (8, 2, 16))
        dep, scale = torch.empty(0), torch.empty(())
        if layer_name is None:  # opaque: layer_name is a pattern input, traced with a real LayerName
            wildcard = wildcard_layer_name(self.impl)
            return PatternSpec(search, replace, [*tensors, wildcard, dep, scale])

        def search_named(query, key, value, output, kv_cache_dummy_dep, scale):
            return search(query, key, value, output, layer_name, kv_cache_dummy_dep, scale)

        def replace_named(query, key, value, output, kv_cache_dummy_dep, scale):
            return replace(query, key, value, output, layer_name, kv_cache_dummy_dep, scale)

        return PatternSpec(search_named, replace_named, [*tensors, dep, scale])
