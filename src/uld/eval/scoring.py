"""Question-shaped helpers over the model interface (`uld.eval.lm`), for QA evaluation.

`CausalLMScorer` = a `HFLanguageModel` + a `PromptFormat` + a QA length limit: it scores answers
given questions (`token_stats`) and generates answers (`generate`) with uld's tokenisation rule
(prompt and answer tokenised separately, so the answer's first token is always scored). Tasks
that need other requests use its `lm` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from uld.data.prompts import PromptFormat, encode_qa
from uld.eval.lm import (
    GenerationRequest,
    HFLanguageModel,
    LoglikelihoodRequest,
    ProgressFn,
    TokenScores,
)

TokenStats = TokenScores
"""Per-token values of one scored answer (the model interface's `TokenScores`)."""


class Scorer(Protocol):
    def token_stats(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        vocab_stats: bool = False,
        progress: ProgressFn | None = None,
    ) -> list[TokenScores]: ...

    def generate(
        self, questions: Sequence[str], max_new_tokens: int, progress: ProgressFn | None = None
    ) -> list[str]: ...


def answer_nll(scorer: Scorer, questions: Sequence[str], answers: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
    """Mean per-token NLL of each answer given its question, shape (N,)."""
    return np.array([s.nll for s in scorer.token_stats(questions, answers, progress=progress)])


class CausalLMScorer:
    """QA scoring and generation over a causal LM + tokenizer + `PromptFormat`, batched."""

    def __init__(
        self,
        model,
        tokenizer,
        fmt: PromptFormat | None = None,
        batch_size: int = 8,
        max_length: int = 512,
        device: str | None = None,
    ):
        self.lm = HFLanguageModel(model, tokenizer, batch_size=batch_size, device=device)
        self.model, self.tokenizer = model, tokenizer
        self.fmt = fmt or PromptFormat()
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = self.lm.device

    def token_stats(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        vocab_stats: bool = False,
        progress: ProgressFn | None = None,
    ) -> list[TokenScores]:
        """Score each (question, answer) pair; prompt and answer are tokenised separately
        (`encode_qa`), so the answer's first token is always scored."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions for {len(answers)} answers")
        reqs = []
        for q, a in zip(questions, answers, strict=True):
            enc = encode_qa(self.tokenizer, q, a, self.fmt, self.max_length)
            reqs.append(LoglikelihoodRequest(tuple(enc.input_ids[: enc.prompt_len]), tuple(enc.input_ids[enc.prompt_len :])))
        return self.lm.loglikelihood(reqs, vocab_stats=vocab_stats, progress=progress)

    def generate(
        self, questions: Sequence[str], max_new_tokens: int, progress: ProgressFn | None = None
    ) -> list[str]:
        """Greedy continuation of each question's prompt, batched with left padding; the text up
        to the first EOS, special tokens dropped, surrounding whitespace stripped."""
        reqs = [GenerationRequest(tuple(self.fmt.prompt_ids(self.tokenizer, q)), max_new_tokens) for q in questions]
        return self.lm.generate_until(reqs, progress=progress)
