"""pytest-layername: test that hoisted ``LayerName`` inputs make identical layers compile once."""

from .compat import OpaqueSupport, detect_opaque_support, opaque_support
from .impl import Implementation, ImplementationError, load_implementation
from .modes import Mode, ModeError, auto_mode, resolve_mode, resolve_modes
from .stats import CompileSession, CompileStats, compile_session

__all__ = [
    "CompileSession",
    "CompileStats",
    "Implementation",
    "ImplementationError",
    "Mode",
    "ModeError",
    "OpaqueSupport",
    "auto_mode",
    "compile_session",
    "detect_opaque_support",
    "load_implementation",
    "opaque_support",
    "resolve_mode",
    "resolve_modes",
]
