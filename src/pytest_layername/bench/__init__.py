"""The benchmark (``layername bench``, ``nox -s bench``): cold compile time and pieces versus layer count.

:mod:`.runner` measures (it imports :mod:`..compile`, :mod:`..harness`, :mod:`..core`); :mod:`.report`
turns a run into markdown, JSON and a plot; :mod:`.startup` times a plain pytest run with the plugin against
``-p no:layername`` (neither imports torch).
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "BenchError": "runner",
        "run_cells": "runner",
        "PlotUnavailable": "report",
        "render_markdown": "report",
        "write_outputs": "report",
        "measure_startup": "startup",
    },
)
