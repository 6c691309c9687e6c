"""One cold start of the 4-layer reference decoder per mode and test run, for the tests that read one.

The warm-start and cache-fault tests each began with the same cold start (7 in a run, 10-20 s each on 2
cores). :func:`decoder_cold` makes it once per mode for the whole run, whichever xdist worker asks first
(the others wait on a lock and read it), with its output for the ground-truth check and its
``torch.compiler.save_cache_artifacts()`` file. A test never writes to its cache: it clones it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_layername.compile.process_start import ProcessStart
from pytest_layername.compile.reference_truth import reference_truth

LAYERS = 4


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_root(factory: pytest.TempPathFactory) -> Path:
    """A directory of this test run that every xdist worker sees (their base temps are its children)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def decoder_cold(compile_cache: Any, mode: str, factory: pytest.TempPathFactory) -> ProcessStart:
    """The run's cold start of the decoder in ``mode`` on an empty cache (``.cache_dir``, never written
    after it), made by the first test that asks, its output checked against the ground truth; it is also
    recorded in the asking test's report."""
    folder = run_root(factory) / f"shared-cold-decoder-{LAYERS}-{mode}"
    folder.mkdir(exist_ok=True)
    saved = folder / "start.pickle"
    with _locked(folder / "lock"):
        if saved.exists():
            start: ProcessStart = pickle.loads(saved.read_bytes())
            compile_cache.starts.append(start)
        else:
            start = compile_cache.start_reference(
                "decoder", LAYERS, mode, label="cold (shared by the run)", cache_dir=folder / "cache",
                save_cache_artifacts=True, return_output=True,
            )  # fmt: skip
            saved.write_bytes(pickle.dumps(start))
    truth = reference_truth(model="decoder", layers=LAYERS, mode=mode, impl=compile_cache.impl)
    problem = truth(start)
    assert problem is None, f"the shared cold start in {mode} mode: {problem}"
    return start
