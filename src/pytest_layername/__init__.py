"""pytest-layername: test that hoisted ``LayerName`` inputs make identical layers compile once.

The package is layered; each subpackage's docstring says what it owns and what it may import:

- ``core``: torch compatibility, modes, implementations, the reference ``LayerName``, the environment.
- ``harness``: the reference ops (one op-definition helper) and models.
- ``compile``: the piecewise backend, structural hashing, compile statistics and sessions, measurement.
- ``fusion``, ``checks``: fusion passes and their log; round trips, field checks, the string audit.
- ``plugin``: the pytest plugin (inert until used). ``bench``: the benchmark. ``testing``: broken fixtures.
- ``release``: the matrix, the report schema, known bugs and the gate; it imports no torch.

Importing the package imports no torch: the names below load their modules on first use. The flat
module paths of 0.1 (``pytest_layername.measure``, ``pytest_layername.backend``, ...) still import, with
a ``DeprecationWarning`` naming the new home.

PYTEST_DONT_REWRITE: loaded at every pytest start-up (the plugin's package); it has no asserts to rewrite.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

_EXPORTS = {
    "CompileSession": "compile.session",
    "compile_session": "compile.session",
    "CompileStats": "compile.stats",
    "Implementation": "core.implementation",
    "ImplementationError": "core.implementation",
    "load_implementation": "core.implementation",
    "Mode": "core.modes",
    "ModeError": "core.modes",
    "auto_mode": "core.modes",
    "resolve_mode": "core.modes",
    "resolve_modes": "core.modes",
    "OpaqueSupport": "core.compat",
    "detect_opaque_support": "core.compat",
    "opaque_support": "core.compat",
}
__all__ = sorted(_EXPORTS)

#: module paths of 0.1 -> their home now (deprecated aliases, removed in 0.3)
MOVED_MODULES = {
    "compat": "core.compat",
    "modes": "core.modes",
    "impl": "core.implementation",
    "reference": "core.reference",
    "forward_context": "core.forward_context",
    "environment": "core.environment",
    "ops": "harness.ops",
    "models": "harness.models",
    "backend": "compile.backend",
    "graph_hash": "compile.graph_hash",
    "stats": "compile.stats",
    "expectations": "compile.expectations",
    "measure": "compile.measure",
    "fusion_log": "fusion.log",
    "roundtrip": "checks.roundtrip",
    "field_checks": "checks.field_checks",
    "audit": "checks.audit",
    "audit_walk": "checks.audit_walk",
    "audit_sarif": "checks.audit_sarif",
    "reporting": "plugin.reporting",
    "report": "release.report",
    "matrix": "release.matrix",
    "gate": "release.gate",
    "known_bugs": "release.known_bugs",
    "compat_table": "release.compat_table",
    "cell": "release.cell",
    "bench_report": "bench.report",
    "broken": "testing.broken",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


class _MovedModuleFinder:
    """Imports ``pytest_layername.<old>`` as the module now at ``pytest_layername.<new>``, with a warning.

    A meta path finder and its loader (the protocol's three methods).
    """

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its new name."""


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
