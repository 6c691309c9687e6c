"""The vocabulary of a layer-name run: modes, devices and the environment variables that choose them.

Imports nothing, so the plugin's entry module and the torch-free release tools can.

PYTEST_DONT_REWRITE: loaded at every pytest start-up; it has no asserts to rewrite.
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["opaque", "string"]
#: the concrete modes: hoisted ``LayerName`` (opaque) and the plain ``str`` fallback (string)
MODES: tuple[Mode, ...] = ("opaque", "string")
#: what a user may ask for: a concrete mode, ``auto`` (what this torch supports) or ``both``
REQUESTABLE = ("auto", "opaque", "string", "both")
#: where a run's models and ops live; ``auto`` is cuda when torch sees a GPU
DEVICES = ("auto", "cpu", "cuda")
#: environment variables that choose the mode and the device when neither option nor ini does
ENV_MODE = "LAYERNAME_MODE"
ENV_DEVICE = "LAYERNAME_DEVICE"
#: environment variable naming the directory for per-test torch traces when neither option nor ini does
ENV_TRACE = "LAYERNAME_TRACE"
#: the bundled implementation the suite runs against unless told otherwise (``--layername-impl``, a cell's ``impl``)
REFERENCE_IMPL = "pytest_layername.core.reference"
