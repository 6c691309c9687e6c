"""Which layer-name ops a vLLM start called, on which layers, resolved by which implementation.

:func:`recording` is entered in the engine's process before vLLM registers its ops (before the model
modules are imported). It wraps, for the duration of the start:

- ``vllm.utils.torch_utils.direct_register_custom_op``: every op registered from then on whose Python
  function has a ``layer_name`` parameter is registered with a wrapper that records each call: the op,
  the type of ``layer_name`` it received (``LayerName`` or ``str``) and the layer it served;
- every ``_resolve_layer_name`` of vLLM's two implementations of the contract, ``vllm.utils.torch_utils``
  and the MoE runner's own (``fused_moe/runner/moe_runner.py``), and the runner's ``get_layer_from_name``
  (which, in string mode, finds the layer by call order): a call made inside a recorded op notes which
  implementation resolved the name and which layer the runner picked.

A ``tamper`` (negative controls only) makes a resolver lie, the way a broken implementation would:
``moe-to-first`` sends every MoE call to the first MoE layer, ``attention-neighbour`` resolves one
attention layer's name to the next layer's, ``moe-call-order`` swaps the first two MoE layers in the
string-mode call order. Only ``vllm.*`` modules are touched, and only in this process.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TORCH_UTILS = "vllm.utils.torch_utils"
MOE_RUNNER = "vllm.model_executor.layers.fused_moe.runner.moe_runner"
#: The string-mode sentinel the MoE runner passes instead of the name (the layer is found by call order).
MOE_SENTINEL = "from_forward_context"
TAMPERS = ("moe-to-first", "attention-neighbour", "moe-call-order")
#: The attention layer ``attention-neighbour`` resolves to its neighbour (index 1: layer 1 -> layer 2).
TAMPERED_ATTENTION_LAYER = 1
#: Schema types a layer-name argument can have: a string, or an opaque object (LayerName).
NAME_TYPES = ("str", "str?", "PyObject", "PyObject?")
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class OpCalls:
    """What the start called: (op, received type, implementation) -> layers served, with call counts."""

    layers: dict[tuple[str, str, str], Counter[str]] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)  # layer-name ops registered while recording
    tamper: str | None = None
    tampered_calls: int = 0

    def record(self, op: str, received: str, implementation: str, layer: str) -> None:
        self.layers.setdefault((op, received, implementation), Counter())[layer] += 1

    def summary(self) -> dict[str, Any]:
        """JSON-able: one row per (op, received type, implementation) with its distinct layers and calls."""
        rows = [
            {"op": op, "received": received, "implementation": implementation, "layers": sorted(layers),
             "distinct_layers": len(layers), "calls": sum(layers.values())}
            for (op, received, implementation), layers in sorted(self.layers.items())
        ]  # fmt: skip
        return {"calls": rows, "registered": sorted(self.registered), "tamper": self.tamper,
                "tampered_calls": self.tampered_calls}  # fmt: skip


class _Call:
    """The recorded op call in progress (resolvers report into it; the engine runs its ops on one thread)."""

    implementation: str | None = None
    layer: str | None = None


def _layer_of(value: Any) -> tuple[str, str]:
    """(type name, name) of a ``layer_name`` argument: ``LayerName`` (its ``.value``) or ``str``."""
    if isinstance(value, str):
        return "str", value
    return type(value).__name__, str(getattr(value, "value", value))


def _wrap_op(name: str, function: Callable[..., Any], calls: OpCalls, current: _Call) -> Callable[..., Any]:
    position = list(inspect.signature(function).parameters).index("layer_name")

    @functools.wraps(function)
    def op(*args: Any, **kwargs: Any) -> Any:
        received, given = _layer_of(kwargs["layer_name"] if "layer_name" in kwargs else args[position])
        outer = (current.implementation, current.layer)
        current.implementation = current.layer = None
        try:
            return function(*args, **kwargs)
        finally:
            implementation = current.implementation or "none (the op uses the name as given)"
            calls.record(f"vllm::{name}", received, implementation, current.layer or given)
            current.implementation, current.layer = outer

    # torch's infer_schema evaluates string annotations (``from __future__ import annotations``) in the
    # function's globals: give it the signature evaluated where the op was defined, not in this module
    op.__signature__ = inspect.signature(function, eval_str=True)  # type: ignore[attr-defined]
    return op


def _tamper_name(tamper: str | None, name: str) -> str:
    if tamper != "attention-neighbour" or not name.endswith(".attn"):
        return name
    match = _LAYER_INDEX.search(name)
    if not match or int(match.group(1)) != TAMPERED_ATTENTION_LAYER:
        return name
    return name.replace(f".layers.{TAMPERED_ATTENTION_LAYER}.", f".layers.{TAMPERED_ATTENTION_LAYER + 1}.", 1)


def _wrap_resolver(
    implementation: str, resolve: Callable[[Any], str], calls: OpCalls, current: _Call
) -> Callable[[Any], str]:
    @functools.wraps(resolve)  # copies the MoE runner's assume_constant_result mark: Dynamo runs it while tracing
    def resolver(layer_name: Any) -> str:
        resolved = resolve(layer_name)
        name = _tamper_name(calls.tamper, resolved)
        calls.tampered_calls += name != resolved
        current.implementation, current.layer = implementation, name
        return name

    return resolver


def _wrap_get_layer(get_layer: Callable[[str], Any], calls: OpCalls, current: _Call) -> Callable[[str], Any]:
    from vllm.forward_context import get_forward_context

    @functools.wraps(get_layer)
    def get_layer_from_name(layer_name: str) -> Any:
        context = get_forward_context()
        if calls.tamper == "moe-call-order" and layer_name == MOE_SENTINEL and context.moe_layer_index in (0, 1):
            index = context.moe_layer_index
            context.moe_layer_index = 1 - index  # the first two MoE layers swap places
            layer = get_layer(layer_name)
            context.moe_layer_index = index + 1
            calls.tampered_calls += 1
        else:
            layer = get_layer(layer_name)
        if calls.tamper == "moe-to-first":
            first = next(name for name, one in context.no_compile_layers.items() if type(one) is type(layer))
            if first != layer.layer_name:
                calls.tampered_calls += 1
            layer = context.no_compile_layers[first]
        current.layer = layer.layer_name
        return layer

    return get_layer_from_name


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def recording(tamper: str | None = None) -> Iterator[OpCalls]:
    """Record the start's layer-name op calls (see the module docstring); ``tamper``: one of :data:`TAMPERS`."""
    import importlib

    if tamper is not None and tamper not in TAMPERS:
        raise ValueError(f"unknown tamper {tamper!r}: one of {', '.join(TAMPERS)}")
    torch_utils = importlib.import_module(TORCH_UTILS)
    calls, current = OpCalls(tamper=tamper), _Call()
    register = torch_utils.direct_register_custom_op

    @functools.wraps(register)
    def direct_register_custom_op(op_name: str, op_func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if "layer_name" in inspect.signature(op_func).parameters:
            calls.registered.append(f"vllm::{op_name}")
            op_func = _wrap_op(op_name, op_func, calls, current)
        return register(op_name, op_func, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(torch_utils, "direct_register_custom_op", direct_register_custom_op))
        resolve = _wrap_resolver(TORCH_UTILS, torch_utils._resolve_layer_name, calls, current)
        stack.enter_context(_patched(torch_utils, "_resolve_layer_name", resolve))
        moe_runner = importlib.import_module(MOE_RUNNER)  # its module globals are read at call time
        resolve = _wrap_resolver(MOE_RUNNER, moe_runner._resolve_layer_name, calls, current)
        stack.enter_context(_patched(moe_runner, "_resolve_layer_name", resolve))
        get_layer = _wrap_get_layer(moe_runner.get_layer_from_name, calls, current)
        stack.enter_context(_patched(moe_runner, "get_layer_from_name", get_layer))
        yield calls


def layer_name_ops(session: Any, *, packages: list[str]) -> dict[str, Any]:
    """Target for a fresh process: walk ``packages`` (vLLM's op packages, pins.OP_PACKAGES) as the audit does,
    then every ``vllm::`` op with a layer-name parameter (the audit's pattern) and its declared type."""
    from pytest_layername.checks.audit import LAYER_NAME_ARGUMENT, namespace_schemas
    from pytest_layername.checks.audit_walk import walk_packages

    walked = walk_packages(packages)
    ops = {}
    for op, schema in namespace_schemas("vllm"):
        for argument in schema.arguments:  # a layer name is a str or an opaque object (PyObject)
            if LAYER_NAME_ARGUMENT.search(argument.name) and str(argument.type) in NAME_TYPES:
                ops[op] = {"argument": argument.name, "type": str(argument.type)}
    return {"ops": ops, "import_failures": [str(failure) for failure in walked.failed]}
