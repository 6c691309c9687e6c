"""Facts about the machine a run uses: torch, opaque support, the device and its CUDA stack.

One place for what the probe, the plugin's header and report, and the benchmark record.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

from .compat import opaque_support
from .modes import auto_mode
from .names import DEVICES


class DeviceError(ValueError):
    """A device that is unknown or that this machine does not have."""


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(requested: str) -> str:
    """``auto|cpu|cuda`` as a concrete device this machine has; otherwise a :class:`DeviceError` saying why."""
    if requested == "auto":
        return default_device()
    if requested == "cpu":
        return requested
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device 'cuda' requested but no CUDA device is available (torch {torch.__version__}: "
                f"torch.cuda.is_available() is False, torch.version.cuda is {torch.version.cuda})"
            )
        return requested
    raise DeviceError(f"unknown device {requested!r}; choose one of: {', '.join(DEVICES)}")


def check_device(device: str) -> str:
    """``device`` if it is a concrete device this machine has (``cpu`` or ``cuda``)."""
    if device == "auto":
        raise DeviceError("device 'auto' is not a concrete device; choose cpu or cuda")
    return resolve_device(device)


def _driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        query = [smi, "--query-gpu=driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_facts(device: str) -> dict[str, Any]:
    """The device, its name, and (for cuda) torch's CUDA version and the driver's version."""
    if device != "cuda":
        return {"device": device, "device_name": _cpu_model(), "cuda_version": None, "driver_version": None}
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(),
        "cuda_version": torch.version.cuda,
        "driver_version": _driver_version(),
    }


def environment_facts(device: str) -> dict[str, Any]:
    """Everything a run records about its environment (torch, opaque support, device, Python, platform)."""
    return {
        **opaque_support().as_dict(),
        **device_facts(device),
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def probe() -> dict[str, Any]:
    """What this environment offers: torch, opaque support and why not, the auto mode, the device."""
    return {**environment_facts(default_device()), "auto_mode": auto_mode()}
