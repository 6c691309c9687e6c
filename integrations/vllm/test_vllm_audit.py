"""The session's audit command against the committed baseline: clean as committed, and a new op taking
``layer_name: str`` in vLLM's namespace fails it, naming the op."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pins import HERE, audit_args

pytest.importorskip("vllm", reason="needs vLLM (nox -s vllm)")


def audit(*extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest_layername", *audit_args(), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)


FAKE_OP = "vllm::layername_fake_str_op"  # fake_str_op.OP (not imported here: it would register the op)


def test_a_new_str_op_fails_the_baseline_naming_it():
    done = audit("--import", "fake_str_op")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"NEW (not in the baseline, fails): {FAKE_OP}: argument 'layer_name' is str" in done.stdout
    assert "0 gone" in done.stdout
