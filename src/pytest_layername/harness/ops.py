"""Reference custom ops taking a layer name, in an opaque (``LayerName``) and a string (``str``) variant.

Every op body resolves the name with the implementation's ``_resolve_layer_name`` and looks up the
layer's state (KV cache, expert weights, SSM parameters) in the forward context. Fake implementations
are pure functions of their inputs. Schemas are built from annotations at registration time, so the
same op bodies serve the bundled reference and any other implementation's ``LayerName``.
"""

# No ``from __future__ import annotations``: torch.library reads the annotations as real types.

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.forward_context import layer_state
from ..core.implementation import Implementation
from ..core.modes import Mode
from .custom_ops import define_op, qualified_name

STRING_SUFFIX = "_str"


@dataclass(frozen=True)
class OpSet:
    """The four reference ops for one implementation and mode."""

    namespace: str
    mode: Mode
    kv_cache_update: torch._ops.OpOverloadPacket
    attention_with_output: torch._ops.OpOverloadPacket
    moe_forward: torch._ops.OpOverloadPacket
    mamba_mixer: torch._ops.OpOverloadPacket

    @property
    def splitting_ops(self) -> tuple[str, ...]:
        """Qualified names of the ops a piecewise backend splits at (attention and mamba)."""
        return (qualified_name(self.attention_with_output), qualified_name(self.mamba_mixer))


def _ops_for(impl: Implementation, mode: Mode) -> OpSet:
    resolve = impl.resolve
    layer_name_type = impl.layer_name_type(mode, "register opaque ops")
    suffix = "" if mode == "opaque" else STRING_SUFFIX
    ns = impl.namespace

    def kv_cache_update(key: torch.Tensor, value: torch.Tensor, layer_name: object) -> torch.Tensor:
        cache = layer_state(resolve(layer_name)).kv_cache
        tokens = key.shape[0]
        cache[0, :tokens].copy_(key)
        cache[1, :tokens].copy_(value)
        return key.new_empty((0,))

    def kv_cache_update_fake(key, value, layer_name):
        return key.new_empty((0,))

    def attention_with_output(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        output: torch.Tensor,
        layer_name: object,
        kv_cache_dummy_dep: torch.Tensor,
    ) -> None:
        layer = layer_state(resolve(layer_name))
        tokens = query.shape[0]
        cached_k, cached_v = layer.kv_cache[0, :tokens], layer.kv_cache[1, :tokens]
        attended = F.scaled_dot_product_attention(
            query.transpose(0, 1), cached_k.transpose(0, 1), cached_v.transpose(0, 1), is_causal=True, scale=layer.scale
        )
        output.copy_(attended.transpose(0, 1))

    def attention_with_output_fake(query, key, value, output, layer_name, kv_cache_dummy_dep):
        return None

    def moe_forward(hidden_states: torch.Tensor, router_logits: torch.Tensor, layer_name: object) -> torch.Tensor:
        experts = layer_state(resolve(layer_name))
        weights, chosen = torch.topk(router_logits.softmax(dim=-1), experts.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(hidden_states)
        for expert in range(experts.w_up.shape[0]):
            routed = (chosen == expert) * weights
            gate = routed.sum(dim=-1, keepdim=True)
            expert_out = F.silu(hidden_states @ experts.w_up[expert]) @ experts.w_down[expert]
            out += gate * expert_out
        return out

    def moe_forward_fake(hidden_states, router_logits, layer_name):
        return torch.empty_like(hidden_states)

    def mamba_mixer(projected_states: torch.Tensor, output: torch.Tensor, layer_name: object) -> None:
        ssm = layer_state(resolve(layer_name))
        state = ssm.initial_state.clone()
        for t in range(projected_states.shape[0]):
            state = ssm.decay * state + projected_states[t]
            output[t].copy_(state * ssm.readout)

    def mamba_mixer_fake(projected_states, output, layer_name):
        return None

    def define(name: str, body, fake, mutates_args: tuple[str, ...] = ()) -> torch._ops.OpOverloadPacket:
        return define_op(
            f"{ns}::{name}{suffix}", body, fake=fake, mutates_args=mutates_args, layer_name_type=layer_name_type
        )

    return OpSet(
        namespace=ns,
        mode=mode,
        kv_cache_update=define("kv_cache_update", kv_cache_update, kv_cache_update_fake),
        attention_with_output=define(
            "attention_with_output", attention_with_output, attention_with_output_fake, ("output",)
        ),
        moe_forward=define("moe_forward", moe_forward, moe_forward_fake),
        mamba_mixer=define("mamba_mixer", mamba_mixer, mamba_mixer_fake, ("output",)),
    )


_REGISTERED: dict[tuple[str, Mode], OpSet] = {}


def get_ops(impl: Implementation, mode: Mode) -> OpSet:
    """The reference ops for ``impl`` in ``mode``, registered on first use (once per process)."""
    key = (impl.namespace, mode)
    if key not in _REGISTERED:
        _REGISTERED[key] = _ops_for(impl, mode)
    return _REGISTERED[key]
