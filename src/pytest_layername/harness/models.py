"""Reference models of identical layers that call the layer-name ops: decoder, MoE decoder, hybrid."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.forward_context import forward_context
from ..core.implementation import Implementation
from ..core.modes import Mode
from .ops import OpSet, get_ops


class ModelError(ValueError):
    """An unknown model name or bad model arguments."""


class Attention(nn.Module):
    """QKV projection, KV-cache update and attention through the layer-name ops."""

    def __init__(self, prefix: str, impl: Implementation, mode: Mode, ops: OpSet, hidden: int, heads: int, tokens: int):
        super().__init__()
        self.prefix, self.impl, self.mode, self.ops = prefix, impl, mode, ops
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.o_proj = nn.Linear(hidden, hidden)
        self.register_buffer("kv_cache", torch.zeros(2, tokens, heads, self.head_dim))
        self.scale = self.head_dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer_name = self.impl.encode(self.prefix)
        q, k, v = self.qkv(x).view(x.shape[0], 3, self.heads, self.head_dim).unbind(1)
        dep = self.ops.kv_cache_update(k, v, layer_name)
        out = torch.empty_like(q)
        self.ops.attention_with_output(q, k, v, out, layer_name, dep)
        return self.o_proj(out.reshape(x.shape))


class Experts(nn.Module):
    """Expert weights an MoE op finds by layer name."""

    def __init__(self, prefix: str, impl: Implementation, mode: Mode, ops: OpSet, hidden: int, experts: int):
        super().__init__()
        self.prefix, self.impl, self.mode, self.ops = prefix, impl, mode, ops
        self.top_k = 2
        self.router = nn.Linear(hidden, experts, bias=False)
        self.w_up = nn.Parameter(torch.randn(experts, hidden, 2 * hidden) * hidden**-0.5)
        self.w_down = nn.Parameter(torch.randn(experts, 2 * hidden, hidden) * (2 * hidden) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.moe_forward(x, self.router(x), self.impl.encode(self.prefix))


class Mamba(nn.Module):
    """A linear state-space mixer whose parameters the op finds by layer name."""

    def __init__(self, prefix: str, impl: Implementation, mode: Mode, ops: OpSet, hidden: int):
        super().__init__()
        self.prefix, self.impl, self.mode, self.ops = prefix, impl, mode, ops
        self.in_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.decay = nn.Parameter(torch.rand(hidden) * 0.5 + 0.25)
        self.readout = nn.Parameter(torch.randn(hidden))
        self.register_buffer("initial_state", torch.zeros(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        self.ops.mamba_mixer(self.in_proj(x), out, self.impl.encode(self.prefix))
        return self.out_proj(out)


class MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.up = nn.Linear(hidden, 2 * hidden)
        self.down = nn.Linear(2 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block: mixer (attention or mamba) then a feed-forward (MLP or experts)."""

    def __init__(self, mixer: nn.Module, ffn: nn.Module, hidden: int):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(hidden), mixer
        self.norm2, self.ffn = nn.LayerNorm(hidden), ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class ReferenceModel(nn.Module):
    """N blocks over ``[tokens, hidden]`` inputs; ``context()`` sets the mode and exposes the layers by name."""

    def __init__(self, kind: str, blocks: list[Block], hidden: int, tokens: int, impl: Implementation, mode: Mode):
        super().__init__()
        self.kind, self.hidden, self.tokens = kind, hidden, tokens
        self.impl, self.mode = impl, mode
        self.layers = nn.ModuleList(blocks)
        self.final_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)

    def named_layers(self) -> dict[str, nn.Module]:
        """Layer name -> module holding that layer's state, for the forward context."""
        return {m.prefix: m for m in self.modules() if isinstance(m, Attention | Experts | Mamba)}

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The implementation's encoder in this model's mode, and the layers visible to the ops."""
        with self.impl.use_mode(self.mode), forward_context(self.named_layers()):
            yield

    def example_input(self, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.tokens, self.hidden, generator=generator)
        return x.to(next(self.parameters()).device)


def _decoder_block(i: int, impl, mode, ops, hidden, heads, tokens) -> Block:
    attn = Attention(f"model.layers.{i}.self_attn", impl, mode, ops, hidden, heads, tokens)
    return Block(attn, MLP(hidden), hidden)


def _moe_block(i: int, impl, mode, ops, hidden, heads, tokens) -> Block:
    attn = Attention(f"model.layers.{i}.self_attn", impl, mode, ops, hidden, heads, tokens)
    return Block(attn, Experts(f"model.layers.{i}.mlp.experts", impl, mode, ops, hidden, experts=4), hidden)


def _hybrid_block(i: int, impl, mode, ops, hidden, heads, tokens) -> Block:
    if i % 2 == 0:
        return _decoder_block(i, impl, mode, ops, hidden, heads, tokens)
    return Block(Mamba(f"model.layers.{i}.mixer", impl, mode, ops, hidden), MLP(hidden), hidden)


BLOCKS: dict[str, Callable[..., Block]] = {"decoder": _decoder_block, "moe": _moe_block, "hybrid": _hybrid_block}
MODEL_NAMES = tuple(BLOCKS)


def build_model(
    kind: str,
    layers: int,
    impl: Implementation,
    mode: Mode,
    *,
    hidden: int = 32,
    heads: int = 2,
    tokens: int = 8,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ReferenceModel:
    """A deterministic reference model of ``layers`` identical blocks calling ``impl``'s ops in ``mode``."""
    if kind not in BLOCKS:
        raise ModelError(f"unknown model {kind!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if layers < 1:
        raise ModelError(f"a model needs at least one layer, got {layers}")
    ops = get_ops(impl, mode)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks = [BLOCKS[kind](i, impl, mode, ops, hidden, heads, tokens) for i in range(layers)]
        model = ReferenceModel(kind, blocks, hidden, tokens, impl, mode)
    return model.to(device).eval()


def run(model: ReferenceModel, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` (the model or its compiled form) inside the model's forward context."""
    with model.context(), torch.no_grad():
        return fn(*args)
