"""Tiny models and tokenizers built on the spot, for tests and examples (no downloads)."""

from __future__ import annotations

import functools

SAMPLE_TEXTS = [
    "[INST] Where was the author born? [/INST] The author was born in Paris.",
    "[INST] What genre does she write? [/INST] She writes science fiction novels.",
    "[INST] Who was his father? [/INST] His father was a carpenter in Lima.",
    "[INST] Name one of her books. [/INST] One of her books is The Silent River.",
    "[INST] Which award did he win? [/INST] He won the Golden Quill award in 1999.",
    "The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9.",
]


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on a few sentences (cached per process)."""
    from uld.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(SAMPLE_TEXTS * 4, vocab_size=vocab_size)


def tiny_llama(vocab_size: int = 320, num_layers: int = 4, hidden: int = 32, seed: int = 0):
    """A randomly initialised Llama with a handful of parameters, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


# Tiny configs of the decoder families the assistant is tested on (vocab 320, 4 blocks).
FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "phi3", "qwen2")


def tiny_family_config(name: str, vocab_size: int = 320):
    """A 4-block config of family `name` (one of `FAMILIES`), ids bos=1, eos=2, pad=0."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    attn = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)
    configs = {
        "llama": lambda: tf.LlamaConfig(**attn, num_key_value_heads=2, **common),
        "mistral": lambda: tf.MistralConfig(**attn, num_key_value_heads=2, sliding_window=8, **common),
        "qwen2": lambda: tf.Qwen2Config(**attn, num_key_value_heads=2, **common),
        "phi3": lambda: tf.Phi3Config(**attn, num_key_value_heads=2, **common),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**attn, **common),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=4, n_head=4, **common),
    }
    return configs[name]()


def tiny_family(name: str, seed: int = 0):
    """A randomly initialised tiny model of family `name`, in eval mode."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(tiny_family_config(name)).eval()
