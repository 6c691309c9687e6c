"""A start target for the fault machinery's own tests: it writes FX-graph-like cache entries, slowly."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def write_artifacts(session: Any, *, files: int, pause: float, root_env: str = "TORCHINDUCTOR_CACHE_DIR") -> dict:
    """Write ``files`` entries the way torch does (a dot-file, then a rename), ``pause`` seconds apart, below
    the directory the variable ``root_env`` names (an engine's own cache root, as VLLM_CACHE_ROOT)."""
    root = Path(os.environ[root_env]) / "fxgraph" / "aa"
    for index in range(files):
        time.sleep(pause)
        entry = root / f"faa{index}" / "entry"
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = entry.parent / f".{os.getpid()}.tmp"
        temporary.write_bytes(b"entry %d" % index)
        temporary.rename(entry)
    return {"files": files}
