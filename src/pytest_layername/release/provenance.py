"""Where a run came from: its git checkout, this project's version and an implementation's version (no torch),
and the digest that pins a definition (a matrix cell, a known bug) to the run made for it.

The plugin records these in every report; the gate reads the same facts about the checkout it runs in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata

DISTRIBUTION = "pytest-layername"
#: a full git object name (SHA-1, or SHA-256 in a SHA-256 repository)
FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def digest(definition: object) -> str:
    """sha256 (hex) of ``definition``'s canonical JSON (sorted keys; TOML dates and times as ISO text)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _git(directory: str | os.PathLike[str], *args: str) -> subprocess.CompletedProcess[str] | None:
    """``git -C directory ARGS`` (taking no optional locks), or None when git is missing or does not answer."""
    git = shutil.which("git")
    if git is None:
        return None
    command = [git, "--no-optional-locks", "-C", os.fspath(directory), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_state(directory: str | os.PathLike[str]) -> tuple[str | None, bool | None]:
    """``(HEAD commit, dirty)`` of the git checkout holding ``directory``; ``(None, None)`` outside one.

    Dirty means a tracked file differs from HEAD or an untracked file that is not ignored exists (what a
    build of the tree would pick up). ``git`` missing or failing counts as no checkout.
    """
    head = _git(directory, "rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0:
        return None, None
    status = _git(directory, "status", "--porcelain")
    dirty = bool(status.stdout.strip()) if status is not None and status.returncode == 0 else None
    return head.stdout.strip(), dirty


def resolve_commit(ref: str, directory: str | os.PathLike[str]) -> str | None:
    """The full commit ``ref`` names in the checkout holding ``directory`` (a full SHA stands for itself)."""
    if FULL_SHA.fullmatch(ref):
        return ref
    if ref.startswith("-"):
        return None
    done = _git(directory, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return done.stdout.strip() if done is not None and done.returncode == 0 else None


def project_version() -> str:
    """The installed pytest-layername version (``0+unknown`` when it runs from an uninstalled tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def module_version(module_name: str) -> str | None:
    """The version of the distribution that provides ``module_name`` (else its ``__version__``, else None)."""
    top = module_name.split(".")[0]
    if top == "pytest_layername":
        return project_version()
    for distribution in sorted(metadata.packages_distributions().get(top, [])):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    version = getattr(sys.modules.get(module_name) or sys.modules.get(top), "__version__", None)
    return version if isinstance(version, str) else None
