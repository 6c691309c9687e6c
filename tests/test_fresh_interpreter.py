"""Fresh interpreters forked from the warm server are what an exec'd ``python -m`` is (core.fresh_interpreter).

Each check runs the same module both ways and compares what the child saw: its ``__name__``, arguments,
working directory, ``sys.path``, environment, standard streams, session, exit status and exit functions;
none of this process's modules are in it. A child whose torch-relevant environment or torch differs from
the warm server's is exec'd (negative controls: the reason is named, and the child is a ``Popen``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pytest_layername.core import fresh_interpreter
from pytest_layername.core.fresh_interpreter import (
    ForkedChild,
    forkable,
    fresh_sys_path,
    import_recording_reads,
    launch,
)

HERE = Path(__file__).resolve().parent
TARGET = "fresh_interpreter_target"


def run(tmp_path: Path, warm: bool, *args: str, exit_code: int = 0, **env: str) -> tuple[object, dict, str]:
    folder = tmp_path / ("warm" if warm else "exec")
    folder.mkdir()
    (folder / "stdin").write_text("the request", encoding="utf-8")
    child_env = {
        **os.environ, "PYTHONPATH": str(HERE), "FRESH_TARGET_ATEXIT": str(folder / "atexit"),
        "FRESH_TARGET_EXIT": str(exit_code), "FRESH_TARGET_X": "x", **env,
    }  # fmt: skip
    child = launch(
        TARGET, list(args), env=child_env, stdout=folder / "out", stderr=folder / "err", stdin=folder / "stdin",
        cwd=str(folder), warm=warm,
    )  # fmt: skip
    assert child.wait(120) == exit_code
    seen = json.loads((folder / "out").read_text(encoding="utf-8"))
    assert (folder / "err").read_text(encoding="utf-8").strip().endswith("noise on stderr")
    assert (folder / "atexit").read_text(encoding="utf-8") == "exit functions ran"
    return child, seen, str(folder)


def test_a_forked_child_sees_what_an_execd_one_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fresh_interpreter_parent_marker", types.ModuleType("marker"))
    assert forkable(dict(os.environ), fresh_sys_path(os.environ, str(tmp_path))) is None  # the server runs
    previous = os.umask(0o027)  # the caller's umask now, not the one the warm server started with
    try:
        forked, warm, warm_dir = run(tmp_path, True, "a", "b c", exit_code=3)
        execd, cold, cold_dir = run(tmp_path, False, "a", "b c", exit_code=3)
    finally:
        os.umask(previous)
    assert isinstance(forked, ForkedChild) and isinstance(execd, subprocess.Popen)
    assert (warm.pop("cwd"), cold.pop("cwd")) == (warm_dir, cold_dir)
    warm_path, cold_path = warm.pop("sys_path"), cold.pop("sys_path")
    assert (warm_path[0], cold_path[0]) == (warm_dir, cold_dir) and warm_path[1:] == cold_path[1:]
    for seen, folder in ((warm, warm_dir), (cold, cold_dir)):
        assert seen["env"].pop("FRESH_TARGET_ATEXIT") == str(Path(folder) / "atexit")
    expected = {
        "name": "__main__", "argv": ["a", "b c"], "env": {"FRESH_TARGET_EXIT": "3", "FRESH_TARGET_X": "x"},
        "stdin": "the request", "session_leader": True, "umask": "0027", "parent_marker": False, "this_package": [],
    }  # fmt: skip
    assert cold == expected, cold
    assert warm == expected, warm


def test_the_sys_path_is_built_as_python_m_builds_it(tmp_path: Path) -> None:
    code = "import json, sys; print(json.dumps(sys.path))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), "relative"])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    execd = json.loads(done.stdout)
    assert fresh_sys_path(env, str(tmp_path)) == [str(tmp_path), *execd[1:]]  # -c puts '' first, -m the cwd


@pytest.mark.parametrize("variable", ["TORCH_LOGS", "TORCHINDUCTOR_FX_GRAPH_CACHE", "OMP_NUM_THREADS", "CXX", "TMPDIR"])
def test_a_child_whose_torch_environment_differs_is_execd(tmp_path: Path, variable: str) -> None:
    env = {**os.environ, variable: "+dynamo" if variable == "TORCH_LOGS" else "7"}
    sys_path = fresh_sys_path(env, str(tmp_path))
    assert forkable(env, sys_path) == f"{variable} differs from the warm server's"
    assert forkable({**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}, sys_path) is None  # read later
    child, seen, _ = run(tmp_path, True, **{variable: env[variable]})
    assert isinstance(child, subprocess.Popen) and seen["name"] == "__main__"


@pytest.mark.parametrize("state", ["RLIMIT_NOFILE", "ignored signals"])
def test_a_child_of_a_process_whose_inherited_state_differs_is_execd(tmp_path: Path, state: str) -> None:
    """An exec'd child inherits resource limits and ignored signals from its caller; a forked one would get
    the warm server's, so the child is exec'd and the reason named."""
    env = dict(os.environ)
    sys_path = fresh_sys_path(env, str(tmp_path))
    assert forkable(env, sys_path) is None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    handler = signal.getsignal(signal.SIGUSR2)
    try:
        if state == "RLIMIT_NOFILE":
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        else:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        assert forkable(env, sys_path) == f"this process's {state} differ from the warm server's"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        signal.signal(signal.SIGUSR2, handler)
    assert forkable(env, sys_path) is None


def test_the_server_records_the_variables_its_imports_read_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ground truth: a module that reads one variable by name and scans the whole environment; only the
    named read is recorded. Inductor's config reads CXX by name while importing (no prefix covers it)."""
    (tmp_path / "reads_env_probe.py").write_text(
        "import os\nos.environ.get('LAYERNAME_PROBE_READ')\n"
        "assert 'LAYERNAME_PROBE_CHECKED' not in os.environ\n"
        "scanned = {k: v for k, v in os.environ.items() if k.startswith('ZZ')}\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LAYERNAME_PROBE_SCANNED_ONLY", "1")
    reads = import_recording_reads(["reads_env_probe"])
    assert reads == {"LAYERNAME_PROBE_READ", "LAYERNAME_PROBE_CHECKED"}, reads
    assert forkable(dict(os.environ), fresh_sys_path(os.environ, str(tmp_path))) is None  # the server runs
    assert "CXX" in fresh_interpreter._server["reads"]


def test_a_child_that_would_import_another_torch_is_execd(tmp_path: Path) -> None:
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert forkable(env, fresh_sys_path(env, str(HERE))) == "the child's sys.path finds another torch"


def test_the_switch_execs_every_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERNAME_FRESH_PROCESS", "exec")
    child, _, _ = run(tmp_path, True)
    assert isinstance(child, subprocess.Popen)


@pytest.mark.parametrize("warm", [True, False], ids=["forked", "execd"])
def test_a_child_is_killed_with_its_session(tmp_path: Path, warm: bool) -> None:
    from pytest_layername.compile.process_start import RunningStart

    (tmp_path / "in").write_text("", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(HERE), "FRESH_TARGET_ATEXIT": str(tmp_path / "atexit")}
    child = launch(TARGET, ["sleep"], env=env, stdout=tmp_path / "out", stdin=tmp_path / "in", warm=warm)
    assert isinstance(child, ForkedChild) is warm
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.5)
    folder = tmp_path / "start"
    folder.mkdir()
    running = RunningStart("sleeper", TARGET, tmp_path, child, folder, 0.0)
    assert running.kill() == -9


def test_a_scripts_unguarded_top_level_does_not_run_again_in_the_child(tmp_path: Path) -> None:
    """multiprocessing re-runs the caller's ``__main__`` script in its children unless told otherwise; a
    forked fresh interpreter must not (negative control: the script's own process writes its line once)."""
    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "with open(sys.argv[1], 'a') as marker:\n"
        "    marker.write(f'top level ran in {os.getpid()}\\n')\n"
        "from pytest_layername.core.fresh_interpreter import ForkedChild, launch\n"
        "env = {**os.environ, 'PYTHONPATH': sys.argv[2], 'FRESH_TARGET_ATEXIT': sys.argv[1] + '.atexit'}\n"
        "child = launch('fresh_interpreter_target', env=env, stdout=Path(sys.argv[1] + '.out'), warm=True)\n"
        "assert isinstance(child, ForkedChild) and child.wait(120) == 0, child\n",
        encoding="utf-8",
    )
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, str(script), str(marker), str(HERE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = marker.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1, lines
