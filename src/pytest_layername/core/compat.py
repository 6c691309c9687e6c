"""Detect whether this torch supports hoisted value opaque types (by feature, not by version)."""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from packaging.version import Version

# Every lookup in torch's opaque-type registry (``torch._library.opaque_object``) goes through
# :func:`opaque_registry_api` with one of these name lists, newest first: torch 2.14 renamed the API and
# keeps the old names as deprecated wrappers that log a warning.
#: Registration functions.
REGISTRATION_APIS = ("register_custom_class", "register_opaque_type")
#: Whether a type is registered at all.
REGISTERED_CHECKS = ("is_custom_class", "is_opaque_type")
#: Whether a registered type is a value type (2.14 calls value types "constant").
VALUE_TYPE_CHECKS = ("is_opaque_constant_type", "is_opaque_value_type")
#: Whether a registered type is lifted to a graph input.
HOIST_CHECKS = ("should_hoist",)


@dataclass(frozen=True)
class OpaqueSupport:
    """What this torch offers for hoisted ``LayerName`` inputs."""

    torch_version: Version
    supported: bool
    reason: str | None  # why not, when ``supported`` is False

    def as_dict(self) -> dict[str, object]:
        return {
            "torch": str(self.torch_version),
            "opaque_supported": self.supported,
            "opaque_reason": self.reason,
        }


def torch_version() -> Version:
    """The running torch version (local tags such as ``+cpu`` included)."""
    return Version(torch.__version__)


def detect_opaque_support() -> OpaqueSupport:
    """Probe the running torch for an opaque base class and a registration API that takes ``hoist=``.

    torch 2.14 renamed the API (``register_custom_class``, ``torch._custom_class_base``); the old names are
    deprecated wrappers that log a warning, so the newest names are probed first and the old ones only where
    the new ones are absent (importing ``torch._opaque_base`` on 2.14+ would log a deprecation).
    """
    version = torch_version()
    if opaque_base() is object:
        return OpaqueSupport(
            version, False, f"torch {torch.__version__} has no torch._custom_class_base or torch._opaque_base"
        )
    register = opaque_registry_api(REGISTRATION_APIS)
    if register is None:
        return OpaqueSupport(
            version, False, f"torch {torch.__version__} has no torch._library.opaque_object.register_opaque_type"
        )
    if "hoist" not in inspect.signature(register).parameters:
        return OpaqueSupport(version, False, f"torch {torch.__version__}: {register.__name__}() does not accept hoist=")
    return OpaqueSupport(version, True, None)


@functools.cache
def opaque_support() -> OpaqueSupport:
    """Cached :func:`detect_opaque_support` for this process."""
    return detect_opaque_support()


def opaque_registry_api(names: tuple[str, ...]) -> Any:
    """The first of ``names`` that ``torch._library.opaque_object`` has (newest API first), else None."""
    try:
        module = importlib.import_module("torch._library.opaque_object")
    except ImportError:
        return None
    return next((getattr(module, name) for name in names if hasattr(module, name)), None)


def is_registered_opaque_type(cls: type) -> bool:
    """Whether torch knows ``cls`` as an opaque type (``is_custom_class`` from 2.14, ``is_opaque_type`` before)."""
    check = opaque_registry_api(REGISTERED_CHECKS)
    try:
        return bool(check is not None and check(cls))
    except Exception:  # a type torch cannot look up is not registered
        return False


def is_hoisted_opaque_type(cls: type) -> bool:
    """Whether ``cls`` is registered with torch *and* lifted to a graph input (``should_hoist``)."""
    should_hoist = opaque_registry_api(HOIST_CHECKS)
    return is_registered_opaque_type(cls) and should_hoist is not None and bool(should_hoist(cls))


def register_value_type(cls: type, *, hoist: bool) -> None:
    """Register ``cls`` as a value opaque type through the newest API this torch has.

    torch >= 2.14: ``register_custom_class(cls, typ="constant", hoist=...)`` (``register_opaque_type`` is a
    deprecated wrapper that logs a warning); 2.11-2.13: ``register_opaque_type(cls, typ="value", hoist=...)``;
    2.10 has no ``hoist=``: only ``hoist=False`` is possible there.
    """
    register = opaque_registry_api(REGISTRATION_APIS)
    if register is not None and register.__name__ == "register_custom_class":
        register(cls, typ="constant", hoist=hoist)
        return
    if register is None:
        raise RuntimeError(f"torch {torch.__version__} cannot register opaque types")
    if "hoist" in inspect.signature(register).parameters:
        register(cls, typ="value", hoist=hoist)
    elif hoist:
        raise RuntimeError(f"torch {torch.__version__}: register_opaque_type() does not accept hoist=")
    else:
        register(cls, typ="value")


def standalone_options() -> dict[str, Any]:
    """Options for ``torch._inductor.standalone_compile``: ``aot=True`` where it exists (not on torch 2.9)."""
    from torch._inductor import standalone_compile

    return {"aot": True} if "aot" in inspect.signature(standalone_compile).parameters else {}


def opaque_base() -> type:
    """The base class opaque types derive from (required on torch 2.11): the newest name first, else ``object``."""
    for module_name, name in (("torch._custom_class_base", "CustomClassBase"), ("torch._opaque_base", "OpaqueBase")):
        try:
            return getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):
            continue
    return object
