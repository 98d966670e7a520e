"""The narrow model interface the evaluator uses (STYLE §8): per-item answer scores + generation.

`Scorer` is all the evaluator needs. `CausalLMScorer` implements it for any causal LM callable as
`model(input_ids=, attention_mask=, position_ids=) -> .logits` with a `generate(...)` method:
plain transformers models, peft models and `ULDForCausalLM` (whose logits are the combined
target - alpha * assistant logits). Tests can implement `Scorer` with a fake.

Batch-size invariance: scoring pads on the right and passes explicit position ids (0, 1, ... on
real tokens), generation pads on the left and lets `generate` derive position ids from the
attention mask, so an item's values do not depend on which items share its batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from uld.data.prompts import IGNORE_INDEX, PromptFormat, encode_qa

ProgressFn = Callable[[int], None]
"""Called with the number of items just finished (for progress bars)."""


@dataclass
class TokenStats:
    """Per-token values of one scored answer, each of shape (T,), T = answer tokens (incl. EOS).

    `logprob[t]` = log p(answer_t | prompt, answer_<t); `mu` / `sigma2` are the mean / variance of
    log p(z) under z ~ p(. | prefix) (only filled when asked for, for Min-K%++).
    """

    logprob: np.ndarray
    mu: np.ndarray | None = None
    sigma2: np.ndarray | None = None

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood l(answer)."""
        return float(-self.logprob.mean())


class Scorer(Protocol):
    def token_stats(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        vocab_stats: bool = False,
        progress: ProgressFn | None = None,
    ) -> list[TokenStats]: ...

    def generate(
        self, questions: Sequence[str], max_new_tokens: int, progress: ProgressFn | None = None
    ) -> list[str]: ...


def answer_nll(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
    """Mean per-token NLL of each answer given its question, shape (N,)."""
    return np.array([s.nll for s in scorer.token_stats(questions, answers, progress=progress)])


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class CausalLMScorer:
    """`Scorer` over a causal LM + tokenizer + `PromptFormat`, batched and padded."""

    def __init__(
        self,
        model,
        tokenizer,
        fmt: PromptFormat | None = None,
        batch_size: int = 8,
        max_length: int = 512,
        device: str | None = None,
    ):
        import torch

        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.fmt = fmt or PromptFormat()
        self.batch_size = batch_size
        self.max_length = max_length
        if device is None:
            try:
                device = str(next(model.parameters()).device)
            except (StopIteration, AttributeError, TypeError):
                device = "cpu"
        self.device = torch.device(device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pass_positions = _accepts(model.forward if hasattr(model, "forward") else model, "position_ids")

    # -- scoring --------------------------------------------------------------------------

    def token_stats(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        vocab_stats: bool = False,
        progress: ProgressFn | None = None,
    ) -> list[TokenStats]:
        """Score each (question, answer) pair; prompt and answer are tokenised separately
        (`encode_qa`), so the answer's first token is always scored."""
        import torch

        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions for {len(answers)} answers")
        enc = [encode_qa(self.tokenizer, q, a, self.fmt, self.max_length) for q, a in zip(questions, answers, strict=True)]
        out: list[TokenStats | None] = [None] * len(enc)
        for idx in _batches_by_length([len(e.input_ids) for e in enc], self.batch_size):
            width = max(len(enc[i].input_ids) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # right padding: real tokens at positions 0..L-1
                n = len(enc[i].input_ids)
                ids[row, :n] = torch.tensor(enc[i].input_ids)
                labels[row, :n] = torch.tensor(enc[i].labels)
                mask[row, :n] = 1
            logits = self._logits(ids, mask)  # (B, T, V)
            # position t predicts token t+1 (ops.token_nll's convention)
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
            target = labels[:, 1:].to(logp.device)
            scored = target != IGNORE_INDEX
            tok_lp = logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            # One device-to-host copy per batch, not one per row and quantity.
            tok_lp, scored = tok_lp.double().cpu().numpy(), scored.cpu().numpy()
            if vocab_stats:
                p = logp.exp()
                mu = (p * logp).sum(-1)
                sigma2 = (p * logp.square()).sum(-1) - mu.square()
                mu, sigma2 = mu.double().cpu().numpy(), sigma2.double().cpu().numpy()
            for row, i in enumerate(idx):
                m = scored[row]
                out[i] = TokenStats(
                    logprob=tok_lp[row][m],
                    mu=mu[row][m] if vocab_stats else None,
                    sigma2=sigma2[row][m] if vocab_stats else None,
                )
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]

    def _logits(self, ids, mask):
        import torch

        ids, mask = ids.to(self.device), mask.to(self.device)
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if self._pass_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
        with torch.no_grad():
            return self.model(**kwargs).logits

    # -- generation -----------------------------------------------------------------------

    def generate(
        self, questions: Sequence[str], max_new_tokens: int, progress: ProgressFn | None = None
    ) -> list[str]:
        """Greedy continuation of each question's prompt, batched with left padding; the text up
        to the first EOS, special tokens dropped, surrounding whitespace stripped."""
        import torch

        prompts = [self.fmt.prompt_ids(self.tokenizer, q) for q in questions]
        eos = self.tokenizer.eos_token_id
        out: list[str | None] = [None] * len(prompts)
        for idx in _batches_by_length([len(p) for p in prompts], self.batch_size):
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(prompts[i])
                ids[row, width - n :] = torch.tensor(prompts[i])
                mask[row, width - n :] = 1
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.pad_id,
                    eos_token_id=eos,
                )
            new = gen[:, width:].cpu().tolist()
            for row, i in enumerate(idx):
                toks = new[row]
                if eos is not None and eos in toks:
                    toks = toks[: toks.index(eos)]
                out[i] = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]
