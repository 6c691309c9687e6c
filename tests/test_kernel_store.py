"""The run's kernel store (compile.kernel_store): shared kernels skip the C++ compiler, and change no count.

Ground truth is torch's: the same cold start with and without a seeded store gives the same FX-graph and
AOT-autograd counts and the same output; the compiler calls are counted by a ``g++`` wrapper first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from pytest_layername.compile import kernel_store
from pytest_layername.compile.process_start import ProcessStartError, spawn_process

TARGET = "pytest_layername.compile.process_start:start_reference"


def _compiler_that_counts(tmp_path: Path) -> Path:
    """A ``g++`` first on PATH that logs each call, then runs the real one; the log's path."""
    log, folder = tmp_path / "compiler-calls", tmp_path / "bin"
    real = shutil.which("g++")
    assert real, "no g++ on PATH"
    folder.mkdir()
    (folder / "g++").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n', encoding="utf-8")
    (folder / "g++").chmod(0o755)
    return log


def _built(log: Path) -> list[str]:
    """The kernel libraries the compiler built (not its version queries or header preprocessing)."""
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [Path(m.group(1)).name for line in lines if (m := re.search(r"-o (\S+\.so)\b", line))]


def test_a_seeded_start_compiles_only_what_the_store_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Torch's counts are the ground truth (equal with and without shared kernels); the compiler calls are
    counted by a wrapper. Negative control: the one kernel taken out of the store is compiled again."""
    log = _compiler_that_counts(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(kernel_store.ENV, str(store))
    kwargs = {"model": "decoder", "layers": 2, "mode": "opaque", "compiler": "inductor"}

    first = spawn_process(TARGET, kwargs, cache_dir=tmp_path / "first", warm=True).finish()
    built = sorted(_built(log))
    assert built, "the first start compiled no kernel"
    assert sorted(p.name for p in store.glob(kernel_store.KERNELS)) == built  # what it built, shared
    taken = next(store.glob(kernel_store.KERNELS))
    taken.unlink()
    log.unlink()
    second = spawn_process(TARGET, kwargs, cache_dir=tmp_path / "second", warm=True).finish()
    assert _built(log) == [taken.name]
    assert second.stats.counts() == first.stats.counts()  # torch's FX-graph and AOT-autograd misses, unchanged
    assert second.result == first.result
    assert taken.exists()  # added back by the second start


def test_a_start_that_did_not_finish_adds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv(kernel_store.ENV, str(store))
    cache = tmp_path / "cache"
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "cabc.so").write_bytes(b"half a library")  # what a killed compiler leaves
    running = spawn_process(TARGET, {"model": "nonexistent"}, cache_dir=cache, warm=True)
    with pytest.raises(ProcessStartError):
        running.finish()
    assert not list(store.glob(kernel_store.KERNELS))
    assert kernel_store.harvest(cache) == 1  # a finished one would have added it
    assert (store / "ab" / "cabc.so").read_bytes() == b"half a library"
    assert not [p for p in store.rglob("*") if p.name.startswith(".")]  # no temporary left behind


def test_without_a_store_nothing_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernel_store.ENV, raising=False)
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "cabc.so").write_bytes(b"x")
    assert kernel_store.store() is None
    assert kernel_store.seed(tmp_path / "other") == kernel_store.harvest(tmp_path) == 0
    assert not (tmp_path / "other").exists()


def test_the_benchmark_never_uses_the_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``layername bench`` times cold compiles: it drops the store before starting anything."""
    from pytest_layername.bench import report
    from pytest_layername.cli import bench, main

    monkeypatch.setenv(kernel_store.ENV, str(tmp_path))
    seen = []

    def run_cells(*args: object, **kwargs: object) -> None:
        seen.append(os.environ.get(kernel_store.ENV))
        raise bench.BenchError("stopped here")

    monkeypatch.setattr(bench, "run_cells", run_cells)
    monkeypatch.setattr(report, "require_matplotlib", lambda: None)
    assert main(["bench", "--no-suite", "--no-startup", "--out-dir", str(tmp_path / "out")]) == 1
    assert seen == [None]
