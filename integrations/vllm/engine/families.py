"""The model families the engine stage starts: tiny configs, weights made by ``transformers``, its outputs.

Each :class:`Family` is a tiny model of one architecture vLLM ships (float32, hidden 128, vocabulary 512)
whose layers call a layer-name op: dense attention (Llama), MoE (Mixtral, Qwen3-MoE), MLA + MoE with a
shared expert (DeepSeek-V2), Mamba2 + attention (GraniteMoeHybrid), and more. :func:`write_model` writes
``config.json`` (completed by ``transformers.AutoConfig.for_model``) and seeded random weights
(``save_pretrained``, safetensors) that vLLM loads with ``load_format="auto"``; :func:`reference_outputs`
is ``transformers``' own forward on the same weights, the ground truth the engine's output is compared
with. Imports neither vLLM nor torch at module level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What every tiny model shares (float32: the engine's and transformers' sums differ by rounding only).
COMMON: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}
#: Weights are drawn with this std instead of transformers' 0.02, so that every layer moves the logits
#: (at 0.02 a layer's output barely shows in the logprobs, and a layer served the wrong state would hide).
INITIALIZER_RANGE = 0.1
SEED = 0


@dataclass(frozen=True)
class Family:
    """One architecture: its ``transformers`` model type, overrides of :data:`COMMON`, and where its
    layer-name ops sit (``inside``: the ``splitting_ops`` that leave them inside the compiled pieces)."""

    name: str
    model_type: str
    architecture: str
    kind: str  # what the family brings: "dense attention", "MoE", ...
    layers: tuple[int, int]  # the two sizes the counts are taken at
    overrides: dict[str, Any] = field(default_factory=dict)
    #: splitting_ops that leave the per-layer ops (KV-cache update, MoE, Mamba) inside the pieces; None:
    #: that split is vLLM's default already or does not exist for this family
    inside: tuple[str, ...] | None = ("vllm::unified_attention_with_output",)
    per_layer: dict[str, Any] = field(default_factory=dict)  # config keys that are lists, one entry per layer

    def config(self, layers: int) -> dict[str, Any]:
        """The full ``config.json`` for ``layers`` layers (transformers' defaults filled in)."""
        from transformers import AutoConfig

        values = {**COMMON, **self.overrides, "num_hidden_layers": layers, "initializer_range": INITIALIZER_RANGE}
        for key, pattern in self.per_layer.items():
            values[key] = [pattern[i % len(pattern)] for i in range(layers)]
        config = AutoConfig.for_model(self.model_type, **values).to_dict()
        config["architectures"] = [self.architecture]
        config.pop("transformers_version", None)
        return config


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("llama", "llama", "LlamaForCausalLM", "dense attention", (8, 16)),
        Family(
            "mixtral", "mixtral", "MixtralForCausalLM", "MoE", (8, 16),
            {"num_local_experts": 4, "num_experts_per_tok": 2},
        ),
        Family(
            "deepseek_v2", "deepseek_v2", "DeepseekV2ForCausalLM", "MLA attention + MoE with a shared expert", (4, 8),
            {"kv_lora_rank": 512, "q_lora_rank": None, "qk_rope_head_dim": 64, "qk_nope_head_dim": 32,
             "v_head_dim": 32, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
             "first_k_dense_replace": 1, "moe_intermediate_size": 64, "topk_method": "greedy", "n_group": 1,
             "topk_group": 1, "num_key_value_heads": 4, "rope_scaling": None},
            inside=("vllm::unified_mla_attention_with_output",),
        ),
        Family(
            "granitemoehybrid", "granitemoehybrid", "GraniteMoeHybridForCausalLM", "Mamba2 + attention", (4, 8),
            {"mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_n_groups": 1, "mamba_d_conv": 4,
             "mamba_expand": 1, "mamba_chunk_size": 64, "num_local_experts": 0, "shared_intermediate_size": 256,
             "position_embedding_type": "nope"},
            per_layer={"layer_types": ["mamba", "attention"]},
        ),
        Family(
            "qwen3_moe", "qwen3_moe", "Qwen3MoeForCausalLM", "MoE with QK-norm", (4, 8),
            {"head_dim": 32, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
             "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True},
        ),
        Family(
            "mistral_sliding", "mistral", "MistralForCausalLM", "sliding-window attention", (4, 8),
            {"sliding_window": 4, "head_dim": 32},
        ),
        Family(
            "qwen3_next", "qwen3_next", "Qwen3NextForCausalLM", "gated DeltaNet (linear attention) + attention",
            (4, 8),
            {"head_dim": 32, "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 32,
             "linear_value_head_dim": 32, "linear_conv_kernel_dim": 4, "num_experts": 4, "num_experts_per_tok": 2,
             "moe_intermediate_size": 64, "shared_expert_intermediate_size": 64, "decoder_sparse_step": 1,
             "mlp_only_layers": []},
            per_layer={"layer_types": ["linear_attention", "full_attention"]},
        ),
    )
}  # fmt: skip


def write_model(folder: Path, family: Family, layers: int) -> Path:
    """``config.json`` and seeded random weights (safetensors) of ``family`` at ``layers`` layers in ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(family.config(layers), indent=1), encoding="utf-8")
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def reference_outputs(folder: Path, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    """transformers' greedy continuation of ``prompt`` on the saved weights (a full forward per token, no KV
    cache): per generated position the token and the log-probabilities of the whole vocabulary, and each
    prompt token's log-probability given the tokens before it."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    tokens, logprobs = [], []
    with torch.no_grad():
        prompt_logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
        for _ in range(max_tokens):
            step = torch.log_softmax(model(ids).logits[0, -1].double(), -1)
            token = int(step.argmax())
            tokens.append(token)
            logprobs.append(step.tolist())
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    prompt_rows = [prompt_logprobs[i - 1, prompt[i]].item() for i in range(1, len(prompt))]
    return {"prompt": prompt, "tokens": tokens, "logprobs": logprobs, "prompt_logprobs": prompt_rows}
