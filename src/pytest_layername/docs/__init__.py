"""The documentation's generated part and its checks: ``docs/reference/`` rendered from the code (the plugin's
options, fixtures and markers, the ``layername`` commands, the report schema, the ``matrix.toml`` validator, the
known torch bugs), whether a checkout's pages are current, and whether the README's and docs' relative links
resolve.

Imports :mod:`..plugin` (its torch-free entry module and options), :mod:`..release` and, lazily, what a page
documents; the ``layername`` command's parser is handed in by ``layername docs``, since no library layer imports
the command line. Reading links needs markdown-it-py (the ``docs`` extra).
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "broken_links": "links",
        "markdown_files": "links",
        "REFERENCE_DIR": "reference",
        "reference_pages": "reference",
        "stale_pages": "reference",
        "write_reference": "reference",
    },
)
