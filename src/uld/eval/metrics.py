"""TOFU metrics as pure functions of per-item values (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning").

Every function takes per-item arrays (no model, no files) and returns either per-item values or
one aggregate. Each declares which direction is better with `@better(...)`; the direction is
read by the result table (`direction_of`). Notation: l(a) is the mean per-token negative
log-likelihood of answer a given its question, `nll` arrays hold l values.

Conventions, chosen to match the original TOFU code exactly (`aggregate_eval_stat.py`):
- R (truth-ratio statistic) = exp(mean_j l(pert_j) - l(base)): R > 1 when the model prefers the
  true (base) answer over the wrong ones. OpenUnlearning stores 1/R per item ("score").
- No epsilons are added: TOFU's figures (model utility 0.522074 of its phi_full log) are
  reproduced to 6 significant figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

Direction = Literal["higher", "lower", "closer_to_zero", "closer_to_half"]
F = TypeVar("F", bound=Callable)

_DIRECTIONS: dict[str, Direction] = {}


def better(direction: Direction) -> Callable[[F], F]:
    """Declare which direction of a metric is better; stored on the function as `.better`."""

    def mark(fn: F) -> F:
        fn.better = direction  # type: ignore[attr-defined]
        _DIRECTIONS[fn.__name__] = direction
        return fn

    return mark


def _arr(x: Sequence[float] | np.ndarray, ndim: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array of per-item values, got shape {a.shape}")
    return a


# ---- per-item values --------------------------------------------------------------------


@better("higher")
def answer_probability(nll: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-item probability exp(-l(answer)), shape (N,) -> (N,)."""
    return np.exp(-_arr(nll))


@better("higher")
def normalised_probability(nll_true: Sequence[float] | np.ndarray, nll_false: np.ndarray) -> np.ndarray:
    """Per-item p(true) / (p(true) + Σ_j p(false_j)), with p = exp(-l).

    nll_true (N,), nll_false (N, K) -> (N,). TOFU's "Prob." on real authors / world facts.
    """
    t = np.exp(-_arr(nll_true))
    f = np.exp(-_arr(nll_false, 2)).sum(-1)
    return t / (t + f)


_STEMS: dict[str, str] = {}
"""Porter stems already computed (the stemmer is a pure function of the word)."""


class _MemoStemmer:
    """NLTK's Porter stemmer (as rouge_score uses it) with its results kept: TOFU texts reuse
    the same words thousands of times, and stemming dominates ROUGE's cost."""

    def __init__(self):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def stem(self, word: str) -> str:
        out = _STEMS.get(word)
        if out is None:
            out = _STEMS[word] = self._stemmer.stem(word)
        return out


class _MemoTokenizer:
    """rouge_score's default tokenizer (stemmer on), each distinct text tokenised once: a
    generation compared with several references is not re-tokenised for each."""

    def __init__(self):
        self._stemmer = _MemoStemmer()
        self._texts: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        out = self._texts.get(text)
        if out is None:
            out = self._texts[text] = tokenize.tokenize(text, self._stemmer)
        return out


def _rouge_scorer(types: list[str]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(types, tokenizer=_MemoTokenizer())


@better("higher")
def rouge_l_recall(generations: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """Per-item ROUGE-L recall of each generation against its answer (rouge_score, stemmer on):
    LCS(answer, generation) / len(answer) in stemmed word tokens. (N,) strings -> (N,)."""
    if len(generations) != len(answers):
        raise ValueError(f"{len(generations)} generations for {len(answers)} answers")
    scorer = _rouge_scorer(["rougeL"])
    return np.array([scorer.score(a, g)["rougeL"].recall for g, a in zip(generations, answers, strict=True)])


def rouge_scores(generations: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per item `rouge1_recall`, `rougeL_f1`, `rougeL_recall` of each generation against its
    reference (rouge_score, stemmer on; the three numbers OpenUnlearning stores), each (N,)."""
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations for {len(references)} references")
    scorer = _rouge_scorer(["rouge1", "rougeL"])
    rows = [scorer.score(r, g) for g, r in zip(generations, references, strict=True)]
    return {
        "rouge1_recall": np.array([s["rouge1"].recall for s in rows]),
        "rougeL_f1": np.array([s["rougeL"].fmeasure for s in rows]),
        "rougeL_recall": np.array([s["rougeL"].recall for s in rows]),
    }


@better("higher")
def exact_memorization(greedy: Sequence[bool] | np.ndarray) -> float:
    """Fraction of answer tokens that are the model's argmax given the true prefix (Tirumala et
    al. 2022). `greedy` (T,) = whether each token is the argmax; an empty answer gives NaN."""
    g = np.asarray(greedy, dtype=bool)
    return float(g.mean()) if g.size else float("nan")


@better("higher")
def extraction_strength(greedy: Sequence[bool] | np.ndarray, openunlearning: bool = False) -> float:
    """1 - k / T, k the smallest offset from which every answer token is the argmax given the
    true prefix (Carlini et al. 2021's extraction, as in OpenUnlearning): 1 when the whole answer
    is greedily predicted, 0 when not even the last token is.

    `openunlearning=True` reproduces OpenUnlearning's loop, which tries k = 0 .. T-1 only and
    keeps k = T-1 when no suffix matches, so its value never goes below 1/T.
    """
    g = np.asarray(greedy, dtype=bool)
    t = g.size
    if t == 0:
        return 0.0
    bad = np.flatnonzero(~g)
    k = 0 if bad.size == 0 else int(bad[-1]) + 1
    if openunlearning:
        k = min(k, t - 1)
    return 1.0 - k / t


def truth_ratio_stat(nll_base: Sequence[float] | np.ndarray, nll_pert: np.ndarray) -> np.ndarray:
    """Per-item R = exp(mean_j l(pert_j) - l(base)), nll_base (N,), nll_pert (N, K) -> (N,).

    base = paraphrased answer on forget/retain, the answer itself on real authors/world facts.
    """
    return np.exp(_arr(nll_pert, 2).mean(-1) - _arr(nll_base))


# ---- aggregates ---------------------------------------------------------------------------


@better("higher")
def mean(values: Sequence[float] | np.ndarray) -> float:
    """Plain mean of per-item values (probability, ROUGE)."""
    return float(_arr(values).mean())


@better("higher")
def forget_truth_ratio(r: Sequence[float] | np.ndarray) -> float:
    """mean(min(R, 1/R)) on the forget set: 1 when true and wrong answers are equally likely.

    Symmetric in R <-> 1/R, so it is the same whether R or OpenUnlearning's 1/R is stored.
    Higher is better for unlearning (the retain model's value is the real target).
    """
    r = _arr(r)
    return float(np.minimum(r, 1.0 / r).mean())


@better("higher")
def utility_truth_ratio(r: Sequence[float] | np.ndarray) -> float:
    """mean(max(0, 1 - 1/R)) on retain / real authors / world facts: the model prefers the truth."""
    r = _arr(r)
    return float(np.maximum(0.0, 1.0 - 1.0 / r).mean())


@dataclass(frozen=True)
class KSResult:
    statistic: float
    pvalue: float


@better("higher")
def forget_quality(r_model: Sequence[float] | np.ndarray, r_reference: Sequence[float] | np.ndarray) -> KSResult:
    """Two-sided two-sample Kolmogorov-Smirnov test of the forget-set R of the evaluated model
    against the retain (reference) model's; forget quality is its p-value (scipy `ks_2samp`,
    method "auto", as TOFU). The test depends only on the ranks, so any strictly monotone map
    applied to both samples (e.g. R -> 1/R, OpenUnlearning's convention) leaves it unchanged.
    """
    from scipy.stats import ks_2samp

    res = ks_2samp(_arr(r_model), _arr(r_reference))
    return KSResult(statistic=float(res.statistic), pvalue=float(res.pvalue))


@better("higher")
def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the 9 numbers {Prob, ROUGE, truth ratio} x {retain, real authors, world
    facts}; 0 when any of them is 0 (as scipy's `hmean`)."""
    v = _arr(values)
    if v.size == 0 or np.any(v < 0) or not np.all(np.isfinite(v)):
        raise ValueError(f"model utility needs non-negative finite values, got {v.tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(v.size / np.sum(1.0 / v))


def direction_of(name: str) -> Direction | None:
    """Better direction of a metric function (by function name) or of a result metric name
    (from the metric registry, `uld.eval.registry`)."""
    import uld.eval.tasks  # noqa: F401  (registers the tasks' metrics)
    from uld.eval.registry import direction_of as registered

    return registered(name) or _DIRECTIONS.get(name)
