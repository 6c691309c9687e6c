"""A fake vLLM op still taking ``layer_name: str``, for the audit's negative control (``--import fake_str_op``).

Registered in vLLM's own namespace, as a new op in a vLLM change would be; never imported by the tests' process.
"""

from __future__ import annotations

import torch

OP = "vllm::layername_fake_str_op"

_LIBRARY = torch.library.Library("vllm", "FRAGMENT")
_LIBRARY.define("layername_fake_str_op(Tensor x, str layer_name) -> Tensor")
_LIBRARY.impl("layername_fake_str_op", lambda x, layer_name: x.clone(), "CompositeExplicitAutograd")
