"""A deliberately broken op: it still takes ``layer_name: str`` in a model whose other ops are opaque.

Used to show that the harness catches the regression it exists for: the baked string makes every
layer's piece unique, so ``compile_counter.expect(unique_pieces=...)`` and the gate's budgets fail.
"""

from __future__ import annotations

import torch
from torch import nn

from ..harness.custom_ops import define_op
from ..harness.models import ReferenceModel

NAMESPACE = "layername_broken"
OP_NAME = f"{NAMESPACE}::scale_by_layer"


def _scale_by_layer(x: torch.Tensor, layer_name: str) -> torch.Tensor:
    """Identity on ``x``; the point is its ``layer_name: str`` argument."""
    return x * 1.0


def _scale_by_layer_fake(x: torch.Tensor, layer_name: str) -> torch.Tensor:
    return torch.empty_like(x)


scale_by_layer = define_op(OP_NAME, _scale_by_layer, fake=_scale_by_layer_fake)


class StringTakingFFN(nn.Module):
    """Wraps a block's feed-forward and calls the broken op with the layer's name as a plain string."""

    def __init__(self, ffn: nn.Module, prefix: str) -> None:
        super().__init__()
        self.ffn, self.prefix = ffn, prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.layername_broken.scale_by_layer(self.ffn(x), self.prefix)


def break_model(model: ReferenceModel) -> ReferenceModel:
    """Route every layer's feed-forward through the str-taking op (in place); returns ``model``."""
    for index, block in enumerate(model.layers):
        block.ffn = StringTakingFFN(block.ffn, f"model.layers.{index}.mlp")
    return model
