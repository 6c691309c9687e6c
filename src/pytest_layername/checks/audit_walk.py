"""Import a whole package for ``layername audit --walk``, and tell where each op was registered.

The walk imports a package and every submodule found by :mod:`pkgutil`, as a normal import would:
``__main__`` modules are never run, test modules (``tests``, ``test``, ``test_*``, ``conftest``) are
skipped unless asked for. A module that fails to import is recorded with its exception and the walk
goes on. :func:`walked_namespaces` then names the namespaces the walk registered ops in.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

TORCH_DIR = Path(torch.__file__).resolve().parent
_DISPATCHER_SITE = re.compile(r"^debug: registered at (?P<path>.+):(?P<line>\d+)$", re.MULTILINE)


class WalkError(ValueError):
    """A package named with ``--walk`` cannot be imported at all."""


def is_test_module(leaf: str) -> bool:
    """Whether a module's last name component marks test code pytest would collect."""
    return leaf in ("tests", "test", "conftest") or leaf.startswith("test_")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


@dataclass(frozen=True)
class ImportFailure:
    """A module the walk could not import, and why (exception type and the first line of its message)."""

    module: str
    error: str
    message: str
    path: str | None  # the module's file, when the import system found one

    def __str__(self) -> str:
        return f"{self.module}: {self.error}: {self.message}"


@dataclass
class WalkResult:
    """What ``--walk`` imported, failed to import and skipped, and how long the imports took."""

    packages: list[str]
    imported: list[str] = field(default_factory=list)
    failed: list[ImportFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "packages": self.packages,
            "imported": self.imported,
            "failed": [vars(f) for f in self.failed],
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def _module_path(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


class _Walker:
    def __init__(self, result: WalkResult, include_tests: bool) -> None:
        self.result, self.include_tests = result, include_tests

    def walk(self, path: Iterable[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(path, prefix):
            leaf = info.name.rpartition(".")[2]
            if leaf == "__main__" or (not self.include_tests and is_test_module(leaf)):
                self.result.skipped.append(info.name)
                continue
            try:
                module = importlib.import_module(info.name)
            except (Exception, SystemExit) as error:  # a module may even call sys.exit() on import
                failure = ImportFailure(info.name, type(error).__name__, _first_line(error), _module_path(info.name))
                self.result.failed.append(failure)
                continue
            self.result.imported.append(info.name)
            if info.ispkg:
                self.walk(module.__path__, f"{info.name}.")


def walk_packages(packages: Sequence[str], include_tests: bool = False) -> WalkResult:
    """Import each package and, recursively, every submodule; output modules print goes to stderr."""
    result = WalkResult(list(packages))
    walker = _Walker(result, include_tests)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # keep --json and text output parseable
        for package in packages:
            try:
                root = importlib.import_module(package)
            except (Exception, SystemExit) as error:
                message = f"--walk {package!r}: cannot import it: {type(error).__name__}: {_first_line(error)}"
                raise WalkError(message) from error
            result.imported.append(package)
            if hasattr(root, "__path__"):
                walker.walk(root.__path__, f"{package}.")
    result.seconds = time.perf_counter() - start
    return result


@dataclass(frozen=True)
class Site:
    """Where an op was registered: its Python function (``custom_op``) or the ``Library`` that defined it."""

    path: str
    line: int
    module: str | None
    kind: str  # "function" or "library"

    def describe(self, root: Path) -> str:
        where = f"{display_path(self.path, root)}:{self.line}" + (f" ({self.module})" if self.module else "")
        return f"defined at {where}" if self.kind == "function" else f"library created at {where}"

    def as_dict(self) -> dict[str, Any]:
        return vars(self)


def display_path(path: str, root: Path) -> str:
    """``path`` relative to ``root`` (POSIX separators) when under it, else absolute."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def custom_op_function(op: str) -> Any:
    """The Python function behind a ``torch.library.custom_op`` registration of ``op``, or None."""
    opdefs = getattr(torch._library.custom_ops, "OPDEFS", {})
    return getattr(opdefs.get(op.partition(".")[0]), "_init_fn", None)


def _module_of(path: Path) -> str | None:
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.endswith(path.name) and Path(file).resolve() == path:
            return name
    return None


def registration_site(op: str) -> Site | None:
    """Where ``op`` (``ns::name[.overload]``) was registered, torch's own files included; None if unknown.

    A ``library`` site's module is left None here; :func:`op_site` looks it up.
    """
    function = custom_op_function(op)
    code = getattr(inspect.unwrap(function), "__code__", None) if function is not None else None
    if code is not None:
        return Site(str(Path(code.co_filename).resolve()), code.co_firstlineno, function.__module__, "function")
    match = _DISPATCHER_SITE.search(torch._C._dispatch_dump(op))
    if match is None or not Path(match["path"]).is_file():  # "<string>", a C++ file of another machine
        return None
    return Site(str(Path(match["path"]).resolve()), int(match["line"]), None, "library")


def is_torch_internal(site: Site) -> bool:
    """Whether ``site`` lies inside the torch package (torch's own ops, or its wrappers' frames)."""
    return Path(site.path).is_relative_to(TORCH_DIR)


def op_site(op: str) -> Site | None:
    """:func:`registration_site` of ``op`` unless it points into torch (where it says nothing about the op)."""
    site = registration_site(op)
    if site is None or is_torch_internal(site):
        return None
    return site if site.module is not None else replace(site, module=_module_of(Path(site.path)))


def all_op_names() -> set[str]:
    """Every op (``ns::name[.overload]``) registered with the dispatcher now."""
    return set(torch._C._dispatch_get_all_op_names())


def walked_namespaces(before: set[str], walked_modules: Iterable[str]) -> list[str]:
    """Namespaces with an op registered since ``before`` (not by torch itself) or defined in a walked module.

    The second rule covers modules imported before the walk began (``custom_op`` functions only).
    """
    modules = set(walked_modules)
    namespaces = set()
    for op in all_op_names() - before:
        site = registration_site(op)
        if site is None or not is_torch_internal(site):
            namespaces.add(op.partition("::")[0])
    for op, opdef in list(getattr(torch._library.custom_ops, "OPDEFS", {}).items()):
        if getattr(getattr(opdef, "_init_fn", None), "__module__", None) in modules:
            namespaces.add(op.partition("::")[0])
    return sorted(namespaces)
