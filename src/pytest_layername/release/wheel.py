"""Build this project's wheel: matrix cells install what users install, not an editable checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


class WheelError(RuntimeError):
    """The wheel could not be built; the message carries the builder's output."""


def build_wheel(project: Path, out_dir: Path) -> Path:
    """Build ``project``'s wheel into ``out_dir`` (``uv build`` where uv is found, else ``pip wheel``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.whl"))
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv:
        command = [uv, "build", "--wheel", "--out-dir", str(out_dir), str(project)]
    else:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out_dir), str(project)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    built = sorted(set(out_dir.glob("*.whl")) - before) or sorted(out_dir.glob("pytest_layername-*.whl"))
    if done.returncode != 0 or not built:
        raise WheelError(f"building the wheel of {project} failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return built[-1]
