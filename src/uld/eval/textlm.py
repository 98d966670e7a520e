"""A raw-text model interface for the text benchmarks (MUSE, copyright): no prompt format inside.

Three requests, the ones lm-evaluation-harness's model interface makes, batched:

- `token_logprobs(texts)`: log p(x_t | x_<t) of every token of each text (the "rolling"
  log-likelihood): the first token is conditioned on the tokenizer's BOS token when it has one
  (as `tokenizer(text)` adds it), otherwise it is not scored. Shape per text: (T,).
- `loglikelihood(contexts, continuations)`: sum of log p over the continuation's tokens given the
  context, and whether greedy decoding would have produced them. Context and continuation are
  tokenised separately and joined (the continuation's first token is always scored).
- `generate_until(prompts, max_new_tokens, stop)`: greedy continuation of each raw prompt (BOS
  added as `tokenizer(prompt)` adds it), decoded with special tokens dropped and cut before the
  first stop string.

`HFTextLM` implements it for any causal LM callable as `model(input_ids=, attention_mask=,
position_ids=) -> .logits` with a `generate` method: plain transformers models, peft models and
`ULDForCausalLM` alike. Scoring pads on the right with explicit position ids, generation pads on
the left, so an item's values do not depend on the items that share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from uld.eval.lm import (
    HFLanguageModel,
    LoglikelihoodRequest,
    ProgressFn,
    batches_by_length,
    cut_at_stops,
)


class TextLM(Protocol):
    def token_logprobs(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[np.ndarray]: ...

    def loglikelihood(
        self, contexts: Sequence[str], continuations: Sequence[str], progress: ProgressFn | None = None
    ) -> list[tuple[float, bool]]: ...

    def generate_until(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (), progress: ProgressFn | None = None
    ) -> list[str]: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


class HFTextLM:
    """`TextLM` over a causal LM and its tokenizer, batched.

    `max_length` caps a scored sequence: longer texts are scored in consecutive windows, each
    window's first token conditioned on the previous window's last token (lm-evaluation-harness's
    rolling windows with one token of context).
    """

    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int = 2048, device: str | None = None):
        # Scoring is the model interface's (right padding, explicit positions, batch-invariant);
        # this class adds the text benchmarks' tokenisation, windows and generation rules.
        self.lm = HFLanguageModel(model, tokenizer, batch_size=batch_size, device=device, max_length=max_length)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.device, self.pad_id = self.lm.device, self.lm.pad_id

    # -- tokenisation ---------------------------------------------------------------------

    def encode(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        """`text` cut to its first `max_tokens` tokens as muse_bench cuts VerbMem's true
        continuation: tokenised *with* special tokens (a BOS counts as one of them), cut,
        decoded with special tokens dropped."""
        return self.tokenizer.decode(self.encode(text)[:max_tokens], skip_special_tokens=True)

    # -- scoring --------------------------------------------------------------------------

    def _score(self, seqs: list[list[int]], starts: list[int], progress: ProgressFn | None) -> list[np.ndarray]:
        """(log-probs, greedy) of tokens seqs[i][starts[i]:] (each given all tokens before it),
        shape (2, T_i); the first token has no context and is never scored."""
        starts = [max(1, s) for s in starts]
        reqs = [LoglikelihoodRequest(tuple(q[:s]), tuple(q[s:])) for q, s in zip(seqs, starts, strict=True)]
        todo = [i for i, r in enumerate(reqs) if r.continuation]
        scored = self.lm.loglikelihood([reqs[i] for i in todo], progress=progress)
        out = [np.zeros((2, 0))] * len(seqs)
        for i, sc in zip(todo, scored, strict=True):
            out[i] = np.stack([sc.logprob, sc.greedy])
        return out

    def _windows(self, ids: list[int]) -> list[tuple[list[int], int]]:
        """(sequence, first scored position) windows scoring ids[1:] once each: token 0 is the
        BOS, or the text's first token, which has no context and is not scored."""
        out, pos = [], 1
        while pos < len(ids):
            end = min(len(ids), pos + self.max_length - 1)
            out.append((ids[pos - 1 : end], 1))
            pos = end
        return out

    def token_logprobs(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[np.ndarray]:
        enc = [self.encode(t) for t in texts]
        pieces, owner = [], []
        for i, ids in enumerate(enc):
            for w in self._windows(ids):
                pieces.append(w)
                owner.append(i)
        scored = self._score([p[0] for p in pieces], [p[1] for p in pieces], None)
        out: list[list[np.ndarray]] = [[] for _ in texts]
        for i, s in zip(owner, scored, strict=True):
            out[i].append(s[0])
        if progress:
            progress(len(texts))
        return [np.concatenate(o) if o else np.zeros(0) for o in out]

    def loglikelihood(
        self, contexts: Sequence[str], continuations: Sequence[str], progress: ProgressFn | None = None
    ) -> list[tuple[float, bool]]:
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
        seqs, starts = [], []
        for c, x in zip(contexts, continuations, strict=True):
            ci, xi = self.encode(c), self.encode(x, special=False)
            if not ci:  # no BOS and no context: condition on EOS, as lm-evaluation-harness does
                ci = [self.tokenizer.eos_token_id]
            keep = max(1, self.max_length - len(xi))
            ci = ci[-keep:]
            seqs.append(ci + xi)
            starts.append(len(ci))
        scored = self._score(seqs, starts, progress)
        return [(float(s[0].sum()), bool(s[1].all())) for s in scored]

    # -- generation -----------------------------------------------------------------------

    def generate_until(
        self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (), progress: ProgressFn | None = None
    ) -> list[str]:
        import torch

        from uld.data.collate import left_pad

        enc = [self.encode(p) for p in prompts]
        eos = self.tokenizer.eos_token_id
        out: list[str | None] = [None] * len(enc)
        for idx in batches_by_length([len(e) for e in enc], self.batch_size):
            ids, mask = left_pad([enc[i] for i in idx], self.pad_id)
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_new_tokens,
                    do_sample=False, num_beams=1, pad_token_id=self.pad_id, eos_token_id=eos,
                )
            new = gen[:, ids.shape[1]:].cpu().tolist()
            for row, i in enumerate(idx):
                toks = new[row]
                if eos is not None and eos in toks:
                    toks = toks[: toks.index(eos)]
                text = self.tokenizer.decode(toks, skip_special_tokens=True, clean_up_tokenization_spaces=True)
                out[i] = cut_at_stops(text, stop)
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]
