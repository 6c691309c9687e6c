"""Layer names in a fresh Python process, as an engine's worker or a restarted server sees them.

:func:`run_fresh` sends one JSON request to ``python -m pytest_layername.checks.fresh_process`` and returns
its one-line JSON answer. A fresh process shows what no in-process check can: whether the implementation
registers ``LayerName`` at import (before anything calls its encoder), whether its pickles load in another
process, whether importing and using it logs torch deprecations, how it behaves on a torch without hoisting,
and which names an op receives when a compile-cache artifact saved by another process is reloaded.

Jobs (``request["job"]``): ``names``, ``old_torch``, ``reload``; each answer is a JSON object.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import importlib
import json
import logging
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..core.fresh_interpreter import kill_session, launch

#: The torch a torch-without-hoisting simulation pretends to be (2.10: ``register_opaque_type`` without hoist=).
OLD_TORCH = "2.10.0"


class FreshProcessError(RuntimeError):
    """The fresh process failed outside what it was asked to check (its stderr is in the message)."""


def run_fresh(request: Mapping[str, Any], *, env: Mapping[str, str] | None = None, timeout: float = 600) -> Any:
    """Run one job in a fresh interpreter (:func:`~..core.fresh_interpreter.launch`: torch already imported
    where that equals an exec) that sees this process's ``sys.path``; its JSON answer."""
    child_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.TemporaryDirectory(prefix="layername-fresh-") as folder:
        files = {name: Path(folder, name) for name in ("request.json", "stdout", "stderr")}
        files["request.json"].write_text(json.dumps(request), encoding="utf-8")
        child = launch(
            "pytest_layername.checks.fresh_process", env=child_env, stdin=files["request.json"],
            stdout=files["stdout"], stderr=files["stderr"],
        )  # fmt: skip
        try:
            returncode = child.wait(timeout)
        finally:
            if child.poll() is None:
                kill_session(child)
        stdout, stderr = (files[name].read_text(encoding="utf-8", errors="replace") for name in ("stdout", "stderr"))
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        tail = stderr.strip()[-3000:]
        raise FreshProcessError(f"fresh process for job {request['job']!r} exited {returncode}:\n{tail}")
    return json.loads(lines[-1])


def encode_pickle(value: Any, protocol: int) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=protocol)).decode("ascii")


def decode_pickle(payload: str) -> Any:
    return pickle.loads(base64.b64decode(payload))


def describe_loaded(impl: Any, mode: str, payload: str) -> str:
    """What one pickled layer name becomes here: its resolved name, or ``<...>`` saying why it is not one."""
    try:
        value = decode_pickle(payload)
    except Exception as error:
        return f"<unpickling raised {type(error).__name__}: {error}>"
    expected = impl.LayerName if mode == "opaque" else str
    if type(value) is not expected:
        return f"<got {type(value).__name__} {value!r}, expected {expected.__name__}>"
    try:
        return impl.resolve(value)
    except Exception as error:
        return f"<resolve raised {type(error).__name__}: {error}>"


# -- the child ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _deprecations() -> Iterator[list[str]]:
    """Torch deprecation messages (torch's logger, or warnings raised from torch's code) inside the block."""
    found: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "deprecat" in record.getMessage().lower():
                found.append(f"{record.name}: {record.getMessage()}")

    handler = Keep(level=logging.WARNING)
    logging.getLogger("torch").addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield found
        finally:
            logging.getLogger("torch").removeHandler(handler)
    torch_dir = os.path.dirname(sys.modules["torch"].__file__ or "")
    for warning in caught:
        from_torch = warning.filename.startswith(torch_dir)
        if from_torch and (issubclass(warning.category, DeprecationWarning | FutureWarning)):
            found.append(f"{warning.category.__name__} ({warning.filename}:{warning.lineno}): {warning.message}")


def _names_job(request: Mapping[str, Any]) -> dict[str, Any]:
    """Import the implementation as an engine does, declare an op with its type, load and make pickles, compile."""
    import torch

    from ..core.implementation import load_implementation
    from .probe import Probe, probe_op, recording

    mode = request["mode"]
    answer: dict[str, Any] = {"declare_error": None, "compile_error": None, "received": None}
    with _deprecations() as deprecations:  # what importing and using the implementation logs, not compiling
        impl = load_implementation(request["impl"])
        answer["hoisted_at_import"] = impl.hoisted_at_import
        try:  # at import time, before anything calls the encoder, as an engine declares its ops
            probe_op(impl, mode, layer_name_type=impl.LayerName if mode == "opaque" else str)
        except Exception as error:
            answer["declare_error"] = f"{type(error).__name__}: {error}"
        with impl.use_mode(mode):
            answer["loaded"] = [[describe_loaded(impl, mode, p) for p in per_name] for per_name in request["pickles"]]
            answer["pickles"] = [
                [encode_pickle(impl.encode(name), protocol) for protocol in range(pickle.HIGHEST_PROTOCOL + 1)]
                for name in request["names"]
            ]
    answer["deprecations"] = deprecations
    if answer["declare_error"] is None:
        try:
            with impl.use_mode(mode), recording() as received:
                torch.compile(Probe(impl, mode, request["names"]), backend="aot_eager", fullgraph=True)(torch.zeros(2))
                answer["received"] = list(received)
        except Exception as error:
            answer["compile_error"] = f"{type(error).__name__}: {error}"
    return answer


def _hide_from_outside_torch(modules: tuple[str, ...]) -> None:
    """Importing ``modules`` from code outside torch raises ImportError, as on a torch without them; torch's own
    modules (which import them throughout on a newer torch) still get them."""
    for module in modules:  # loaded now, so torch's later imports find them in sys.modules
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    hidden = frozenset(modules)
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def refuse(names: set[str]) -> None:
        if found := sorted(names & hidden):
            raise ModuleNotFoundError(f"No module named {found[0]!r} (torch {OLD_TORCH} has none)", name=found[0])

    def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        importer = (globals or {}).get("__name__") or ""
        if level == 0 and importer.split(".")[0] != "torch":
            refuse({name, *(f"{name}.{item}" for item in fromlist or ())})
        return real_import(name, globals, locals, fromlist, level)

    def guarded_import_module(name: str, package: str | None = None) -> Any:
        refuse({name})
        return real_import_module(name, package)

    builtins.__import__ = guarded_import
    importlib.import_module = guarded_import_module  # type: ignore[assignment]


def _pretend_old_torch() -> None:
    """Make this process's torch look like 2.10: that version, no opaque base class, no hoist= to register with."""
    import torch
    from torch.torch_version import TorchVersion

    torch.__version__ = TorchVersion(OLD_TORCH)  # type: ignore[misc]
    _hide_from_outside_torch(("torch._opaque_base", "torch._custom_class_base"))
    try:
        import torch._library.opaque_object as registry
    except ImportError:  # torch 2.9: no opaque types at all, already old
        return
    real = registry.register_opaque_type

    def register_opaque_type(cls: type, *, typ: str, **newer: Any) -> None:
        """2.10's signature (no hoist=, members=, ...) for callers outside torch; torch's own modules keep theirs."""
        caller = sys._getframe(1).f_globals.get("__name__") or ""
        if newer and caller.split(".")[0] != "torch":
            raise TypeError(f"register_opaque_type() got an unexpected keyword argument {next(iter(newer))!r}")
        real(cls, typ=typ, **newer)

    registry.register_opaque_type = register_opaque_type
    with contextlib.suppress(AttributeError):
        del registry.register_custom_class  # 2.14's name


def _old_torch_job(request: Mapping[str, Any]) -> dict[str, Any]:
    """Import the implementation on a torch that looks like 2.10 and encode and resolve names with its defaults."""
    _pretend_old_torch()
    from ..core.implementation import load_implementation

    try:
        impl = load_implementation(request["impl"])
        encoded = [impl.encode(name) for name in request["names"]]
        return {
            "error": None,
            "types": [type(value).__name__ for value in encoded],
            "resolved": [impl.resolve(value) for value in encoded],
        }
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _reload_job(request: Mapping[str, Any]) -> dict[str, Any]:
    """Reload another process's compiled probe (its inductor cache, or its saved artifact) and call it."""
    import torch

    from ..compile.stats import CacheCounts
    from ..core.implementation import load_implementation
    from .probe import Probe, probe_op, recording

    impl = load_implementation(request["impl"])
    mode, names, device = request["mode"], request["names"], request["device"]
    x = torch.zeros(2, device=device)
    with impl.use_mode(mode), recording() as received:
        if request["method"] == "cache_hit":  # TORCHINDUCTOR_CACHE_DIR is the other process's cache
            before = CacheCounts.now()
            out = torch.compile(Probe(impl, mode, names), backend="inductor", fullgraph=True)(x)
            hits, misses = CacheCounts.now().hits_and_misses_since(before)
        else:
            from torch._inductor import CompiledArtifact

            probe_op(impl, mode)  # the artifact calls it by name
            loaded = CompiledArtifact.load(path=request["artifact"], format="binary")
            inputs = [x if slot is None else impl.encode(names[slot]) for slot in request["inputs"]]
            out = loaded(*inputs)
            out = out[0] if isinstance(out, tuple | list) else out
            hits = misses = 0
        return {"received": list(received), "output": out.tolist(), "cache_hits": hits, "cache_misses": misses}


JOBS = {"names": _names_job, "old_torch": _old_torch_job, "reload": _reload_job}


def main() -> None:
    request = json.loads(sys.stdin.read())
    print(json.dumps(JOBS[request["job"]](request)))


if __name__ == "__main__":
    main()
