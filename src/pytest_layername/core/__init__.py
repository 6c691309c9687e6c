"""The core: what a layer name is and how this torch treats it.

Owns torch compatibility (:mod:`.compat`), the vocabulary of modes and devices (:mod:`.names`), mode
resolution (:mod:`.modes`), the implementation contract (:mod:`.implementation`), the bundled reference
``LayerName`` (:mod:`.reference`), the forward context, the environment facts and fresh interpreters for
the checks that need one (:mod:`.fresh_interpreter`). Imports only torch,
the standard library and itself; :mod:`.names` imports nothing, so the plugin's entry module loads it.

PYTEST_DONT_REWRITE: loaded at every pytest start-up; it has no asserts to rewrite.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "OpaqueSupport": "compat",
        "detect_opaque_support": "compat",
        "opaque_support": "compat",
        "is_registered_opaque_type": "compat",
        "is_hoisted_opaque_type": "compat",
        "register_value_type": "compat",
        "opaque_base": "compat",
        "standalone_options": "compat",
        "DeviceError": "environment",
        "resolve_device": "environment",
        "check_device": "environment",
        "environment_facts": "environment",
        "probe": "environment",
        "layer_state": "forward_context",
        "REFERENCE_IMPL": "implementation",
        "Implementation": "implementation",
        "ImplementationError": "implementation",
        "load_implementation": "implementation",
        "Mode": "modes",
        "ModeError": "modes",
        "auto_mode": "modes",
        "resolve_mode": "modes",
        "resolve_modes": "modes",
        "MODES": "names",
        "REQUESTABLE": "names",
        "DEVICES": "names",
        "ENV_MODE": "names",
        "ENV_DEVICE": "names",
    },
)
