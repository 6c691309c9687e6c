"""Detect whether this torch supports hoisted value opaque types (by feature, not by version)."""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass

import torch
from packaging.version import Version

#: First upstream release that shipped ``register_opaque_type(..., hoist=True)``.
OPAQUE_MIN_VERSION = Version("2.11")


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
    """Probe the running torch for ``torch._opaque_base`` and a ``hoist=`` keyword."""
    version = torch_version()
    try:
        importlib.import_module("torch._opaque_base")
    except ImportError:
        return OpaqueSupport(version, False, f"torch {torch.__version__} has no torch._opaque_base")
    try:
        opaque_object = importlib.import_module("torch._library.opaque_object")
        register = opaque_object.register_opaque_type
    except (ImportError, AttributeError):
        return OpaqueSupport(
            version, False, f"torch {torch.__version__} has no torch._library.opaque_object.register_opaque_type"
        )
    if "hoist" not in inspect.signature(register).parameters:
        return OpaqueSupport(
            version, False, f"torch {torch.__version__}: register_opaque_type() does not accept hoist="
        )
    return OpaqueSupport(version, True, None)


@functools.cache
def opaque_support() -> OpaqueSupport:
    """Cached :func:`detect_opaque_support` for this process."""
    return detect_opaque_support()
