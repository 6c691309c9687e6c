"""What a user reads when a compile test fails: torch's reasons in the message, a trace to open, clean logs."""

from __future__ import annotations

import pytest

LOGGING_TEST = """
    import logging
    import torch

    def test_logs():
        fn = torch.compile(lambda x: x * x.sum().item(), backend="eager")  # .item(): torch logs a warning
        fn(torch.ones(3))
        logging.getLogger("user").warning("user warning: deliberately logged")
        assert False
"""


def _captured_log(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "Captured log call" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("===", "---", "___")))
    return lines[start + 1 : end]


def test_captured_logs_keep_warnings_and_drop_torch_trace_records(pytester: pytest.Pytester) -> None:
    """The plugin, once used, keeps torch's empty trace records out; torch's warning and the user's stay."""
    pytester.makepyfile(LOGGING_TEST)
    active = _captured_log(pytester.runpytest_subprocess("-p", "no:cacheprovider", "--layername-mode=string"))
    assert any("WARNING  user:" in line and "deliberately logged" in line for line in active), active
    assert any("WARNING  torch." in line and "Tensor.item()" in line for line in active), active
    assert not [line for line in active if "torch.__trace" in line], active
    # the control: the same run with the plugin unused (inert) shows torch's records, as torch does under pytest
    inert = _captured_log(pytester.runpytest_subprocess("-p", "no:cacheprovider"))
    assert len([line for line in inert if "torch.__trace" in line]) > 10, inert
    assert any("deliberately logged" in line for line in inert)
