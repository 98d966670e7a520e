"""The miniature Llama of the built-in study (`uld demo`) and of the performance benchmarks."""

from __future__ import annotations


def miniature_llama(tokenizer, hidden: int, layers: int, intermediate: int, heads: int, max_positions: int):
    """A randomly initialised Llama over `tokenizer` (its size and special ids), untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    ))
