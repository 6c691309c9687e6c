"""The run's kernel store (compile.kernel_store): shared kernels skip the C++ compiler, and change no count.

Ground truth is torch's: the same cold start with and without a seeded store gives the same FX-graph and
AOT-autograd counts and the same output; the compiler calls are counted by a wrapper named in ``CXX``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from pytest_layername.compile import kernel_store
from pytest_layername.compile.process_start import ProcessStartError, spawn_process
from pytest_layername.core.fresh_interpreter import SWITCH

TARGET = "pytest_layername.compile.process_start:start_reference"


def _compiler_that_counts(tmp_path: Path) -> tuple[Path, Path]:
    """A ``g++`` that logs each call to a file, then runs the real one."""
    log, wrapper = tmp_path / "compiler-calls", tmp_path / "counting-g++"
    real = shutil.which("g++")
    assert real, "no g++ on PATH"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper, log


def _calls(log: Path) -> int:
    """Compiler calls that built a kernel library (not its version queries or header preprocessing)."""
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return sum(1 for line in lines if re.search(r"-o \S+\.so\b", line))


def test_a_seeded_start_skips_the_compiler_and_counts_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper, log = _compiler_that_counts(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("CXX", str(wrapper))
    monkeypatch.setenv(SWITCH, "exec")  # CXX is read when inductor's config is imported: each start exec'd
    monkeypatch.setenv(kernel_store.ENV, str(store))
    kwargs = {"model": "decoder", "layers": 3, "mode": "opaque", "compiler": "inductor"}

    first = spawn_process(TARGET, kwargs, cache_dir=tmp_path / "first").finish()
    built = _calls(log)
    assert built > 0, "the first start compiled no kernel"
    assert sorted(p.name for p in store.glob(kernel_store.KERNELS)) == sorted(
        p.name for p in (tmp_path / "first").glob(kernel_store.KERNELS)
    )
    second = spawn_process(TARGET, kwargs, cache_dir=tmp_path / "second").finish()
    assert _calls(log) == built, "a start seeded with every kernel called the compiler again"
    assert second.stats.counts() == first.stats.counts()  # torch's FX-graph and AOT-autograd misses, unchanged
    assert second.result == first.result

    monkeypatch.delenv(kernel_store.ENV)  # negative control: without the store the third start compiles again
    spawn_process(TARGET, kwargs, cache_dir=tmp_path / "third").finish()
    assert _calls(log) > built


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
