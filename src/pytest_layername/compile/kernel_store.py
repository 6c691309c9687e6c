"""Compiled C++ kernels shared by the processes of one run (opt-in: ``LAYERNAME_KERNEL_STORE``).

Inductor names a CPU kernel's shared library after the hash of its source and compile command and skips the
C++ compiler when that file is already in the cache directory (``<cache>/<2 chars>/c<hash>.so``). Every fresh
compile session and process start has an empty cache directory (the FX-graph and AOT-autograd counts need
one), so each process of a test run compiled the same reference kernels again. With the store set,
:func:`seed` copies the kernels the run has built so far into a fresh directory, and :func:`harvest` adds
what a finished session or start built. Only libraries are shared, never torch's FX-graph or AOT-autograd
entries or the compiled graphs' Python modules, so every count the harness reads from torch is the same with
and without the store. A start that did not finish (killed, failed) is never harvested; files enter the
store by rename, whole. The start-up benchmark never uses it (its cold starts compile every kernel).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

#: the store's directory, inherited by every process of the run (xdist workers, fresh interpreters)
ENV = "LAYERNAME_KERNEL_STORE"
#: inductor's compiled C++ kernels below a cache directory
KERNELS = "??/c*.so"


def store(env: Mapping[str, str] = os.environ) -> Path | None:
    """The run's kernel store (an existing directory), or None where ``env`` sets none."""
    folder = env.get(ENV)
    return Path(folder) if folder and Path(folder).is_dir() else None


def _copy_absent(source: Path, destination: Path) -> int:
    """Copy the kernels of ``source`` that ``destination`` lacks (write a temporary, then rename); how many."""
    copied = 0
    for kernel in source.glob(KERNELS):
        target = destination / kernel.relative_to(source)
        if target.exists() or not kernel.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(kernel, temporary)
        os.replace(temporary, target)
        copied += 1
    return copied


def seed(cache_dir: str | os.PathLike[str], env: Mapping[str, str] = os.environ) -> int:
    """Copy the store's kernels into ``cache_dir`` (nothing without a store); how many were copied."""
    shared = store(env)
    return _copy_absent(shared, Path(cache_dir)) if shared else 0


def harvest(cache_dir: str | os.PathLike[str], env: Mapping[str, str] = os.environ) -> int:
    """Add the kernels a finished session or start built in ``cache_dir`` to the store; how many were new."""
    shared = store(env)
    return _copy_absent(Path(cache_dir), shared) if shared else 0
