"""Structural hashing of FX graph pieces, and the layer-name constants baked into them.

Two pieces hash equal when they run the same ops on the same kinds of inputs with the same constants:
node and placeholder names are replaced by positions, and graph *inputs* are described by what a
compiled artifact may depend on (tensors by dtype/shape/stride/device, hoisted opaque inputs by type).
Every *constant* is described by its value: strings and numbers by ``repr``, opaque objects by
``__fx_repr__`` (else ``repr``), other objects by ``repr`` when their type defines value equality, and
anything else as unique to that object (never "the same" because of its type). Hashing again with
layer-name constants (strings and opaque objects) masked tells whether those alone made a piece unique.

The hash explains uniqueness and deduplicates pieces for the ``eager``/``aot_eager`` inner compilers;
under inductor, torch's own caches decide reuse and the hash is checked against them (:mod:`.backend`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import fx

from ..core.compat import is_registered_opaque_type

ConstantKind = Literal["str", "opaque"]
_PLAIN_CONSTANTS = (int, float, bool, complex, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


@dataclass(frozen=True)
class BakedConstant:
    """A layer-name-like constant passed to an op inside a graph: a ``str`` or an opaque object."""

    op: str
    argument: str
    value: str  # the string itself, or the opaque object's ``__fx_repr__`` source
    kind: ConstantKind = "str"

    def __str__(self) -> str:
        shown = repr(self.value) if self.kind == "str" else self.value
        return f"{self.op}({self.argument}={shown})"


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
    """A name-free description of a runtime *input* (what a compiled artifact depends on, not its value)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor({value.dtype},{tuple(value.shape)},{tuple(value.stride())},{value.device.type})"
    if isinstance(value, (str, *_PLAIN_CONSTANTS)):
        return f"{type(value).__name__}:{value!r}"
    return f"object:{type(value).__module__}.{type(value).__qualname__}"


def is_opaque_constant(value: Any) -> bool:
    """Whether ``value`` is an object of a type registered with torch as opaque (or one with ``__fx_repr__``)."""
    return is_registered_opaque_type(type(value)) or callable(getattr(type(value), "__fx_repr__", None))


def opaque_source(value: Any) -> str:
    """How torch prints an opaque constant into graph code: ``__fx_repr__``'s source, else ``repr``."""
    fx_repr = getattr(value, "__fx_repr__", None)
    if callable(fx_repr):
        try:
            result = fx_repr()
        except Exception as error:  # a broken __fx_repr__ must not hide the value: fall back to repr
            return f"{value!r} (__fx_repr__ raised {type(error).__name__})"
        return result[0] if isinstance(result, tuple) and result and isinstance(result[0], str) else str(result)
    return repr(value)


def _defines_value_equality(value: Any) -> bool:
    cls = type(value)
    return cls.__eq__ is not object.__eq__ and cls.__repr__ is not object.__repr__


def describe_constant(value: Any) -> str:
    """A constant by its value; an object whose value cannot be described is unique (its identity)."""
    if isinstance(value, torch.Tensor):
        return f"TensorConstant@{id(value):x}:{describe_value(value)}"
    if isinstance(value, (str, *_PLAIN_CONSTANTS)):
        return f"{type(value).__name__}:{value!r}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if is_opaque_constant(value):
        return f"opaque:{kind}:{opaque_source(value)}"
    if isinstance(value, enum.Enum) or _defines_value_equality(value):
        return f"value:{kind}:{value!r}"
    return f"object:{kind}@{id(value):x}"


class _Renderer:
    def __init__(self, mask_layer_names: bool) -> None:
        self.mask = mask_layer_names
        self.index: dict[fx.Node, int] = {}
        self.baked: list[BakedConstant] = []

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
            self.baked.append(BakedConstant(op, argument, value, "str"))
            return "str:<masked>" if self.mask else describe_constant(value)
        if is_opaque_constant(value):
            self.baked.append(BakedConstant(op, argument, opaque_source(value), "opaque"))
            return f"opaque:{type(value).__qualname__}:<masked>" if self.mask else describe_constant(value)
        return describe_constant(value)

    def shown(self, value: Any, rendered: str) -> str:
        """How a message shows an argument: strings by ``repr``, opaque objects as torch prints them."""
        if isinstance(value, str):
            return repr(value)
        return opaque_source(value) if is_opaque_constant(value) else rendered

    def node(self, node: fx.Node, example: Any) -> RenderedNode:
        self.index[node] = len(self.index)
        if node.op == "placeholder":
            return RenderedNode(f"placeholder {describe_value(example)}", "placeholder", ())
        op = target_name(node.target)
        names = _argument_names(node.target)
        named = [(names[i] if i < len(names) else f"arg{i}", a) for i, a in enumerate(node.args)]
        rendered = [(name, self.arg(a, op, name), a) for name, a in [*named, *node.kwargs.items()]]
        args = [text for _, text, _ in rendered[: len(named)]] + [f"{k}={t}" for k, t, _ in rendered[len(named) :]]
        target = op if node.op != "output" else "output"
        return RenderedNode(
            f"{node.op} {op if node.op != 'output' else ''}({', '.join(args)})",
            target,
            tuple((name, text, self.shown(value, text)) for name, text, value in rendered),
        )


@dataclass(frozen=True)
class RenderedNode:
    """One node of a piece as the hash sees it (node names replaced by positions ``%i``)."""

    text: str
    target: str  # the op (``ns::name``), or "placeholder" / "output"
    arguments: tuple[tuple[str, str, str], ...]  # (name, as hashed, as shown to a reader)


def _render(
    gm: fx.GraphModule, example_inputs: Sequence[Any], mask: bool
) -> tuple[str, list[BakedConstant], tuple[RenderedNode, ...]]:
    renderer = _Renderer(mask)
    examples = iter(example_inputs)
    nodes = []
    for node in gm.graph.nodes:
        example = next(examples, None) if node.op == "placeholder" else None
        if example is None and node.op == "placeholder":
            example = node.meta.get("example_value", node.meta.get("val"))
        nodes.append(renderer.node(node, example))
    return "\n".join(n.text for n in nodes), renderer.baked, tuple(nodes)


@dataclass(frozen=True)
class GraphSignature:
    """Structural digests of a graph piece, and the layer-name constants baked into it."""

    digest: str
    masked_digest: str  # the same with every string and opaque constant masked
    baked: tuple[BakedConstant, ...]
    nodes: tuple[RenderedNode, ...] = ()  # what the digest was computed from, node by node


def graph_signature(gm: fx.GraphModule, example_inputs: Sequence[Any] = ()) -> GraphSignature:
    """Hash ``gm`` structurally; ``example_inputs`` describe its placeholders when given."""
    text, baked, nodes = _render(gm, example_inputs, mask=False)
    masked, _, _ = _render(gm, example_inputs, mask=True)
    return GraphSignature(
        hashlib.sha256(text.encode()).hexdigest()[:16],
        hashlib.sha256(masked.encode()).hexdigest()[:16],
        tuple(baked),
        nodes,
    )


def baked_constants(gm: fx.GraphModule) -> list[BakedConstant]:
    """Every string and opaque-object constant passed to a call in ``gm``."""
    return list(graph_signature(gm).baked)


def baked_strings(gm: fx.GraphModule) -> list[BakedConstant]:
    """Every string constant passed to a call in ``gm``."""
    return [b for b in baked_constants(gm) if b.kind == "str"]
