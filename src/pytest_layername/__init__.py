"""pytest-layername: test that hoisted ``LayerName`` inputs make identical layers compile once.

The package is layered; each subpackage's docstring says what it owns and what it may import:

- ``core``: torch compatibility, modes, implementations, the reference ``LayerName``, the environment.
- ``harness``: the reference ops (one op-definition helper) and models.
- ``compile``: the piecewise backend, structural hashing, compile statistics and sessions, measurement.
- ``fusion``, ``checks``: fusion passes and their log; round trips, field checks, the string audit.
- ``plugin``: the pytest plugin (inert until used). ``bench``: the benchmark. ``testing``: broken fixtures.
- ``release``: the matrix, the report schema, known bugs and the gate; it imports no torch.
- ``cli``: the ``layername`` command line, one module per subcommand; it may import every layer, none imports it.

Importing the package imports no torch: the names below load their modules on first use.

PYTEST_DONT_REWRITE: loaded at every pytest start-up (the plugin's package); it has no asserts to rewrite.
"""

from __future__ import annotations

from ._exports import lazy_exports

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
__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
