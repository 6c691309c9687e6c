"""Load and validate a layer-name implementation (the bundled reference or another project's module)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .compat import opaque_support
from .modes import Mode

REFERENCE_IMPL = "pytest_layername.reference"
REQUIRED_ATTRIBUTES = ("LayerName", "_encode_layer_name", "_resolve_layer_name")
VALUE_TYPE_METHODS = ("__eq__", "__hash__", "__fx_repr__")


class ImplementationError(ValueError):
    """An implementation module that cannot be imported or lacks the API."""


@dataclass(frozen=True)
class Implementation:
    """One project's ``LayerName`` with its encode and resolve functions."""

    module_name: str
    LayerName: type
    encode_layer_name: Callable[[str], Any]
    resolve_layer_name: Callable[[Any], str]

    @property
    def namespace(self) -> str:
        """The ``torch.library`` namespace the harness's ops use for this implementation."""
        if self.module_name == REFERENCE_IMPL:
            return "layername_ref"
        return "layername_" + re.sub(r"\W", "_", self.module_name)

    @property
    def enabled(self) -> bool:
        """Whether the module's own ``_encode_layer_name`` wraps names (its default mode is opaque)."""
        return isinstance(self.encode_layer_name("probe"), self.LayerName)

    @property
    def hoisted(self) -> bool:
        """Whether ``LayerName`` is registered with torch as a hoisted value opaque type."""
        if not opaque_support().supported:
            return False
        from torch._library import opaque_object

        return bool(opaque_object.is_opaque_type(self.LayerName) and opaque_object.should_hoist(self.LayerName))

    def opaque_unavailable_reason(self) -> str | None:
        """Why opaque mode cannot run with this implementation, or None when it can."""
        support = opaque_support()
        if not support.supported:
            return support.reason
        if not self.hoisted:
            return (
                f"{self.module_name}.LayerName is not registered as a hoisted value opaque type "
                "(register_opaque_type(LayerName, typ='value', hoist=True))"
            )
        return None

    def encode(self, name: str, mode: Mode) -> Any:
        """``name`` as an op receives it in ``mode``: wrapped in ``LayerName`` or the plain string.

        Kept trivial so Dynamo traces it without a graph break; :func:`~pytest_layername.ops.get_ops`
        checks that opaque mode is available before any model uses it.
        """
        return self.LayerName(name) if mode == "opaque" else name

    def resolve(self, layer_name: Any) -> str:
        """The implementation's ``_resolve_layer_name``."""
        return self.resolve_layer_name(layer_name)


def validate_module(module: ModuleType) -> Implementation:
    """Build an :class:`Implementation` from ``module`` or raise naming everything that is missing."""
    problems = [f"missing attribute {name!r}" for name in REQUIRED_ATTRIBUTES if not hasattr(module, name)]
    layer_name = getattr(module, "LayerName", None)
    if layer_name is not None:
        if not isinstance(layer_name, type):
            problems.append(f"'LayerName' must be a class, got {type(layer_name).__name__}")
        else:
            problems += [
                f"'LayerName' does not define {method}"
                for method in VALUE_TYPE_METHODS
                if getattr(layer_name, method, None) in (None, getattr(object, method, None))
            ]
    problems += [
        f"{name!r} is not callable"
        for name in REQUIRED_ATTRIBUTES[1:]
        if hasattr(module, name) and not callable(getattr(module, name))
    ]
    if problems:
        raise ImplementationError(
            f"module {module.__name__!r} is not a usable layer-name implementation: "
            + "; ".join(problems)
            + f". It must provide {', '.join(REQUIRED_ATTRIBUTES)}."
        )
    return Implementation(module.__name__, layer_name, module._encode_layer_name, module._resolve_layer_name)


def load_implementation(module_name: str = REFERENCE_IMPL) -> Implementation:
    """Import ``module_name`` (a dotted path) and validate it as an implementation."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImplementationError(f"cannot import layer-name implementation {module_name!r}: {error}") from error
    return validate_module(module)
