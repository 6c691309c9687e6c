"""Fresh Python interpreters for the checks that need one, without importing torch in each.

A check that needs a fresh process (an implementation imported for the first time, a pickle loaded in
another process, a warm start on a compile cache) pays 3-4 s of importing torch, Dynamo and inductor per
process on 2 cores. :func:`launch` runs ``python -m MODULE ARGS`` either exec'd (``subprocess.Popen``) or
forked from a warm server: the standard library's multiprocessing *forkserver*, whose server imported
:data:`PRELOAD` once. A forked child is a fresh interpreter but for those modules: nothing of the caller's
process (the implementation under test, the caller's tests, this package's state) is in it, and it gets
what ``python -m`` would get: the requested environment, working directory and standard streams,
``sys.path`` built from its ``PYTHONPATH``, its own session (process group), ``__main__`` run by
:mod:`runpy` and the interpreter's exit functions at exit.

A child is forked only where that equals an exec (:func:`forkable`): no variable torch may read at import
(:data:`IMPORT_TIME_PREFIXES`) differs from the server's environment, the child's ``sys.path`` finds the
same torch, and ``LAYERNAME_FRESH_PROCESS`` is not ``exec``. Otherwise, and wherever a caller asks for it
(the start-up benchmark measures the imports), the child is exec'd.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.machinery
import json
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import runpy
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing import spawn
from pathlib import Path
from typing import Any, Protocol

#: What the warm server imports once (the costly part of a fresh process that uses inductor), through
#: :mod:`.warm_server`, which records the environment variables these imports read by name.
PRELOAD = ("torch", "torch._dynamo", "torch._inductor.compile_fx")
SERVER_MODULE = "pytest_layername.core.warm_server"
#: Environment variables that native code may read while torch loads, or the interpreter before it (locale,
#: temporary directory); Python-level reads are recorded: a child is forked only when each of them, and each
#: variable the preload read, is as the server saw it.
IMPORT_TIME_PREFIXES = (
    "TORCH", "PYTORCH", "CUDA", "NVIDIA", "OMP_", "MKL", "KMP_", "GOMP_", "LD_", "MALLOC", "PYTHON", "HIP",
    "ROCM", "TRITON", "XLA", "USE_", "CPU_", "LC_", "LANG", "TMPDIR", "TEMP", "TMP",
)  # fmt: skip
#: Read again whenever used: TORCHINDUCTOR_CACHE_DIR when a compile needs it; PYTHONPATH becomes the child's
#: ``sys.path``.
READ_LATER = frozenset({"TORCHINDUCTOR_CACHE_DIR", "PYTHONPATH"})
#: Read at import only to find the user site directory, which a virtual environment leaves out (compared
#: where the user site is enabled).
USER_SITE_ONLY = frozenset({"HOME"})
#: Whole-environment scans (``os.environ.items()``, ``copy()``) read no variable by name.
_SCANS = {("collections.abc", "__iter__"), ("_collections_abc", "__iter__"), ("os", "copy")}
#: ``exec`` makes every fresh process an exec'd interpreter (no warm server).
SWITCH = "LAYERNAME_FRESH_PROCESS"


class Child(Protocol):
    """A launched child, as much of :class:`subprocess.Popen` as the callers use."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class ForkedChild:
    """A child forked from the warm server (a :class:`multiprocessing.Process`), used like a ``Popen``."""

    stdin = None  # its standard input is a file it opened itself (or none)

    def __init__(self, process: Any, command: list[str]) -> None:
        self._process, self._command = process, command
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._command, timeout or 0)
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()


@functools.cache
def base_sys_path() -> tuple[str, ...]:
    """``sys.path`` of this Python with no PYTHONPATH, past its first entry (the script's or the cwd)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import json, sys; print(json.dumps(sys.path[1:]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return tuple(json.loads(done.stdout))


def fresh_sys_path(env: Mapping[str, str], cwd: str) -> list[str]:
    """The ``sys.path`` of ``python -m ...`` started in ``cwd`` with ``env``."""
    extra = [os.path.abspath(os.path.join(cwd, p)) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [cwd, *extra, *base_sys_path()]


_lock = threading.Lock()
_server: dict[str, Any] = {}  # "pid", "env", "inherited" and "reads" of the running server


def reads_path(server_pid: int) -> Path:
    """Where the warm server with ``server_pid`` records the variables its preload read."""
    return Path(tempfile.gettempdir()) / f"layername-warm-server-{server_pid}.json"


def import_recording_reads(modules: Sequence[str] = PRELOAD) -> set[str]:
    """Import ``modules``; the environment variables read by name meanwhile (scans of the whole environment
    left out: networkx looks for its own prefix that way)."""
    reads: set[str] = set()
    environ_type = type(os.environ)
    real_getitem = environ_type.__getitem__

    def getitem(self: Any, key: str) -> str:
        caller = sys._getframe(1)
        if (caller.f_globals.get("__name__"), caller.f_code.co_name) not in _SCANS:
            reads.add(key)
        return real_getitem(self, key)

    environ_type.__getitem__ = getitem  # type: ignore[method-assign]
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        environ_type.__getitem__ = real_getitem  # type: ignore[method-assign]
    return reads


def record_server_reads() -> None:
    """In the warm server: import :data:`PRELOAD` and write what it read to :func:`reads_path`."""
    path = reads_path(os.getpid())
    temporary = path.with_name(f".{path.name}")
    temporary.write_text(json.dumps(sorted(import_recording_reads())), encoding="utf-8")
    os.replace(temporary, path)


def _server_reads(pid: int, timeout: float = 600) -> frozenset[str]:
    """The variables the server with ``pid`` read while preloading (it writes them before serving)."""
    path = reads_path(pid)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if os.waitpid(pid, os.WNOHANG)[0] or time.monotonic() > deadline:
            raise RuntimeError(f"the warm server (pid {pid}) exited or ran {timeout:.0f} s without writing {path}")
        time.sleep(0.02)
    reads = frozenset(json.loads(path.read_text(encoding="utf-8")))
    path.unlink()
    return reads


def _inherited() -> dict[str, object]:
    """What an exec'd child inherits from this process besides its environment and umask (which a forked
    child is given): resource limits, ignored and blocked signals, scheduling priority."""
    state: dict[str, object] = {
        name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")
    }
    state["ignored signals"] = sorted(s for s in signal.valid_signals() if signal.getsignal(s) is signal.SIG_IGN)
    state["blocked signals"] = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    state["priority"] = os.getpriority(os.PRIO_PROCESS, 0)
    return state


def _umask() -> int:
    """This process's umask, read without changing it (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)


def _server_state(inherited: dict[str, object]) -> dict[str, Any]:
    """Start the warm server if it is not running (it inherits this process's environment and ``inherited``,
    :func:`_inherited` now); the environment and inherited state it started with."""
    with _lock:
        context = multiprocessing.get_context("forkserver")
        if not _server:
            context.set_forkserver_preload([SERVER_MODULE])
        env = dict(os.environ)
        multiprocessing.forkserver.ensure_running()
        pid = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        if _server.get("pid") != pid:  # started now (or restarted after it died): this is what it inherited
            _server.update(pid=pid, env=env, inherited=inherited, reads=_server_reads(pid))
        return _server


def forkable(env: Mapping[str, str], sys_path: Sequence[str]) -> str | None:
    """None when a child with ``env`` and ``sys_path`` may be forked from the warm server, else why not."""
    if os.environ.get(SWITCH, "") == "exec" or env.get(SWITCH, "") == "exec":
        return f"{SWITCH}=exec"
    if sys.platform != "linux":
        return "the warm server forks, on Linux only"
    torch_spec = importlib.machinery.PathFinder.find_spec("torch", list(sys_path))
    here = importlib.machinery.PathFinder.find_spec("torch", sys.path)
    if torch_spec is None or here is None or torch_spec.origin != here.origin:
        return "the child's sys.path finds another torch"
    now = _inherited()
    server = _server_state(now)
    started, read = server["env"], server["reads"]
    for name in sorted(set(env) | set(started)):
        import_time = name.startswith(IMPORT_TIME_PREFIXES) or name in read
        if import_time and name not in READ_LATER and not _user_site_only(name) and env.get(name) != started.get(name):
            return f"{name} differs from the warm server's"
    for name, value in server["inherited"].items():
        if now[name] != value:
            return f"this process's {name} differ from the warm server's"
    return None


def _user_site_only(name: str) -> bool:
    """Whether ``name`` only finds the user site directory, which this (virtual) environment leaves out."""
    return name in USER_SITE_ONLY and not site.ENABLE_USER_SITE


def _run_child(
    module: str, args: list[str], env: dict[str, str], cwd: str, sys_path: list[str],
    stdin: str | None, stdout: str, stderr: str, umask: int,
) -> None:  # fmt: skip
    """In the forked child: become what ``python -m module args`` would be, and run it."""
    os.setsid()
    os.umask(umask)
    os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 1)
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
    if stdin is not None:
        sys.stdin = open(stdin, encoding="utf-8")  # noqa: SIM115 (the child's stdin for its lifetime)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.path[:] = sys_path
    for name in [n for n in sys.modules if n == "pytest_layername" or n.startswith("pytest_layername.")]:
        del sys.modules[name]  # this package is imported fresh, from the child's sys.path
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # as an interpreter's exit would; the child then leaves by os._exit


@contextlib.contextmanager
def _without_callers_main() -> Iterator[None]:
    """The child runs a module of its own: multiprocessing must not have it import, or run again, the
    caller's ``__main__`` (a script's unguarded top level would run in every child)."""
    real = spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data = real(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = preparation_data
    try:
        yield
    finally:
        spawn.get_preparation_data = real


def launch(
    module: str, args: Sequence[str] = (), *, env: Mapping[str, str], stdout: Path, stderr: Path | None = None,
    stdin: Path | None = None, cwd: str | None = None, warm: bool = True,
) -> Child:  # fmt: skip
    """Run ``python -m module args`` in a fresh interpreter with ``env`` (the whole environment), its
    output in ``stdout`` (and ``stderr``, default the same file), ``stdin`` read from a file, in its own
    session. Forked from the warm server when ``warm`` and :func:`forkable`, else exec'd."""
    cwd = cwd or os.getcwd()
    stderr = stderr or stdout
    sys_path = fresh_sys_path(env, cwd)
    if warm and forkable(env, sys_path) is None:
        context = multiprocessing.get_context("forkserver")
        request = (
            module, list(args), dict(env), cwd, sys_path, stdin and str(stdin), str(stdout), str(stderr), _umask()
        )  # fmt: skip
        process = context.Process(target=_run_child, args=request, name=f"fresh {module}")
        with _lock, _without_callers_main():
            process.start()
        return ForkedChild(process, [module, *args])
    command = [sys.executable, "-m", module, *args]
    with contextlib.ExitStack() as files:
        out = files.enter_context(stdout.open("ab"))
        err = subprocess.STDOUT if stderr == stdout else files.enter_context(stderr.open("ab"))
        inp = files.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        return subprocess.Popen(
            command, env=dict(env), cwd=cwd, stdin=inp, stdout=out, stderr=err, start_new_session=True
        )


def kill_session(child: Child) -> int:
    """SIGKILL ``child``'s session (its process group: the child leads one) and the child itself (a forked
    child may not lead its session yet); its exit status."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        child.kill()
    return child.wait()
