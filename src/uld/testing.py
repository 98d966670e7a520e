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


class FakeLM:
    """A `uld.eval.lm.LanguageModel` with no network, for fast tests of evaluation tasks.

    The next-token distribution depends only on the previous token: row `prev` of a fixed
    (V, V) table of log-probabilities (random with `seed`, or given), so every value a task
    computes can be worked out by hand from `table`. Greedy generation follows the argmax;
    sampling draws from the row with a `numpy` generator seeded by the request's seed.
    """

    def __init__(self, tokenizer, table=None, seed: int = 0, max_length: int | None = None):
        import numpy as np

        self.tokenizer = tokenizer
        self.max_length = max_length
        if table is None:
            from scipy.special import log_softmax

            v = len(tokenizer)
            table = log_softmax(np.random.default_rng(seed).normal(size=(v, v)) * 3.0, axis=-1)
        self.table = np.asarray(table, dtype=np.float64)

    def loglikelihood(self, requests, vocab_stats: bool = False, progress=None):
        import numpy as np

        from uld.eval.lm import TokenScores

        out = []
        for r in requests:
            seq, c = list(r.context) + list(r.continuation), len(r.context)
            rows = self.table[seq[c - 1 : -1]]  # (T, V): the distribution before each continuation token
            tok = np.array(seq[c:])
            lp = rows[np.arange(len(tok)), tok]
            p = np.exp(rows)
            mu = (p * rows).sum(-1)
            out.append(TokenScores(
                logprob=lp,
                greedy=rows.argmax(-1) == tok,
                mu=mu if vocab_stats else None,
                sigma2=(p * rows**2).sum(-1) - mu**2 if vocab_stats else None,
            ))
            if progress:
                progress(1)
        return out

    def loglikelihood_rolling(self, texts, progress=None):
        from uld.eval.lm import LoglikelihoodRequest

        tok = self.tokenizer
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        reqs = [LoglikelihoodRequest((prefix,), tuple(tok(t, add_special_tokens=False)["input_ids"])) for t in texts]
        return self.loglikelihood(reqs, progress=progress)

    def generate_until(self, requests, progress=None):
        import numpy as np

        from uld.eval.lm import cut_at_stops

        eos = self.tokenizer.eos_token_id
        out = []
        for r in requests:
            r.check()
            rng = np.random.default_rng(r.seed)
            prev, new = r.context[-1], []
            for _ in range(r.max_new_tokens):
                row = self.table[prev]
                if r.do_sample:
                    p = np.exp(row / r.temperature)
                    prev = int(rng.choice(len(p), p=p / p.sum()))
                else:
                    prev = int(row.argmax())
                if prev == eos:
                    break
                new.append(prev)
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                if any(s and s in text for s in r.until):
                    break
            out.append(cut_at_stops(self.tokenizer.decode(new, skip_special_tokens=True), r.until).strip())
            if progress:
                progress(1)
        return out
