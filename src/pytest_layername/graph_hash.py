"""Structural hashing of FX graph pieces, and the string constants baked into them.

Two pieces hash equal when they run the same ops on the same kinds of inputs: node and placeholder
names are replaced by positions, tensor inputs are described by dtype/shape/stride/device, opaque
inputs by their type. Constants are part of the hash, so a piece with a baked layer-name string is
unique; hashing again with strings masked tells whether strings alone made it unique.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx


@dataclass(frozen=True)
class BakedString:
    """A string constant passed to an op inside a graph."""

    op: str
    argument: str
    value: str

    def __str__(self) -> str:
        return f"{self.op}({self.argument}={self.value!r})"


def target_name(target: Any) -> str:
    """``ns::op`` for torch ops (packet or overload), the qualified name for other callables."""
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name
    if isinstance(target, str):
        return target
    try:
        return fx.node._get_qualified_name(target)
    except Exception:  # builtins without a module path
        return repr(target)


def _argument_names(target: Any) -> list[str]:
    schema = None
    if isinstance(target, torch._ops.OpOverloadPacket):
        overloads = target.overloads()
        schema = getattr(target, overloads[0])._schema if overloads else None
    elif isinstance(target, torch._ops.OpOverload):
        schema = target._schema
    return [a.name for a in schema.arguments] if schema is not None else []


def describe_value(value: Any) -> str:
    """A name-free description of a runtime value (what a compiled artifact depends on)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor({value.dtype},{tuple(value.shape)},{tuple(value.stride())},{value.device.type})"
    if isinstance(value, (int, float, bool, str, type(None), torch.dtype, torch.device)):
        return f"{type(value).__name__}:{value!r}"
    return f"object:{type(value).__module__}.{type(value).__qualname__}"


class _Renderer:
    def __init__(self, mask_strings: bool) -> None:
        self.mask_strings = mask_strings
        self.index: dict[fx.Node, int] = {}
        self.baked: list[BakedString] = []

    def arg(self, value: Any, op: str, argument: str) -> str:
        if isinstance(value, fx.Node):
            return f"%{self.index[value]}"
        if isinstance(value, (list, tuple)):
            inner = ",".join(self.arg(v, op, argument) for v in value)
            return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
        if isinstance(value, dict):
            return "{" + ",".join(f"{k}:{self.arg(v, op, f'{argument}.{k}')}" for k, v in value.items()) + "}"
        if isinstance(value, slice):
            return f"slice{self.arg((value.start, value.stop, value.step), op, argument)}"
        if isinstance(value, str):
            self.baked.append(BakedString(op, argument, value))
            return "str:<masked>" if self.mask_strings else f"str:{value!r}"
        return describe_value(value)

    def node(self, node: fx.Node, example: Any) -> str:
        self.index[node] = len(self.index)
        if node.op == "placeholder":
            return f"placeholder {describe_value(example)}"
        op = target_name(node.target)
        names = _argument_names(node.target)
        args = [self.arg(a, op, names[i] if i < len(names) else f"arg{i}") for i, a in enumerate(node.args)]
        kwargs = [f"{k}={self.arg(v, op, k)}" for k, v in node.kwargs.items()]
        return f"{node.op} {op if node.op != 'output' else ''}({', '.join(args + kwargs)})"


def _render(gm: fx.GraphModule, example_inputs: Sequence[Any], mask_strings: bool) -> tuple[str, list[BakedString]]:
    renderer = _Renderer(mask_strings)
    examples = iter(example_inputs)
    lines = []
    for node in gm.graph.nodes:
        example = next(examples, None) if node.op == "placeholder" else None
        if example is None and node.op == "placeholder":
            example = node.meta.get("example_value", node.meta.get("val"))
        lines.append(renderer.node(node, example))
    return "\n".join(lines), renderer.baked


@dataclass(frozen=True)
class GraphSignature:
    """Structural digests of a graph piece, and the strings baked into it."""

    digest: str
    masked_digest: str  # the same with every string constant masked
    baked_strings: tuple[BakedString, ...]


def graph_signature(gm: fx.GraphModule, example_inputs: Sequence[Any] = ()) -> GraphSignature:
    """Hash ``gm`` structurally; ``example_inputs`` describe its placeholders when given."""
    text, baked = _render(gm, example_inputs, mask_strings=False)
    masked, _ = _render(gm, example_inputs, mask_strings=True)
    return GraphSignature(
        hashlib.sha256(text.encode()).hexdigest()[:16],
        hashlib.sha256(masked.encode()).hexdigest()[:16],
        tuple(baked),
    )


def baked_strings(gm: fx.GraphModule) -> list[BakedString]:
    """Every string constant passed to a call in ``gm``."""
    return list(graph_signature(gm).baked_strings)
