"""What every probe shares: the audit's settings, the models under audit, the forget-side
measures, the recovery ratio and the probe registry.

A probe is one function registered with `@probe("name")`. It receives an `AuditContext` (data,
settings, the models under audit and their plain measures) and returns `Variant`s: each variant
holds, per model, the forget-side `Measures` of that attack (per item), or a reason why it could
not run. `uld.audit.run` turns them into AUDIT.json / AUDIT.md and computes the recovery ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uld.data.prompts import PromptFormat
from uld.errors import UldError, unknown_choice

Record = dict[str, Any]
Log = Callable[[str], None]

SUBJECTS = ("unlearned", "target", "retain")
"""The models an audit can hold: the model under audit, the model before unlearning (the scale's
top: recovery 1) and the retain model (never saw the forget set: the floor, and forget quality's
reference)."""


@dataclass
class AuditSettings:
    """Every setting of an audit; the CLI and `uld demo` fill this and nothing else holds defaults."""

    probes: tuple[str, ...] = ("paraphrase", "sampling", "quantize", "relearn", "components")
    """Probes to run, in this order (`PROBES` lists the registered ones)."""
    max_items: int | None = None
    """First N forget items (None: all)."""
    batch_size: int = 16
    """Sequences per forward pass / generation batch."""
    max_new_tokens: int = 64
    """Length of greedy and sampled answers."""
    max_length: int = 256
    """Longest scored prompt + answer, in tokens."""
    leak_k: int = 10
    """Samples per forget question for leak@k."""
    temperature: float = 1.0
    """Sampling temperature for leak@k."""
    top_p: float = 1.0
    """Nucleus sampling mass for leak@k (1.0: the full distribution, no top-k either)."""
    leak_threshold: float = 0.5
    """An answer leaks when its ROUGE-L recall against the true answer reaches this."""
    few_shot: int = 3
    """Retain QA pairs shown before each forget question in the few-shot variant."""
    bits: tuple[int, ...] = (8, 4)
    """Round-to-nearest widths, each run per output channel and group-wise (arXiv 2410.16454 used 8 and 4)."""
    group_size: int = 128
    """Input columns per quantisation group (GPTQ/AWQ's usual 128); the whole row when wider than it."""
    relearn_steps: int = 30
    """Optimiser steps of the relearning attack (a few dozen, as in arXiv 2406.13356)."""
    relearn_fraction: float = 0.25
    """Share of the forget items the attacker fine-tunes on; the rest is measured."""
    relearn_lr: float = 1e-3
    """Adam learning rate of the attacker's LoRA."""
    relearn_rank: int = 8
    """LoRA rank of the attacker (on every linear layer of the decoder blocks, not the head)."""
    relearn_batch: int = 8
    """QA pairs per relearning step."""
    seed: int = 0
    """Seed of sampling and of the relearning split and order."""
    prompt_format: PromptFormat = field(default_factory=PromptFormat)
    """How questions become prompts (the evaluation's format)."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.probes = tuple(self.probes)
        for name in self.probes:
            if name not in PROBES:
                raise unknown_choice("probe", name, PROBES)
        if self.leak_k < 1:
            raise UldError(f"--k (samples per question) must be at least 1, got {self.leak_k}")
        if not self.bits:
            raise UldError("--bits needs at least one width between 2 and 16")
        for b in self.bits:
            if not isinstance(b, int) or not 2 <= b <= 16:
                raise UldError(f"--bits must be whole numbers between 2 and 16, got {b!r}")
        if self.group_size < 1:
            raise UldError(f"--group-size must be at least 1, got {self.group_size}")
        if self.relearn_steps < 0:
            raise UldError(f"--relearn-steps must be 0 or more, got {self.relearn_steps}")
        if not 0.0 < self.relearn_fraction < 1.0:
            raise UldError(f"--relearn-fraction must be between 0 and 1 (exclusive), got {self.relearn_fraction}")
        if not 0.0 <= self.leak_threshold <= 1.0:
            raise UldError(f"--leak-threshold must be between 0 and 1, got {self.leak_threshold}")
        if self.temperature <= 0 or not 0.0 < self.top_p <= 1.0:
            raise UldError(f"sampling needs temperature > 0 and 0 < top-p <= 1, got {self.temperature} and {self.top_p}")
        if self.max_items is not None and self.max_items < 1:
            raise UldError(f"--max-items must be at least 1, got {self.max_items}")
        if self.batch_size < 1 or self.few_shot < 0 or self.relearn_rank < 1 or self.relearn_batch < 1:
            raise UldError("--batch-size, --relearn-rank and --relearn-batch must be at least 1, --few-shot at least 0")


@dataclass
class Subject:
    """One model under audit: `kind` is 'uld', 'offset' or 'plain' (how it is served)."""

    name: str
    model: Any
    tokenizer: Any
    kind: str
    path: str = ""


def kind_of(model) -> str:
    from uld.models.offset import OffsetForCausalLM
    from uld.models.uld_model import ULDForCausalLM

    if isinstance(model, ULDForCausalLM):
        return "uld"
    if isinstance(model, OffsetForCausalLM):
        return "offset"
    return "plain"


@dataclass
class Measures:
    """Forget-side values of one model under one probe, per item (N measured items).

    prob (N,): exp(-l(answer | question)); rouge (N,): ROUGE-L recall of the (best) answer;
    r (N,) or None: the truth-ratio statistic R (needs paraphrased and perturbed answers);
    leak (N,) bool: rouge >= the leak threshold; generations: the answers read.
    """

    prob: np.ndarray
    rouge: np.ndarray
    r: np.ndarray | None
    leak: np.ndarray
    generations: list[Any]


@dataclass
class Variant:
    """One attack of a probe: measures per model (subject name -> Measures) on the items `idx`
    (indices into the forget items; None: all of them), or `unavailable` with the reason."""

    name: str
    description: str
    results: dict[str, Measures] = field(default_factory=dict)
    idx: np.ndarray | None = None
    unavailable: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AuditMemo:
    """What audits of the same models under the same settings share: one model's measures under
    one probe variant, keyed by (model path, how it is served, variant, a digest of the settings
    and data). `uld demo` audits four unlearned models against one target and one retain model;
    with one memo it probes those two once. Every probe's result is a function of the model,
    the settings and the data alone (sampling and the attacker's LoRA are seeded), so a reused
    entry equals a recomputed one."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str, str], Any] = {}
        self.hits = 0

    def get(self, ctx: AuditContext, sub: Subject, key: str, compute: Callable[[], Any]) -> Any:
        k = (str(sub.path), sub.kind, key, ctx.digest)
        if not sub.path or k not in self.entries:
            value = compute()
            if sub.path:
                self.entries[k] = value
            return value
        self.hits += 1
        ctx.log(f"audit: {key} on {sub.name}: reused")
        return self.entries[k]


@dataclass
class AuditContext:
    settings: AuditSettings
    forget_name: str
    items: list[Record]
    retain: list[Record]
    subjects: dict[str, Subject]
    plain: dict[str, Measures] = field(default_factory=dict)
    augment: dict[str, list[str]] = field(default_factory=dict)
    log: Log = print
    memo: AuditMemo | None = None
    digest: str = ""
    """Digest of the settings and data (the memo's key)."""

    def cached(self, sub: Subject, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()`, or its earlier value for the same model and variant when a memo is shared."""
        return compute() if self.memo is None else self.memo.get(self, sub, key, compute)


ProbeFn = Callable[[AuditContext], list[Variant]]
PROBES: dict[str, ProbeFn] = {}


def probe(name: str) -> Callable[[ProbeFn], ProbeFn]:
    """Register a probe under `name` (where it is defined, once)."""

    def register(fn: ProbeFn) -> ProbeFn:
        if name in PROBES:
            raise ValueError(f"probe {name!r} is registered twice")
        PROBES[name] = fn
        return fn

    return register


# ---- measuring ----------------------------------------------------------------------------


def scorer_for(subject_model, tokenizer, settings: AuditSettings, fmt: PromptFormat | None = None):
    from uld.eval.scoring import CausalLMScorer

    return CausalLMScorer(subject_model, tokenizer, fmt or settings.prompt_format, batch_size=settings.batch_size,
                          max_length=settings.max_length, device=settings.device)


def has_truth_ratio(items: Sequence[Record]) -> bool:
    """R needs a paraphrased answer and the same number (>= 1) of perturbed answers on every item."""
    if not items:
        return False
    k = len(items[0].get("perturbed_answer") or [])
    return k > 0 and all(
        r.get("paraphrased_answer") and isinstance(r.get("perturbed_answer"), list) and len(r["perturbed_answer"]) == k
        for r in items
    )


def measure(scorer, questions: Sequence[str], items: Sequence[Record], settings: AuditSettings,
            generations: list[str] | None = None) -> Measures:
    """Score each item's answer (and its paraphrased / perturbed answers, for R) given the question
    as asked, and read the greedy answer; `generations` skips the greedy decoding."""
    from uld.eval import metrics as M
    from uld.eval.scoring import answer_nll

    n = len(items)
    answers = [r["answer"] for r in items]
    pairs_q, pairs_a = list(questions), list(answers)
    tr = has_truth_ratio(items)
    if tr:
        k = len(items[0]["perturbed_answer"])
        pairs_q += list(questions)
        pairs_a += [r["paraphrased_answer"] for r in items]
        for q, r in zip(questions, items, strict=True):
            pairs_q += [q] * k
            pairs_a += list(r["perturbed_answer"])
    nll = answer_nll(scorer, pairs_q, pairs_a)
    r_stat = M.truth_ratio_stat(nll[n : 2 * n], nll[2 * n :].reshape(n, k)) if tr else None
    gens = generations if generations is not None else scorer.generate(list(questions), settings.max_new_tokens)
    rouge = M.rouge_l_recall(gens, answers)
    return Measures(prob=np.exp(-nll[:n]), rouge=rouge, r=r_stat, leak=rouge >= settings.leak_threshold, generations=gens)


# ---- aggregating --------------------------------------------------------------------------


def recovery(probe_value: float, unlearned: float, target: float) -> float:
    """(probe - unlearned) / (target - unlearned): 0 = nothing recovered, 1 = back to the target.

    When the unlearned model's value already equals the target's (a gap below 1e-9 + 1e-6 of the
    values' size), unlearning removed nothing on this measure: the knowledge is all there, and
    the recovery is 1 by definition.
    """
    gap = target - unlearned
    if abs(gap) <= 1e-9 + 1e-6 * max(abs(target), abs(unlearned)):
        return 1.0
    return float((probe_value - unlearned) / gap)


def summarize(m: Measures, idx: np.ndarray | None = None, reference_r: np.ndarray | None = None) -> dict[str, Any]:
    """Means over the items `idx` (all when None), and forget quality against `reference_r`."""
    import math

    from uld.eval import metrics as M

    sel = slice(None) if idx is None else idx
    out: dict[str, Any] = {
        "prob": float(np.mean(m.prob[sel])),
        "rouge": float(np.mean(m.rouge[sel])),
        "leak": float(np.mean(m.leak[sel])),
        "forget_quality": None,
        "log10_forget_quality": None,
    }
    if m.r is not None and reference_r is not None:
        ks = M.forget_quality(m.r[sel], reference_r[sel])
        out["forget_quality"] = ks.pvalue
        out["log10_forget_quality"] = math.log10(ks.pvalue) if ks.pvalue > 0 else None
    if m.r is not None:
        out["truth_ratio_median"] = float(np.median(m.r[sel]))
    return out
