"""The model interface every evaluation task uses, at the level of the field's harnesses.

Three requests, all batched, all on token ids (prompt formatting and tokenisation belong to
the task, never to the model):

- `loglikelihood(requests)`: per-token log-probabilities of a continuation given a context
  (`TokenScores`: log p of each continuation token, whether it is the argmax, and optionally the
  mean / variance of log p under the model's own next-token distribution, for Min-K%++);
- `loglikelihood_rolling(texts)`: the same over a whole text, in disjoint windows of at most the
  model's context (perplexity);
- `generate_until(requests)`: greedy or sampled continuation of a context, cut at the first EOS
  or stop string.

`HFLanguageModel` implements it for any causal LM callable as
`model(input_ids=, attention_mask=, position_ids=) -> .logits` with a `generate(...)` method:
plain transformers models, peft models, `ULDForCausalLM` (combined target - weight * assistant
logits) and `OffsetForCausalLM`. `uld.testing.FakeLM` implements it without a network.

Batch-size invariance: scoring pads on the right and passes explicit position ids (0, 1, ... on
real tokens); generation pads on the left and lets `generate` derive position ids from the
attention mask, so an item's values do not depend on which items share its batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from uld.errors import UldError
from uld.eval.checks import check_generation

ProgressFn = Callable[[int], None]
"""Called with the number of items just finished (for progress bars)."""


@dataclass
class TokenScores:
    """Per-token values of one scored continuation, each of shape (T,), T = continuation tokens.

    `logprob[t]` = log p(x_t | context, x_<t); `greedy[t]` = x_t is the most likely token there;
    `mu` / `sigma2` = mean / variance of log p(z) under z ~ p(. | prefix) (when asked for).
    """

    logprob: np.ndarray
    greedy: np.ndarray | None = None
    mu: np.ndarray | None = None
    sigma2: np.ndarray | None = None

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood."""
        return float(-self.logprob.mean())

    @property
    def sum(self) -> float:
        """Total log-likelihood of the continuation."""
        return float(self.logprob.sum())

    @property
    def is_greedy(self) -> bool:
        """Greedy decoding from the context would produce exactly this continuation."""
        return bool(self.greedy is not None and self.greedy.all())


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score `continuation` (token ids) after `context` (token ids, at least one)."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class GenerationRequest:
    """Continue `context` (token ids) by at most `max_new_tokens`, stopping at EOS or any of
    `until`; greedy unless `do_sample` (then `temperature`, `top_p`, `seed` apply)."""

    context: tuple[int, ...]
    max_new_tokens: int
    until: tuple[str, ...] = ()
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def check(self) -> None:
        """One sentence for a request the model cannot run (before any work)."""
        check_generation(self.max_new_tokens, self.temperature, self.top_p)
        if not self.context:
            raise UldError("a generation request needs at least one context token")


class LanguageModel(Protocol):
    """What an evaluation task may ask of a model (see the module docstring)."""

    tokenizer: object
    max_length: int | None
    """The model's context in tokens (None when unknown)."""

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], vocab_stats: bool = False, progress: ProgressFn | None = None
    ) -> list[TokenScores]: ...

    def loglikelihood_rolling(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[TokenScores]: ...

    def generate_until(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[str]: ...


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (longest first), so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def model_context(model) -> int | None:
    """The model's context in tokens, from its config (`max_position_embeddings` or `n_positions`);
    a ULD or offset model answers for its target."""
    for m in (model, getattr(model, "target", None)):
        cfg = getattr(m, "config", None)
        for key in ("max_position_embeddings", "n_positions"):
            v = getattr(cfg, key, None)
            if isinstance(v, int) and v > 0:
                return v
    return None


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text before the earliest stop string."""
    cut = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def _is_argmax(logp, tok_lp, target):
    """`logp.argmax(-1) == target` per row (the first maximum wins a tie), computed with the
    cheaper row maximum; argmax only on the rows where the target ties with the maximum."""
    top = logp.amax(-1)
    greedy = (tok_lp == top) | top.isnan()
    rows = greedy.nonzero().squeeze(-1)
    if rows.numel():
        greedy[rows] = logp[rows].argmax(-1) == target[rows]
    return greedy


class HFLanguageModel:
    """`LanguageModel` over a causal LM and its tokenizer, batched and padded."""

    def __init__(self, model, tokenizer, batch_size: int = 8, device: str | None = None, max_length: int | None = None):
        import torch

        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else model_context(model)
        if device is None:
            try:
                device = str(next(model.parameters()).device)
            except (StopIteration, AttributeError, TypeError):
                device = "cpu"
        self.device = torch.device(device)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            self.pad_id = 0
        forward = model.forward if hasattr(model, "forward") else model
        self._pass_positions = _accepts(forward, "position_ids")
        self._pass_keep = _accepts(forward, "logits_to_keep")
        # scoring keeps no key/value cache (building one is wasted work)
        self._no_cache = {"use_cache": False} if _accepts(forward, "use_cache") else {}

    # -- log-likelihood -------------------------------------------------------------------

    def _logits(self, ids, mask, keep: int = 0, grad: bool = False):
        """Logits of the last `keep` positions (all when 0); a model that does not take
        `logits_to_keep` computes them all and they are sliced here. No gradient unless `grad`."""
        import torch

        ids, mask = ids.to(self.device), mask.to(self.device)
        kwargs = {"input_ids": ids, "attention_mask": mask, **self._no_cache}
        if self._pass_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
        with torch.set_grad_enabled(grad):
            if keep and self._pass_keep:
                try:
                    logits = self.model(**kwargs, logits_to_keep=keep).logits
                except TypeError as e:  # a wrapper that takes **kwargs around a model that does not
                    if "logits_to_keep" not in str(e):
                        raise
                    self._pass_keep = False
            if not (keep and self._pass_keep):
                logits = self.model(**kwargs).logits
        return logits[:, -keep:] if keep else logits

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], vocab_stats: bool = False, progress: ProgressFn | None = None
    ) -> list[TokenScores]:
        """Score every request; right padding, explicit position ids, one forward per batch.

        Only the positions that predict a continuation token go through the output layer and the
        softmax: the output layer runs from the batch's earliest scored position on, and the
        log-softmax, argmax and vocabulary statistics only on the scored rows (each row's values
        are those of the full computation: the softmax is taken row by row).
        """
        import torch

        for r in requests:
            if not r.context or not r.continuation:
                raise ValueError("a log-likelihood request needs at least one context and one continuation token")
        seqs = [list(r.context) + list(r.continuation) for r in requests]
        out: list[TokenScores | None] = [None] * len(requests)
        for idx in batches_by_length([len(s) for s in seqs], self.batch_size):
            lens = np.array([len(seqs[i]) for i in idx])
            ctx = np.array([len(requests[i].context) for i in idx])
            width = int(lens.max())
            ids_np = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            for row, i in enumerate(idx):  # right padding: real tokens at positions 0..L-1
                ids_np[row, : lens[row]] = seqs[i]
            pos = np.arange(width)[None, :]
            ids = torch.from_numpy(ids_np)
            mask = torch.from_numpy((pos < lens[:, None]).astype(np.int64))
            scored = torch.from_numpy((pos >= ctx[:, None]) & (pos < lens[:, None]))
            # position t predicts token t+1: positions first .. width-2 are needed
            first = int(ctx.min()) - 1
            logits = self._logits(ids, mask, keep=width - first)[:, :-1]  # (B, width-1-first, V)
            sel = scored[:, first + 1 :]
            rows = logits[sel.to(logits.device)].float()  # (N, V): the scored positions, row by row
            target = ids[:, first + 1 :][sel].to(rows.device)
            logp = torch.log_softmax(rows, dim=-1)
            tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            greedy = _is_argmax(logp, tok_lp, target)
            # One device-to-host copy per batch, not one per row and quantity.
            cuts = np.cumsum(sel.sum(1).numpy())[:-1]
            tok_lp = np.split(tok_lp.double().cpu().numpy(), cuts)
            greedy = np.split(greedy.cpu().numpy(), cuts)
            if vocab_stats:
                p = logp.exp()
                mu = (p * logp).sum(-1)
                sigma2 = (p * logp.square()).sum(-1) - mu.square()
                mu = np.split(mu.double().cpu().numpy(), cuts)
                sigma2 = np.split(sigma2.double().cpu().numpy(), cuts)
            for row, i in enumerate(idx):
                out[i] = TokenScores(
                    logprob=tok_lp[row],
                    greedy=greedy[row],
                    mu=mu[row] if vocab_stats else None,
                    sigma2=sigma2[row] if vocab_stats else None,
                )
            if progress:
                progress(len(idx))
        return out  # type: ignore[return-value]

    def rolling_requests(self, text: str) -> list[LoglikelihoodRequest]:
        """Disjoint windows covering every token of `text`, each with as much preceding context as
        fits the model; the first token is predicted from BOS (or EOS when there is no BOS)."""
        tok = self.tokenizer
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise UldError("cannot score an empty text")
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        seq = [prefix if prefix is not None else self.pad_id] + ids
        window = self.max_length or len(seq)
        if window < 2:
            raise UldError(f"a context of {window} token(s) cannot score text")
        reqs, start = [], 1
        while start < len(seq):
            end = min(len(seq), start + window - 1)
            ctx_start = max(0, end - window)
            reqs.append(LoglikelihoodRequest(tuple(seq[ctx_start:start]), tuple(seq[start:end])))
            start = end
        return reqs

    def loglikelihood_rolling(self, texts: Sequence[str], progress: ProgressFn | None = None) -> list[TokenScores]:
        """Log-likelihood of every token of each text (BOS-conditioned), windows joined."""
        windows = [self.rolling_requests(t) for t in texts]
        flat = [r for w in windows for r in w]
        scores = self.loglikelihood(flat)
        out, k = [], 0
        for w in windows:
            parts = scores[k : k + len(w)]
            k += len(w)
            out.append(TokenScores(
                logprob=np.concatenate([p.logprob for p in parts]),
                greedy=np.concatenate([p.greedy for p in parts]),
            ))
            if progress:
                progress(1)
        return out

    # -- generation -----------------------------------------------------------------------

    def generate_until(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[str]:
        """Continue each context (left padding); text up to the first EOS or stop string, special
        tokens dropped, surrounding whitespace stripped. Requests with the same settings share
        batches; a sampled request with a seed gives the same text in any batch of size 1."""
        import torch

        from uld.data.collate import left_pad

        for r in requests:
            r.check()
        eos = self.tokenizer.eos_token_id
        out: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_new_tokens, r.until, r.do_sample, r.temperature, r.top_p, r.seed), []).append(i)
        for (max_new, until, do_sample, temperature, top_p, seed), members in groups.items():
            lengths = [len(requests[i].context) for i in members]
            for local in batches_by_length(lengths, self.batch_size):
                idx = [members[j] for j in local]
                width = max(len(requests[i].context) for i in idx)
                new_tokens = max_new
                if self.max_length is not None:
                    if width >= self.max_length:
                        raise UldError(
                            f"a generation prompt of {width} tokens does not fit the model's context of "
                            f"{self.max_length} tokens; shorten the prompt"
                        )
                    new_tokens = min(max_new, self.max_length - width)
                ids, mask = left_pad([requests[i].context for i in idx], self.pad_id)
                kwargs = dict(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=new_tokens,
                    do_sample=do_sample, num_beams=1, pad_token_id=self.pad_id, eos_token_id=eos,
                )
                if do_sample:
                    kwargs.update(temperature=temperature, top_p=top_p)
                    if seed is not None:
                        torch.manual_seed(seed)
                with torch.no_grad():
                    gen = self.model.generate(**kwargs)
                new = gen[:, width:].cpu().tolist()
                for row, i in enumerate(idx):
                    toks = new[row]
                    if eos is not None and eos in toks:
                        toks = toks[: toks.index(eos)]
                    text = self.tokenizer.decode(toks, skip_special_tokens=True)
                    out[i] = cut_at_stops(text, until).strip()
                if progress:
                    progress(len(idx))
        return out  # type: ignore[return-value]

    # -- gradients (the gradient-norm membership attack) -----------------------------------

    def grad_norms(self, requests: Sequence[LoglikelihoodRequest], p: float = 2.0, progress: ProgressFn | None = None) -> list[float]:
        """Per request: the mean over parameters with a gradient of ||d l / d theta||_p, where l
        is the mean NLL of the continuation (one request at a time; weights are not changed)."""
        import torch

        params = [q for q in self.model.parameters() if q.requires_grad]
        if not params:
            raise UldError("the gradient-norm attack needs a model with trainable parameters")
        out = []
        was_training = self.model.training
        try:
            for r in requests:
                seq = torch.tensor([list(r.context) + list(r.continuation)], device=self.device)
                c = len(r.context)
                keep = seq.size(1) - (c - 1)  # the positions that predict the continuation, and the last
                with torch.enable_grad():
                    logits = self._logits(seq, torch.ones_like(seq), keep, grad=True)
                    logp = torch.log_softmax(logits[0, :-1].float(), -1)
                    lp = logp.gather(-1, seq[0, c:].unsqueeze(-1)).squeeze(-1)
                    loss = -lp.mean()
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                norms = [g.detach().norm(p=p) for g in grads if g is not None]
                out.append(float(torch.stack(norms).mean()))
                if progress:
                    progress(1)
        finally:
            self.model.train(was_training)
        return out
