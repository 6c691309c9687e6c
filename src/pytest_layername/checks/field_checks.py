"""Detections for layer-name bugs seen in the field: ``__fx_repr__`` contract, opaque defaults, impure fakes.

Each check raises a :class:`FieldCheckError` subclass whose message says what is wrong, where, and how
to fix it, where torch itself fails late or with a message that does not name the cause.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..compile.graph_hash import describe_value, target_name
from ..harness.custom_ops import FieldCheckError, OpaqueDefaultError, check_opaque_defaults, define_op

__all__ = ["FieldCheckError", "OpaqueDefaultError", "check_opaque_defaults", "define_op"]


class FxReprError(FieldCheckError, TypeError):
    """``__fx_repr__`` does not return an evaluable ``(source, {name: type})`` pair."""


class ImpureFakeError(FieldCheckError):
    """A fake (meta) implementation whose output depends on something other than its inputs."""


FX_REPR_FIX = (
    "define `def __fx_repr__(self): return f'LayerName({self.value!r})', {'LayerName': LayerName}` "
    "(torch >= 2.11 evaluates the source with that dict as globals when it prints a graph)"
)


def check_fx_repr(obj: Any) -> Any:
    """Evaluate ``obj.__fx_repr__()`` as torch does; return the rebuilt object or raise :class:`FxReprError`."""
    cls = type(obj).__name__
    where = f"{type(obj).__module__}.{type(obj).__qualname__}.__fx_repr__ on {obj!r}"
    method = getattr(obj, "__fx_repr__", None)
    if method is None:
        raise FxReprError(f"{type(obj).__qualname__} has no __fx_repr__; {FX_REPR_FIX}")
    result = method()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise FxReprError(
            f"{where} returned {type(result).__name__} {result!r}; expected a tuple (source: str, "
            f"globals: dict[str, type]); {FX_REPR_FIX}"
        )
    source, names = result
    if not isinstance(source, str):
        raise FxReprError(f"{where} returned {type(source).__name__} as the source; expected str; {FX_REPR_FIX}")
    if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, type) for k, v in names.items()):
        raise FxReprError(
            f"{where} returned {names!r} as the globals; expected a dict mapping each name the source "
            f"uses to its type, e.g. {{{cls!r}: {cls}}}; {FX_REPR_FIX}"
        )
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise FxReprError(f"{where} returned source {source!r} that is not a Python expression: {error.msg}") from None
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    if missing := sorted(used - set(names)):
        raise FxReprError(
            f"{where}: source {source!r} uses {', '.join(missing)} but the globals dict only has "
            f"{sorted(names)}; add every name the source uses"
        )
    try:
        rebuilt = eval(compile(tree, f"<{cls}.__fx_repr__>", "eval"), {"__builtins__": {}, **names})
    except Exception as error:
        raise FxReprError(f"{where}: evaluating {source!r} failed: {type(error).__name__}: {error}") from None
    if type(rebuilt) is not type(obj) or rebuilt != obj:
        raise FxReprError(
            f"{where}: evaluating {source!r} gives {rebuilt!r}, not an equal {cls}; quote the value with "
            f"{{value!r}} so any string survives"
        )
    return rebuilt


@dataclass(frozen=True)
class FakeCall:
    """What a fake implementation returned for one layer name (tensor metadata, no data)."""

    layer_name: str
    attempt: int
    output: str


def _describe_output(output: Any) -> str:
    flat, _ = torch.utils._pytree.tree_flatten(output)
    return "; ".join(describe_value(value) for value in flat)


def check_fake_purity(
    op: Any, args: Sequence[Any], layer_name_index: int, names: Sequence[str], encode: Callable[[str], Any]
) -> list[FakeCall]:
    """Call ``op`` under fake tensors twice per name; raise :class:`ImpureFakeError` if outputs differ.

    ``args`` are real example arguments; the one at ``layer_name_index`` is replaced by ``encode(name)``.
    A fake that reads global state (a counter, a per-layer table) gives different metadata for the same
    inputs, so one compiled artifact cannot serve every layer and dedup breaks.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    if len(names) < 2:
        raise ValueError("check_fake_purity needs at least two layer names to compare")
    calls: list[FakeCall] = []
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        for attempt in range(2):
            for name in names:
                call_args = list(fake_args)
                call_args[layer_name_index] = encode(name)
                calls.append(FakeCall(name, attempt, _describe_output(op(*call_args))))
    first = calls[0]
    if differing := [c for c in calls if c.output != first.output]:
        other = differing[0]
        raise ImpureFakeError(
            f"fake implementation of {target_name(op)} is not a pure function of its inputs: the same tensor "
            f"inputs gave [{first.output}] for layer {first.layer_name!r} (call {first.attempt + 1}) but "
            f"[{other.output}] for layer {other.layer_name!r} (call {other.attempt + 1}). Identical layers "
            f"then trace to different graphs and compile separately. Compute output shapes from the tensor "
            f"arguments only; never read globals, the forward context or the layer name in a fake"
        )
    return calls
