"""What the installed plugin costs a pytest run that never uses it: wall time and peak memory, as ratios.

A one-test file with no layer-name content runs ``repeats`` times with the plugin and ``repeats`` times with
``-p no:layername``, interleaved (each side first in half the pairs) so drift hits both alike; the medians
give the ratios. Peak memory is the child's own ``VmHWM`` (``ru_maxrss`` of a child still counts the parent
it was forked from). Imports no torch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PLAIN_TEST = "def test_plain():\n    assert 1 + 1 == 2\n"
#: ``python -c RUNNER HWM_FILE pytest-args...``: pytest, then the process's peak resident memory (kB)
RUNNER = """import sys, pytest
code = pytest.main(sys.argv[2:])
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
with open(sys.argv[1], "w") as out:
    out.write(peak)
sys.exit(code)
"""
BYTECODE_OFF = "Bytecode cache off (PYTHONDONTWRITEBYTECODE is set): every module compiles from source."
#: the plugin should cost an unrelated run at most this much (ratio of medians minus one)
TARGET = 0.05


def _one_run(directory: Path, plugin: bool) -> dict[str, Any]:
    peak = directory / "peak_kb"
    pytest_args = ["-q", "-p", "no:cacheprovider", *(() if plugin else ("-p", "no:layername")), "test_plain.py"]
    command = [sys.executable, "-c", RUNNER, str(peak), *pytest_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERNAME_") and k != "PYTEST_ADDOPTS"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"pytest {' '.join(pytest_args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return {"plugin": plugin, "seconds": seconds, "max_rss_mib": int(peak.read_text()) / 1024}


def measure_startup(repeats: int = 20) -> dict[str, Any]:
    """Alternating runs with and without the plugin; medians and their ratios (plugin / no plugin)."""
    if not Path("/proc/self/status").is_file():
        return {"available": False, "reason": "peak memory is read from /proc/self/status (Linux only)"}
    with tempfile.TemporaryDirectory(prefix="layername-startup-") as folder:
        directory = Path(folder)
        (directory / "test_plain.py").write_text(PLAIN_TEST, encoding="utf-8")
        orders = [(True, False) if i % 2 == 0 else (False, True) for i in range(repeats)]  # no side always first
        runs = [_one_run(directory, plugin) for order in orders for plugin in order]
    return {
        "available": True,
        "repeats": repeats,
        "bytecode_cache": not os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "runs": runs,
        **startup_ratios(runs),
    }


def startup_ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds and peak RSS with and without the plugin, and plugin / without."""

    def median(plugin: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["plugin"] is plugin)

    out = {}
    for key in ("seconds", "max_rss_mib"):
        on, off = median(True, key), median(False, key)
        out |= {f"{key}_plugin": on, f"{key}_without": off, f"{key}_ratio": on / off}
    return out


def render(startup: dict[str, Any]) -> list[str]:
    """The markdown section of the benchmark report."""
    out = ["## Startup cost of the installed plugin on a run that never uses it", ""]
    if not startup.get("available"):
        return [*out, f"Not measured: {startup.get('reason', 'not run')}.", ""]
    out += [
        f"A one-test file without layer-name content, {startup['repeats']} runs each way, interleaved with each "
        "side first in half the pairs "
        "(`pytest -q test_plain.py` against `pytest -p no:layername -q test_plain.py`); medians. "
        + ("Bytecode cache on." if startup.get("bytecode_cache", True) else BYTECODE_OFF),
        "",
        "| | with plugin | `-p no:layername` | ratio |",
        "|---|---|---|---|",
        f"| wall s | {startup['seconds_plugin']:.3f} | {startup['seconds_without']:.3f} | "
        f"{startup['seconds_ratio']:.3f} |",
        f"| peak RSS MiB | {startup['max_rss_mib_plugin']:.1f} | {startup['max_rss_mib_without']:.1f} | "
        f"{startup['max_rss_mib_ratio']:.3f} |",
        "",
    ]
    worst = max(startup["seconds_ratio"], startup["max_rss_mib_ratio"]) - 1
    verdict = "within" if worst <= TARGET else "**not within**"
    return [*out, f"- worst overhead {worst * 100:+.1f} %, {verdict} the {TARGET * 100:.0f} % target.", ""]
