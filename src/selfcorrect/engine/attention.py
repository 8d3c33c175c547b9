"""SDPA attention that hands grouped key/value heads to torch as they are (no copy of the KV cache per layer)."""

from __future__ import annotations


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, except that grouped key/value heads reach torch as they are under a mask.

    transformers repeats GQA's key/value heads whenever a padding mask is given (CUDA kernels would otherwise
    fall back to the math kernel), i.e. copies the whole KV cache in every layer; torch's CPU kernels take the
    heads grouped, with or without a mask, and give the same numbers.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or query.shape[1] == key.shape[1] or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                           scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model) -> None:
    """Switch a model that uses transformers' SDPA attention to ``grouped_sdpa`` (same numbers, no KV copies)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register("grouped_sdpa", grouped_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register("grouped_sdpa", sdpa_mask)
    model.set_attn_implementation("grouped_sdpa")
