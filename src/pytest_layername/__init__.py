"""pytest-layername: test that hoisted ``LayerName`` inputs make identical layers compile once.

Importing the package imports no torch: the names below load their modules on first use, so the
release tools (``matrix``, ``gate``, ``known_bugs``, ``report``) work in an environment without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CompileSession": "stats",
    "CompileStats": "stats",
    "compile_session": "stats",
    "Implementation": "impl",
    "ImplementationError": "impl",
    "load_implementation": "impl",
    "Mode": "modes",
    "ModeError": "modes",
    "auto_mode": "modes",
    "resolve_mode": "modes",
    "resolve_modes": "modes",
    "OpaqueSupport": "compat",
    "detect_opaque_support": "compat",
    "opaque_support": "compat",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
