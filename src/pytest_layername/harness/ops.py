"""Reference custom ops taking a layer name, in an opaque (``LayerName``) and a string (``str``) variant.

Every op body resolves the name with the implementation's ``_resolve_layer_name``, looks up the layer's
state (KV cache, expert weights, SSM parameters) in the forward context and computes with it
(:mod:`.layer_math`). Fake implementations are pure functions of their inputs. Schemas are built from
annotations at registration time, so the same op bodies serve the bundled reference and any other
implementation's ``LayerName``.
"""

# No ``from __future__ import annotations``: torch.library reads the annotations as real types.

from dataclasses import dataclass

import torch

from ..core.forward_context import layer_state
from ..core.implementation import Implementation
from ..core.modes import Mode
from .custom_ops import define_op, qualified_name
from .layer_math import attend, mix_experts, scan_state, write_kv_cache

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
        write_kv_cache(layer_state(resolve(layer_name)), key, value)
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
        output.copy_(attend(layer_state(resolve(layer_name)), query))

    def attention_with_output_fake(query, key, value, output, layer_name, kv_cache_dummy_dep):
        return None

    def moe_forward(hidden_states: torch.Tensor, router_logits: torch.Tensor, layer_name: object) -> torch.Tensor:
        return mix_experts(layer_state(resolve(layer_name)), hidden_states, router_logits)

    def moe_forward_fake(hidden_states, router_logits, layer_name):
        return torch.empty_like(hidden_states)

    def mamba_mixer(projected_states: torch.Tensor, output: torch.Tensor, layer_name: object) -> None:
        scan_state(layer_state(resolve(layer_name)), projected_states, output)

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
