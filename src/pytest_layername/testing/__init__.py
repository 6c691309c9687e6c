"""Deliberately broken pieces for negative controls; never imported by the library or the plugin.

:mod:`.broken` registers an op that takes a plain ``str`` layer name (on import) and a model that uses it.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "OP_NAME": "broken",
        "break_model": "broken",
    },
)
