"""The vocabulary of a layer-name run, importable without torch (the plugin's options and the release tools).

Modes, devices, and the torch version from which hoisted ``LayerName`` inputs exist.
"""

from __future__ import annotations

from typing import Literal

from packaging.version import Version

Mode = Literal["opaque", "string"]
#: the concrete modes: hoisted ``LayerName`` (opaque) and the plain ``str`` fallback (string)
MODES: tuple[Mode, ...] = ("opaque", "string")
#: what a user may ask for: a concrete mode, ``auto`` (what this torch supports) or ``both``
REQUESTABLE = ("auto", "opaque", "string", "both")
#: where a run's models and ops live; ``auto`` is cuda when torch sees a GPU
DEVICES = ("auto", "cpu", "cuda")
#: the first torch with hoisted value opaque types: ``LayerName`` can be a graph input from here on
OPAQUE_MIN_VERSION = Version("2.11")
