"""The engine's output against transformers' on the same weights: greedy tokens equal, log-probabilities close.

The reference (``families.reference_outputs``) is computed by ``transformers`` from the saved weights,
never by vLLM, so no start, cache or layer-name implementation can bend it. Imports neither vLLM nor torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Largest |engine - transformers| accepted on a log-probability. Both run float32; they sum in different
#: orders (vLLM's fused CPU kernels, paged KV cache and chunked prefill against transformers' eager maths),
#: which the tiny models here put at 1e-6 to 4e-6 (measured: every family, both modes, cold and warm; the
#: engine table prints each start's largest). A layer served another layer's state moves them by 1e-2 or
#: more (the negative controls print theirs), so 1e-4 sits two orders of magnitude from either side.
TOLERANCE = 1e-4


class GroundTruthMismatch(AssertionError):
    """The engine's output differs from transformers' beyond :data:`TOLERANCE`, or its greedy tokens differ."""


def compare(result: dict[str, Any], reference: dict[str, Any], where: str) -> dict[str, float]:
    """Check one start's ``result`` (``vllm_start.start_engine``) against ``reference``; ``where`` names the
    family, mode and start in the message. Returns the largest deltas (generated and prompt positions)."""
    __tracebackhide__ = True
    problems = []
    generated = 0.0
    for position, (token, expected) in enumerate(zip(result["tokens"], reference["tokens"], strict=True)):
        top = result["logprobs"][position]
        row = reference["logprobs"][position]
        deltas = {int(t): abs(value - row[int(t)]) for t, value in top.items()}
        worst = max(deltas, key=deltas.__getitem__)
        generated = max(generated, deltas[worst])
        if token != expected:
            problems.append(
                f"generated token {position}: greedy token {token}, transformers {expected} "
                f"(logprob {top.get(str(token)):.6f} vs transformers' {row[expected]:.6f} for its token)"
            )
        elif deltas[worst] > TOLERANCE:
            problems.append(
                f"generated token {position}: logprob of token {worst} is {top[str(worst)]:.7f}, transformers "
                f"{row[worst]:.7f} (|delta| {deltas[worst]:.2e} > {TOLERANCE:.0e})"
            )
    prompt = 0.0
    prompt_rows = zip(result["prompt_logprobs"], reference["prompt_logprobs"], strict=True)
    for position, (top, expected) in enumerate(prompt_rows, 1):
        token = str(reference["prompt"][position])
        delta = abs(top[token] - expected)
        prompt = max(prompt, delta)
        if delta > TOLERANCE and len(problems) < 8:
            problems.append(
                f"prompt token {position}: logprob {top[token]:.7f}, transformers {expected:.7f} "
                f"(|delta| {delta:.2e} > {TOLERANCE:.0e})"
            )
    if problems:
        raise GroundTruthMismatch(f"{where}: differs from transformers on the same weights: " + "; ".join(problems))
    return {"generated": generated, "prompt": prompt}


def truth_check(reference: dict[str, Any]) -> Callable[[Any], str | None]:
    """A fault attempt's ground-truth check (:data:`pytest_layername.compile.cache_faults.Truth`): None when the
    start's output is transformers', else what differs."""

    def check(start: Any) -> str | None:
        try:
            compare(start.result, reference, f"{start.label} start")
        except GroundTruthMismatch as mismatch:
            return str(mismatch)
        return None

    return check
