"""The core: what a layer name is and how this torch treats it.

Owns torch compatibility (:mod:`.compat`), the vocabulary of modes and devices (:mod:`.names`), mode
resolution (:mod:`.modes`), the implementation contract (:mod:`.implementation`), the bundled reference
``LayerName`` (:mod:`.reference`), the forward context and the environment facts. Imports only torch,
the standard library and itself; :mod:`.names` imports nothing, so the plugin's entry module loads it.

PYTEST_DONT_REWRITE: loaded at every pytest start-up; it has no asserts to rewrite.
"""
