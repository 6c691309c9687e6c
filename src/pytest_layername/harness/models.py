"""Reference models of identical layers that call the layer-name ops: decoder, MoE decoder, hybrid.

Layers are identical in structure (so their compiled pieces can be shared) but each holds its own state,
found by layer name inside the ops: a KV cache with its own history and scale, expert weights, SSM
parameters and state. The model keeps a copy of that state keyed by plain name for the ground truth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.forward_context import forward_context
from ..core.implementation import Implementation
from ..core.modes import Mode
from .ops import OpSet, get_ops


class ModelError(ValueError):
    """An unknown model name or bad model arguments."""


#: Tokens each attention layer's KV cache holds before the model runs (its own, different in every layer).
HISTORY = 4


def _state_copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class NamedLayer(nn.Module):
    """A module whose op finds this layer's state by layer name, as an engine's attention, MoE or Mamba layer does.

    ``STATE`` names the attributes the op reads or writes through the name; every layer draws its own values,
    so an op that reaches another layer's state computes something else. ``WRITTEN`` is the part the op writes.
    """

    STATE: ClassVar[tuple[str, ...]] = ()
    WRITTEN: ClassVar[tuple[str, ...]] = ()

    def __init__(self, prefix: str, impl: Implementation, ops: OpSet) -> None:
        super().__init__()
        self.prefix, self.ops = prefix, ops
        self.encode: Callable[[str], Any] = impl.encode  # the implementation's own _encode_layer_name

    def state_snapshot(self) -> SimpleNamespace:
        """A detached copy of this layer's ``STATE``."""
        return SimpleNamespace(**{name: _state_copy(getattr(self, name)) for name in self.STATE})

    def clear_written_state(self) -> None:
        """Forget what earlier runs wrote (a run then shows exactly which layers its ops wrote to)."""


class Attention(NamedLayer):
    """QKV projection, KV-cache update and attention through the layer-name ops, over this layer's own cache."""

    STATE = ("kv_cache", "history", "scale")
    WRITTEN = ("kv_cache",)

    def __init__(self, prefix: str, impl: Implementation, ops: OpSet, hidden: int, heads: int, tokens: int):
        super().__init__(prefix, impl, ops)
        self.heads, self.head_dim, self.history = heads, hidden // heads, HISTORY
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.o_proj = nn.Linear(hidden, hidden)
        cache = torch.zeros(2, HISTORY + tokens, heads, self.head_dim)
        cache[:, :HISTORY] = torch.randn(2, HISTORY, heads, self.head_dim)  # earlier tokens, this layer's own
        self.register_buffer("kv_cache", cache)
        self.scale = self.head_dim**-0.5 * (0.5 + torch.rand(()).item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer_name = self.encode(self.prefix)
        q, k, v = self.qkv(x).view(x.shape[0], 3, self.heads, self.head_dim).unbind(1)
        dep = self.ops.kv_cache_update(k, v, layer_name)
        out = torch.empty_like(q)
        self.ops.attention_with_output(q, k, v, out, layer_name, dep)
        return self.o_proj(out.reshape(x.shape))

    def clear_written_state(self) -> None:
        self.kv_cache[:, self.history :].zero_()


class Experts(NamedLayer):
    """Expert weights an MoE op finds by layer name."""

    STATE = ("w_up", "w_down", "top_k")

    def __init__(self, prefix: str, impl: Implementation, ops: OpSet, hidden: int, experts: int):
        super().__init__(prefix, impl, ops)
        self.top_k = 2
        self.router = nn.Linear(hidden, experts, bias=False)
        self.w_up = nn.Parameter(torch.randn(experts, hidden, 2 * hidden) * hidden**-0.5)
        self.w_down = nn.Parameter(torch.randn(experts, 2 * hidden, hidden) * (2 * hidden) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.moe_forward(x, self.router(x), self.encode(self.prefix))


class Mamba(NamedLayer):
    """A linear state-space mixer whose parameters and state the op finds by layer name."""

    STATE = ("decay", "readout", "initial_state", "state")
    WRITTEN = ("state",)

    def __init__(self, prefix: str, impl: Implementation, ops: OpSet, hidden: int):
        super().__init__(prefix, impl, ops)
        self.in_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.decay = nn.Parameter(torch.rand(hidden) * 0.5 + 0.25)
        self.readout = nn.Parameter(torch.randn(hidden))
        self.register_buffer("initial_state", torch.randn(hidden))
        self.register_buffer("state", torch.zeros(hidden))  # the final state, kept for the next step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        self.ops.mamba_mixer(self.in_proj(x), out, self.encode(self.prefix))
        return self.out_proj(out)

    def clear_written_state(self) -> None:
        self.state.zero_()


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
        self.ground_truth_state: dict[str, SimpleNamespace] = {}  # filled by freeze_ground_truth()
        self.final_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)

    def named_layers(self) -> dict[str, NamedLayer]:
        """Layer name -> module holding that layer's state, for the forward context."""
        return {m.prefix: m for m in self.modules() if isinstance(m, NamedLayer)}

    def freeze_ground_truth(self) -> None:
        """Copy every layer's state, keyed by its plain name, into :attr:`ground_truth_state` (see ``ground_truth``).

        Called once the model is built and on its device; the implementation under test never sees the copy.
        """
        self.ground_truth_state = {name: layer.state_snapshot() for name, layer in self.named_layers().items()}

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The implementation's encoder in this model's mode, and the layers visible to the ops."""
        with self.impl.use_mode(self.mode), forward_context(self.named_layers()):
            yield

    def example_input(self, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.tokens, self.hidden, generator=generator)
        return x.to(next(self.parameters()).device)


def _decoder_block(i: int, impl, ops, hidden, heads, tokens) -> Block:
    attn = Attention(f"model.layers.{i}.self_attn", impl, ops, hidden, heads, tokens)
    return Block(attn, MLP(hidden), hidden)


def _moe_block(i: int, impl, ops, hidden, heads, tokens) -> Block:
    attn = Attention(f"model.layers.{i}.self_attn", impl, ops, hidden, heads, tokens)
    return Block(attn, Experts(f"model.layers.{i}.mlp.experts", impl, ops, hidden, experts=4), hidden)


def _hybrid_block(i: int, impl, ops, hidden, heads, tokens) -> Block:
    if i % 2 == 0:
        return _decoder_block(i, impl, ops, hidden, heads, tokens)
    return Block(Mamba(f"model.layers.{i}.mixer", impl, ops, hidden), MLP(hidden), hidden)


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
        blocks = [BLOCKS[kind](i, impl, ops, hidden, heads, tokens) for i in range(layers)]
        model = ReferenceModel(kind, blocks, hidden, tokens, impl, mode)
    return finish_model(model, device)


def finish_model(model: ReferenceModel, device: str | torch.device) -> ReferenceModel:
    """Move a freshly built model to ``device`` in eval mode and freeze its ground truth there."""
    model = model.to(device).eval()
    model.freeze_ground_truth()
    return model


def run(model: ReferenceModel, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` (the model or its compiled form) inside the model's forward context.

    What earlier runs wrote to the layers' state is cleared first, so the state afterwards is this run's alone.
    """
    with model.context(), torch.no_grad():
        for layer in model.named_layers().values():
            layer.clear_written_state()
        return fn(*args)
