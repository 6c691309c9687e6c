"""Load and validate a layer-name implementation (the bundled reference or another project's module)."""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from .compat import is_hoisted_opaque_type, opaque_support
from .modes import Mode, ModeError
from .names import REFERENCE_IMPL

REQUIRED_ATTRIBUTES = ("LayerName", "_encode_layer_name", "_resolve_layer_name")
VALUE_TYPE_METHODS = ("__eq__", "__hash__", "__fx_repr__")
#: The module-level mode switch ``_encode_layer_name`` reads at call time (vLLM's name; the reference uses it too).
SWITCH_ATTRIBUTE = "_USE_LAYERNAME"

#: Why a mode cannot run: torch lacks hoisting (a legitimate skip), the implementation's ``LayerName`` is not
#: registered hoisted (a failure: the implementation is broken), or the implementation cannot be switched to
#: that mode in-process (the mode is reported as not exercised).
ProblemKind = Literal["torch", "not_hoisted", "not_exercised"]


class ImplementationError(ValueError):
    """An implementation module that cannot be imported or lacks the API."""


@dataclass(frozen=True)
class ModeProblem:
    """Why one mode cannot run with an implementation."""

    kind: ProblemKind
    reason: str


@dataclass(frozen=True)
class Implementation:
    """One project's ``LayerName`` with its own encode and resolve functions and (optionally) its mode switch.

    The harness always encodes through the implementation's own ``_encode_layer_name``. The mode is chosen
    with :meth:`use_mode`, which sets the module's ``_USE_LAYERNAME`` switch where it has one; without a
    switch only the mode its encoder produces (:meth:`native_mode`) can be exercised.
    """

    module_name: str
    LayerName: type
    encode_layer_name: Callable[[str], Any]
    resolve_layer_name: Callable[[Any], str]
    module: ModuleType | None = None  # the module holding the switch; None: no switch
    #: whether torch had ``LayerName`` registered hoisted right after the module was imported, before anything
    #: called its encoder; None when the module was imported before the harness loaded it (not observed)
    hoisted_at_import: bool | None = None

    def __repr__(self) -> str:  # short: pytest shows it with every failing test that uses the fixture
        return f"Implementation({self.module_name!r})"

    @property
    def namespace(self) -> str:
        """The ``torch.library`` namespace the harness's ops use for this implementation."""
        if self.module_name == REFERENCE_IMPL:
            return "layername_ref"
        return "layername_" + re.sub(r"\W", "_", self.module_name)

    @property
    def switch(self) -> str | None:
        """``module._USE_LAYERNAME`` where the module has that switch (a bool: :func:`validate_module` checks)."""
        if self.module is not None and hasattr(self.module, SWITCH_ATTRIBUTE):
            return f"{self.module.__name__}.{SWITCH_ATTRIBUTE}"
        return None

    def native_mode(self) -> Mode:
        """The mode the implementation's own encoder produces right now (its default outside :meth:`use_mode`)."""
        return "opaque" if isinstance(self.encode_layer_name("probe"), self.LayerName) else "string"

    @property
    def hoisted(self) -> bool:
        """Whether ``LayerName`` is registered with torch as a hoisted opaque type."""
        return opaque_support().supported and is_hoisted_opaque_type(self.LayerName)

    def mode_problem(self, mode: Mode) -> ModeProblem | None:
        """Why ``mode`` cannot run with this implementation (see :data:`ProblemKind`), or None when it can."""
        if mode == "opaque":
            support = opaque_support()
            if not support.supported:
                return ModeProblem("torch", support.reason or "no hoisted opaque types")
            if self.hoisted and self.hoisted_at_import is False:
                return ModeProblem(
                    "not_hoisted",
                    f"{self.module_name}.LayerName was not registered as a hoisted opaque type when the module was "
                    "imported; it was registered later (lazily, e.g. by the first _encode_layer_name call): an engine "
                    "that declares its ops at import fails (torch.library.custom_op rejects the unregistered "
                    "LayerName annotation). Register it at import",
                )
            if not self.hoisted:
                return ModeProblem(
                    "not_hoisted",
                    f"{self.module_name}.LayerName is not registered as a hoisted opaque type on torch "
                    f"{support.torch_version}, which supports hoisting: Dynamo bakes every layer's name into the "
                    "graph (register it with hoist=True)",
                )
        if self.switch is None and mode != (native := self.native_mode()):
            return ModeProblem(
                "not_exercised",
                f"{self.module_name} has no mode switch ({SWITCH_ATTRIBUTE}) and its _encode_layer_name gives "
                f"{native} mode: {mode} mode is not exercised",
            )
        if self.switch is not None:
            with self._switched(mode):
                produced = self.native_mode()
            if produced != mode:
                return ModeProblem(
                    "not_exercised",
                    f"with {self.switch} = {mode == 'opaque'} its _encode_layer_name still gives {produced} mode "
                    f"(the encoder does not read the switch): {mode} mode is not exercised",
                )
        return None

    def opaque_unavailable_reason(self) -> str | None:
        """Why opaque mode cannot run with this implementation, or None when it can."""
        problem = self.mode_problem("opaque")
        return problem.reason if problem else None

    def layer_name_type(self, mode: Mode, purpose: str = "use opaque mode") -> type:
        """The type an op declares ``layer_name`` as in ``mode``: ``LayerName`` (opaque) or ``str``.

        Opaque mode on an implementation that cannot run it raises :class:`ModeError` (``cannot <purpose>: why``).
        """
        if mode == "string":
            return str
        if reason := self.opaque_unavailable_reason():
            raise ModeError(f"cannot {purpose}: {reason}")
        return self.LayerName

    @contextlib.contextmanager
    def use_mode(self, mode: Mode) -> Iterator[Mode]:
        """Make the implementation's own encoder produce ``mode`` inside the block (its switch, if any)."""
        if (problem := self.mode_problem(mode)) and problem.kind != "not_hoisted":
            raise ModeError(f"cannot use {mode} mode with {self.module_name}: {problem.reason}")
        if self.switch is None:
            yield mode
            return
        with self._switched(mode):
            yield mode

    @contextlib.contextmanager
    def _switched(self, mode: Mode) -> Iterator[None]:
        """Set the module's switch for ``mode`` inside the block (the implementation must have one)."""
        before = getattr(self.module, SWITCH_ATTRIBUTE)
        setattr(self.module, SWITCH_ATTRIBUTE, mode == "opaque")
        try:
            yield
        finally:
            setattr(self.module, SWITCH_ATTRIBUTE, before)

    def encode(self, name: str) -> Any:
        """The implementation's own ``_encode_layer_name`` (the mode is whatever :meth:`use_mode` set)."""
        return self.encode_layer_name(name)

    def resolve(self, layer_name: Any) -> str:
        """The implementation's ``_resolve_layer_name``."""
        return self.resolve_layer_name(layer_name)


def validate_module(module: ModuleType, hoisted_at_import: bool | None = None) -> Implementation:
    """Build an :class:`Implementation` from ``module`` or raise naming everything that is missing or wrong."""
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
    switch = getattr(module, SWITCH_ATTRIBUTE, False)
    if type(switch) is not bool:
        problems.append(
            f"the mode switch {SWITCH_ATTRIBUTE} must be a bool (True: encode to LayerName), got "
            f"{type(switch).__name__} {switch!r}"
        )
    if problems:
        raise ImplementationError(
            f"module {module.__name__!r} is not a usable layer-name implementation: "
            + "; ".join(problems)
            + f". The contract: {', '.join(REQUIRED_ATTRIBUTES)}, optionally a bool {SWITCH_ATTRIBUTE}."
        )
    return Implementation(
        module.__name__, layer_name, module._encode_layer_name, module._resolve_layer_name, module, hoisted_at_import
    )


def load_implementation(module_name: str = REFERENCE_IMPL) -> Implementation:
    """Import ``module_name`` (a dotted path) and validate it as an implementation.

    Whether ``LayerName`` is registered hoisted is read right after the import, before anything calls the
    encoder, so a type registered lazily (by its first use) is told apart from one registered at import.
    """
    imported_before = module_name in sys.modules
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImplementationError(f"cannot import layer-name implementation {module_name!r}: {error}") from error
    hoisted_at_import = None
    if not imported_before and isinstance(layer_name := getattr(module, "LayerName", None), type):
        hoisted_at_import = opaque_support().supported and is_hoisted_opaque_type(layer_name)
    return validate_module(module, hoisted_at_import)
