import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from _pytest import pytester as pytester_module

from pytest_layername.compile import kernel_store
from pytest_layername.core.fresh_interpreter import launch

pytest_plugins = ["pytester"]

#: Inductor's switch for its vector-ISA probe (unset: probe; "1": every ISA the CPU lists is usable).
VEC_ISA_ENV = "TORCHINDUCTOR_VEC_ISA_OK"


def _probe_vec_isa_once() -> None:
    """Run inductor's vector-ISA probe once for the whole run; the processes it starts reuse its answer.

    Inductor picks the vector ISA of CPU kernels by compiling and loading a test program per ISA the CPU
    lists, again in every process with an empty cache dir: 10-25 s in each fresh interpreter, pytester run
    and xdist worker of this suite on 2 cores. When torch's own probe (run here, in torch's own cache
    directory, where a later run finds the test programs built and only loads them) finds every listed ISA
    usable, ``TORCHINDUCTOR_VEC_ISA_OK=1`` gives each process the same list without compiling it again;
    otherwise nothing is set and each process probes as before.
    """
    if VEC_ISA_ENV in os.environ:  # chosen by the user, or by the xdist controller for its workers
        return
    from torch._inductor import config, cpu_vec_isa

    probed = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()]
    with config.patch({"cpp.vec_isa_ok": True}):
        listed = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list.__wrapped__()]
    if probed == listed:
        os.environ[VEC_ISA_ENV] = "1"
        config.cpp.vec_isa_ok = True  # this process too: FX-graph cache keys agree with its children's


_probe_vec_isa_once()


def _share_compiled_kernels() -> None:
    """One kernel store for the run (:mod:`pytest_layername.compile.kernel_store`), made by the first process
    (pytest, or the xdist controller) and inherited by the workers, fresh interpreters and pytester runs: a
    reference kernel goes through the C++ compiler once per run, not once per process and cache directory."""
    if kernel_store.ENV in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="layername-kernels-")
    os.environ[kernel_store.ENV] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


_share_compiled_kernels()


class _KeepTorchModules(pytester_module.SysModulesSnapshot):
    """pytester's in-process runs drop modules imported during the run; torch registers global state on
    import (backends, cache artifact types), so its modules must survive between runs."""

    def __init__(self, preserve=None) -> None:
        super().__init__(preserve=lambda name: name.startswith("torch") or bool(preserve and preserve(name)))


@pytest.fixture(autouse=True)
def _keep_torch_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pytester_module, "SysModulesSnapshot", _KeepTorchModules)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose ``runpytest_subprocess`` runs ``python -m pytest`` through :func:`launch`: forked from the
    warm server (torch, Dynamo and inductor imported once) where that equals an exec, else exec'd as before.

    A test that asserts on what the child imported (the plugin is inert, torch not imported) sets
    ``LAYERNAME_FRESH_PROCESS=exec``: its child is then always exec'd.
    """
    exec_popen = pytester.popen

    def popen(cmdargs, stdout=None, stderr=None, stdin=pytester.CLOSE_STDIN, **kw):
        args = [os.fspath(arg) for arg in cmdargs]
        files = (getattr(stdout, "name", None), getattr(stderr, "name", None))
        if args[:2] != [sys.executable, "-mpytest"] or stdin is not pytester.CLOSE_STDIN or kw or None in files:
            return exec_popen(cmdargs, stdout=stdout, stderr=stderr, stdin=stdin, **kw)
        env = dict(os.environ)  # what pytester's own popen gives the child: the cwd first on PYTHONPATH
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
        return launch("pytest", args[2:], env=env, stdout=Path(files[0]), stderr=Path(files[1]))

    monkeypatch.setattr(pytester, "popen", popen)
    return pytester
