"""The report the plugin writes names its run, exists from the start, survives kills, and is never shared."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from pytest_layername.plugin.reporting import IN_PROGRESS
from pytest_layername.release import report as report_module
from pytest_layername.release.report import load_report, write_report

TESTS = """
    def test_mode(layername_mode):
        pass

    def test_plain():
        pass

    def test_other():
        pass
"""
DIGEST = "ab" * 32


def _terminal_counts(output: str) -> tuple[int, int, int]:
    """(collected, deselected, selected) as pytest's terminal says them: ground truth for the report's counts."""
    found = re.search(r"collected (\d+) items?(?: / (\d+) deselected / (\d+) selected)?", output)
    assert found, output
    collected = int(found[1])
    deselected = int(found[2] or 0)
    return collected, deselected, int(found[3] or collected)


def test_report_names_its_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    args = ["--layername-mode=both", "--layername-report=r.json", "-k", "mode or plain"]
    result = pytester.runpytest_subprocess(*args, "--layername-cell=c1", f"--layername-cell-digest={DIGEST}")
    result.assert_outcomes(passed=3, deselected=1)
    run = load_report(pytester.path / "r.json")["run"]
    collected, deselected, selected = _terminal_counts(result.stdout.str())
    assert (run["collected"], run["deselected"], run["selected"]) == (collected, deselected, selected) == (4, 1, 3)
    assert run["cell"] == "c1" and run["cell_digest"] == DIGEST
    assert re.fullmatch(r"[0-9a-f]{32}", run["run_id"])
    version = metadata.version("pytest-layername")
    assert run["project_version"] == version and run["impl_version"] == version  # the reference ships with it
    assert run["pytest_args"][-6:] == [*args, "--layername-cell=c1", f"--layername-cell-digest={DIGEST}"][-6:]
    assert "-k" in run["pytest_args"] and run["allow_not_exercised"] is False
    assert run["git_commit"] is None and run["git_dirty"] is None  # pytester's folder is no git checkout


def test_xdist_report_counts_what_the_workers_collected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    plain = pytester.runpytest_subprocess("--layername-mode=both", "-k", "not other")
    expected = _terminal_counts(plain.stdout.str())
    args = ["-n", "2", "--layername-mode=both", "--layername-report=r.json", "-k", "not other"]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=3)
    run = load_report(pytester.path / "r.json")["run"]
    assert (run["collected"], run["deselected"], run["selected"]) == expected == (4, 1, 3)


def test_report_records_pytest_addopts(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """What PYTEST_ADDOPTS and ini addopts add is part of the run's arguments (the gate reads all of them)."""
    pytester.makepyfile(TESTS)
    pytester.makeini("[pytest]\naddopts = -ra\n")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-k plain")
    pytester.runpytest_subprocess("--layername-report=r.json").assert_outcomes(passed=1, deselected=2)
    run = load_report(pytester.path / "r.json")["run"]
    assert run["pytest_args"][:3] == ["-ra", "-k", "plain"] and run["pytest_args"][-1] == "--layername-report=r.json"
    assert run["deselected"] == 2


def test_report_records_the_git_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "test_it.py").write_text(textwrap.dedent(TESTS), encoding="utf-8")
    (repo / ".gitignore").write_text("r.json\n.r.json.lock\n__pycache__/\n", encoding="utf-8")  # what a run leaves
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    def run_pytest() -> dict[str, object]:
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--layername-report=r.json"]
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-2000:]
        return load_report(repo / "r.json")["run"]

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    run = run_pytest()
    assert run["git_commit"] == git("rev-parse", "HEAD").strip() and run["git_dirty"] is False, git("status")
    (repo / "untracked.txt").write_text("x", encoding="utf-8")
    assert run_pytest()["git_dirty"] is True


def test_allow_not_exercised_is_recorded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    pytester.runpytest("--layername-report=r.json", "--layername-allow-not-exercised").assert_outcomes(passed=3)
    assert load_report(pytester.path / "r.json")["run"]["allow_not_exercised"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layername-cell=c1"], "--layername-cell and --layername-cell-digest need --layername-report"),
        (["--layername-report=r.json", "--layername-cell=c1"], "--layername-cell and --layername-cell-digest go"),
        (["--layername-report=r.json", "--layername-cell=../x", f"--layername-cell-digest={DIGEST}"], "not a cell"),
        (["--layername-report=r.json", "--layername-cell=c1", "--layername-cell-digest=abc"], "64 lowercase hex"),
    ],
)
def test_cell_options_are_checked(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


# --- from the first moment on, whatever kills the run ------------------------------------------------------------


def _old_complete_report(pytester: pytest.Pytester) -> str:
    """A complete report from an earlier, passing run at r.json: its run id."""
    pytester.makepyfile(test_earlier="def test_ok():\n    pass\n")
    pytester.runpytest_subprocess("--layername-report=r.json", "test_earlier.py").assert_outcomes(passed=1)
    old = load_report(pytester.path / "r.json")
    assert old["complete"] is True
    return old["run"]["run_id"]


@pytest.mark.parametrize(
    "where",
    [
        "conftest:pytest_sessionstart",  # right after start-up, before collection
        "module",  # during collection
        "test:1",  # in the second test, after one finished
    ],
)
def test_a_run_killed_by_sigkill_leaves_an_incomplete_report(pytester: pytest.Pytester, where: str) -> None:
    old_run = _old_complete_report(pytester)
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    if where.startswith("conftest"):
        pytester.makeconftest(f"def pytest_sessionstart(session):\n    {kill}\n")
        body = "def test_a():\n    pass\n"
    elif where == "module":
        body = f"{kill}\n"
    else:
        body = f"def test_a():\n    pass\n\ndef test_b():\n    {kill}\n"
    pytester.makepyfile(test_killed=body)
    result = pytester.runpytest_subprocess("--layername-report=r.json", "test_killed.py")
    assert result.ret == -signal.SIGKILL
    report = load_report(pytester.path / "r.json")
    assert report["complete"] is False and report["incomplete_reason"] == IN_PROGRESS
    assert report["run"]["run_id"] != old_run and report["run"]["end"] is None
    passed = [t["nodeid"].split("::")[1] for t in report["tests"] if t["outcome"] == "passed"]
    assert passed == (["test_a"] if where == "test:1" else [])


def test_a_run_killed_by_a_timeout_thread_leaves_an_incomplete_report(pytester: pytest.Pytester) -> None:
    """pytest-timeout's thread method ends the process with os._exit: the report must still be there."""
    _old_complete_report(pytester)
    pytester.makepyfile(test_timeout="import os\n\ndef test_a():\n    os._exit(1)\n")
    assert pytester.runpytest_subprocess("--layername-report=r.json", "test_timeout.py").ret == 1
    assert load_report(pytester.path / "r.json")["complete"] is False


@pytest.fixture
def _sigint_handled() -> Iterator[None]:
    """Python's own SIGINT handler for the test, as in a terminal (a background job starts with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_while_the_report_is_written_is_an_interruption_not_an_internal_error(
    pytester: pytest.Pytester,
) -> None:
    """A SIGINT that lands in the write (here: right after the rename) takes effect once the write is done."""
    pytester.makeconftest(
        """
        import os, signal
        from pytest_layername.release import report

        real = os.replace
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started ignoring it

        def replace_then_interrupt(src, dst):
            real(src, dst)
            if os.environ.get("INTERRUPTED") is None and report.json.loads(open(dst).read())["tests"]:
                os.environ["INTERRUPTED"] = "1"
                signal.raise_signal(signal.SIGINT)

        report.os.replace = replace_then_interrupt
        """
    )
    pytester.makepyfile(test_a="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest_subprocess("--layername-report=r.json", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert "INTERNALERROR" not in output and "KeyboardInterrupt" in output
    report = load_report(pytester.path / "r.json")  # complete JSON in the schema
    assert report["complete"] is False and "INTERRUPTED" in report["incomplete_reason"]
    assert [p.name for p in pytester.path.glob(".r.json.*.tmp")] == []


def test_write_report_defers_an_interrupt_and_leaves_no_temporary_file(tmp_path, monkeypatch, _sigint_handled):
    path = tmp_path / "r.json"
    write_report(path, {"n": 1})
    real = os.replace

    def replace_then_interrupt(src, dst):
        real(src, dst)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(report_module.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_report(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_report_mode_is_the_junit_xml_mode(pytester: pytest.Pytester, umask: int) -> None:
    pytester.makepyfile(TESTS)
    previous = os.umask(umask)
    try:
        result = pytester.runpytest_subprocess("--layername-report=r.json", "--junitxml=r.xml")
    finally:
        os.umask(previous)
    result.assert_outcomes(passed=3)
    mode = stat.S_IMODE((pytester.path / "r.json").stat().st_mode)
    assert mode == stat.S_IMODE((pytester.path / "r.xml").stat().st_mode) == 0o666 & ~umask


# --- two runs, one report path ----------------------------------------------------------------------------------


def test_a_second_run_on_the_same_report_path_is_refused(pytester: pytest.Pytester) -> None:
    go = pytester.path / "go"
    pytester.makepyfile(
        test_slow=f"""
        import pathlib, time

        def test_waits():
            deadline = time.monotonic() + 120
            while not pathlib.Path({str(go)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        """
    )
    pytester.makepyfile(test_quick="def test_quick():\n    pass\n")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--layername-report=r.json", "test_slow.py"]
    first = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (pytester.path / "r.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        first_run = load_report(pytester.path / "r.json")["run"]["run_id"]
        second = pytester.runpytest_subprocess("--layername-report=r.json", "test_quick.py")
        assert second.ret == pytest.ExitCode.USAGE_ERROR
        second.stderr.fnmatch_lines(
            [f"*report r.json is being written by another run (pid {first.pid}); wait for it or give this run*"]
        )
        assert load_report(pytester.path / "r.json")["run"]["run_id"] == first_run  # untouched by the second
    finally:
        go.touch()
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output
    report = load_report(pytester.path / "r.json")
    assert report["complete"] is True and report["run"]["run_id"] == first_run
    # once the first run is over, the path is free again
    pytester.runpytest_subprocess("--layername-report=r.json", "test_quick.py").assert_outcomes(passed=1)


def test_reports_are_read_from_regular_files_only(tmp_path: Path) -> None:
    from pytest_layername.release.report import ReportError

    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    for name, kind in (("fifo.json", "a FIFO"), ("dir.json", "a directory"), ("zero.json", "a character device")):
        with pytest.raises(ReportError, match=f"is {kind}, not a regular file"):
            load_report(tmp_path / name)
