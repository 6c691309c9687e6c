"""What each reference op computes with one layer's state, apart from how the op found that layer.

The op bodies (:mod:`.ops`, :mod:`..fusion.quant_ops`) resolve the layer name through the implementation
under test and then call these functions; the ground truth (:mod:`.ground_truth`) calls the same functions
with state it looked up by the plain name in its own table. A layer is anything with the attributes a
function reads (a model's module, or the ground truth's snapshot of it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def write_kv_cache(layer: Any, key: torch.Tensor, value: torch.Tensor) -> None:
    """Store this step's keys and values in the layer's cache, after the tokens it already holds (``history``)."""
    start, tokens = layer.history, key.shape[0]
    layer.kv_cache[0, start : start + tokens].copy_(key)
    layer.kv_cache[1, start : start + tokens].copy_(value)


def attend(layer: Any, query: torch.Tensor) -> torch.Tensor:
    """Attention of ``query`` [tokens, heads, head_dim] over the layer's cache: its history and this step, causally.

    Each layer has its own history and scale, so reading another layer's cache or scale changes the result.
    """
    tokens = query.shape[0]
    length = layer.history + tokens
    keys, values = layer.kv_cache[0, :length], layer.kv_cache[1, :length]
    visible = torch.ones(tokens, length, dtype=torch.bool, device=query.device).tril(diagonal=layer.history)
    attended = F.scaled_dot_product_attention(
        query.transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1), attn_mask=visible, scale=layer.scale
    )
    return attended.transpose(0, 1)


def mix_experts(experts: Any, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
    """Top-k routing over the layer's own expert weights."""
    weights, chosen = torch.topk(router_logits.softmax(dim=-1), experts.top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(hidden_states)
    for expert in range(experts.w_up.shape[0]):
        gate = ((chosen == expert) * weights).sum(dim=-1, keepdim=True)
        out += gate * (F.silu(hidden_states @ experts.w_up[expert]) @ experts.w_down[expert])
    return out


def scan_state(ssm: Any, projected_states: torch.Tensor, output: torch.Tensor) -> None:
    """A linear state-space scan from the layer's initial state; the final state is kept in ``ssm.state``."""
    state = ssm.initial_state.clone()
    for t in range(projected_states.shape[0]):
        state = ssm.decay * state + projected_states[t]
        output[t].copy_(state * ssm.readout)
    ssm.state.copy_(state)
