"""What the installed plugin costs a pytest run that never uses it: wall time and peak memory, as ratios.

A one-test file with no layer-name content runs ``repeats`` times with the plugin and ``repeats`` times
with ``-p no:layername``, alternating so drift hits both alike; the medians give the ratios. Imports no torch.
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
#: the plugin should cost an unrelated run at most this much (ratio of medians minus one)
TARGET = 0.05


def _one_run(directory: Path, plugin: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plain.py"]
    if not plugin:
        command[3:3] = ["-p", "no:layername"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERNAME_") and k != "PYTEST_ADDOPTS"}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}: {error[-2000:]}")
    return {"plugin": plugin, "seconds": seconds, "max_rss_mib": usage.ru_maxrss / 1024}


def measure_startup(repeats: int = 5) -> dict[str, Any]:
    """Alternating runs with and without the plugin; medians and their ratios (plugin / no plugin)."""
    with tempfile.TemporaryDirectory(prefix="layername-startup-") as folder:
        directory = Path(folder)
        (directory / "test_plain.py").write_text(PLAIN_TEST, encoding="utf-8")
        runs = [_one_run(directory, plugin) for _ in range(repeats) for plugin in (True, False)]
    return {"available": True, "repeats": repeats, "runs": runs, **startup_ratios(runs)}


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
        f"A one-test file without layer-name content, {startup['repeats']} runs each way, alternating "
        "(`pytest -q test_plain.py` against `pytest -p no:layername -q test_plain.py`); medians.",
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
