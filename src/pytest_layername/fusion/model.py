"""Decoder models whose attention may quantize its output (static per-tensor) and rotate q/k before the KV update.

A block is the reference decoder block with :class:`FusionAttention` as its mixer: QKV projection,
optional rotary embedding (``rotary_embedding``), ``kv_cache_update``, ``attention_with_output``, then
optionally ``static_scaled_quant`` -> dequantize -> ``o_proj`` (a quantized o_proj input, as in fp8/int8
serving). Which layers quantize and which rotate is chosen per layer, so a model can mix layers a
fusion pass must fuse with layers it must leave alone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch

from ..core.implementation import Implementation
from ..core.modes import Mode
from ..harness.models import MLP, Attention, Block, ModelError, ReferenceModel, finish_model
from .quant_ops import QUANT_MAX, FusionOpSet, check_quant_dtype, dequantize, get_fusion_ops

#: Per-layer choice: a collection of layer indices, a predicate on the index, or None for every layer.
LayerSelection = Collection[int] | Callable[[int], bool] | None


def _selected(selection: LayerSelection, index: int) -> bool:
    if selection is None:
        return True
    if callable(selection):
        return bool(selection(index))
    return index in selection


class FusionAttention(Attention):
    """Reference attention with optional rotary embedding and static per-tensor quantization of its output."""

    def __init__(
        self,
        prefix: str,
        impl: Implementation,
        fusion_ops: FusionOpSet,
        hidden: int,
        heads: int,
        tokens: int,
        quant_dtype: torch.dtype | None,
        rope: bool,
        quant_range: float,
    ):
        super().__init__(prefix, impl, fusion_ops.base, hidden, heads, tokens)
        self.fusion_ops = fusion_ops
        self.quant_dtype = check_quant_dtype(quant_dtype) if quant_dtype is not None else None
        self.rope = rope
        if quant_dtype is not None:
            self.register_buffer("quant_scale", torch.tensor(quant_range / QUANT_MAX[quant_dtype]))
        if rope:
            half = self.head_dim // 2
            inv_freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32) / half))
            angles = torch.arange(tokens, dtype=torch.float32)[:, None] * inv_freq[None, :]
            self.register_buffer("rope_cos", angles.cos())
            self.register_buffer("rope_sin", angles.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer_name = self.encode(self.prefix)
        q, k, v = self.qkv(x).view(x.shape[0], 3, self.heads, self.head_dim).unbind(1)
        if self.rope:
            q, k = self.fusion_ops.rotary_embedding(q, k, self.rope_cos, self.rope_sin)
        dep = self.ops.kv_cache_update(k, v, layer_name)
        out = torch.empty_like(q)
        self.ops.attention_with_output(q, k, v, out, layer_name, dep)
        if self.quant_dtype is not None:
            quantized = self.fusion_ops.static_scaled_quant(out, self.quant_scale, self.quant_dtype)
            out = dequantize(quantized, self.quant_scale, x.dtype)
        return self.o_proj(out.reshape(x.shape))


def build_fusion_model(
    layers: int,
    impl: Implementation,
    mode: Mode,
    *,
    quant_dtype: torch.dtype | Sequence[torch.dtype | None] | None = torch.float8_e4m3fn,
    rope_layers: LayerSelection = (),
    quant_range: float = 4.0,
    hidden: int = 32,
    heads: int = 2,
    tokens: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ReferenceModel:
    """A deterministic decoder of ``layers`` blocks; selected layers quantize attention output and/or use rope.

    ``quant_dtype`` is one dtype for every layer, None for none, or a per-layer sequence of dtype/None;
    ``rope_layers`` picks layers by index (None: all, ``()``: none). The static per-tensor scale maps
    ``±quant_range`` onto the dtype's range.
    """
    if layers < 1:
        raise ModelError(f"a model needs at least one layer, got {layers}")
    if quant_range <= 0:
        raise ModelError(f"quant_range must be positive, got {quant_range}")
    if isinstance(quant_dtype, torch.dtype) or quant_dtype is None:
        dtypes = [quant_dtype] * layers
    else:
        dtypes = list(quant_dtype)
        if len(dtypes) != layers:
            raise ModelError(f"quant_dtype lists {len(dtypes)} dtypes for {layers} layers")
    if (hidden // heads) % 2:
        raise ModelError(f"rotary embedding needs an even head_dim, got {hidden // heads}")
    fusion_ops = get_fusion_ops(impl, mode)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks = []
        for i in range(layers):
            attn = FusionAttention(
                f"model.layers.{i}.self_attn",
                impl,
                fusion_ops,
                hidden,
                heads,
                tokens,
                quant_dtype=dtypes[i],
                rope=_selected(rope_layers, i),
                quant_range=quant_range,
            )
            blocks.append(Block(attn, MLP(hidden), hidden))
        model = ReferenceModel("fusion", blocks, hidden, tokens, impl, mode)
    return finish_model(model, device)


def attention_layer_names(model: torch.nn.Module) -> list[str]:
    """Layer names of every attention module in ``model``, in module order."""
    return [m.prefix for m in model.modules() if isinstance(m, Attention)]


def quantized_layer_names(model: torch.nn.Module, dtype: torch.dtype | None = None) -> list[str]:
    """Layer names of attention modules that quantize their output (to ``dtype`` when given)."""
    return [
        m.prefix
        for m in model.modules()
        if isinstance(m, FusionAttention) and m.quant_dtype is not None and dtype in (None, m.quant_dtype)
    ]


def rope_layer_names(model: torch.nn.Module) -> list[str]:
    """Layer names of attention modules that apply the rotary embedding."""
    return [m.prefix for m in model.modules() if isinstance(m, FusionAttention) and m.rope]
