"""Release tools: the compatibility matrix, cell runs, the report schema, known torch bugs and the gate.

Imports no torch and, from the rest of this package, only the vocabulary in :mod:`..core.names`, so
``layername matrix``/``gate`` and the noxfile run in an environment without torch. The pytest plugin
writes reports through :mod:`.report` and reads :mod:`.known_bugs`.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "CellError": "cell",
        "run_cell": "cell",
        "pytest_command": "cell",
        "GateResult": "gate",
        "run_gate": "gate",
        "KnownBug": "known_bugs",
        "active_bugs": "known_bugs",
        "Cell": "matrix",
        "Matrix": "matrix",
        "MatrixError": "matrix",
        "load_matrix": "matrix",
        "SCHEMA_VERSION": "report",
        "ReportError": "report",
        "load_report": "report",
        "report_schema": "report",
        "write_report": "report",
        "WheelError": "wheel",
        "build_wheel": "wheel",
    },
)
