"""The core: what a layer name is and how this torch treats it.

Owns torch compatibility (:mod:`.compat`, :mod:`.names`), layer-name modes (:mod:`.modes`), the
implementation contract (:mod:`.implementation`), the bundled reference ``LayerName`` (:mod:`.reference`),
the forward context and the environment facts. Imports only torch, the standard library and itself;
:mod:`.names` imports no torch, so the release tools may use it.
"""
