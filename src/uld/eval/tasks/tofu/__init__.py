"""The TOFU task: records -> requests to the model interface -> per-item values -> metrics.

Three steps, each usable alone:
1. `load_tofu_data(source, forget, max_items)`: the evaluation records of every split (`data`);
2. `score(lm, encoder, data, names)`: per-item values (`TofuValues`) through a `LanguageModel`
   (`scoring`);
3. `compute_metrics(...)`: the metrics, in OpenUnlearning's `TOFU_EVAL.json` layout
   `{name: {"agg_value": ..., "value_by_index": {...}}}`, each built by its registered function
   (`metrics`). `uld aggregate` runs only this step, on values read back from a log.

Prompt formatting and tokenisation live in `data.QAEncoder`, under one of two protocols
(`uld.eval.config.PROTOCOLS`). A metric that cannot be computed is
`{"agg_value": None, "unavailable": "<reason>"}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uld.errors import UldError
from uld.eval import mia as MIA
from uld.eval.registry import select
from uld.eval.tasks.tofu.data import (
    NO_REFERENCE,
    ROUGE_KEYS,
    SPLITS,
    TASK,
    UTILITY_METRICS,
    Progress,
    QAEncoder,
    Record,
    SplitScores,
    TofuData,
    TofuValues,
    Warn,
    check_reference,
    holdout_split_for,
    load_tofu_data,
)
from uld.eval.tasks.tofu.metrics import compute_metrics, summarize, unavailable_reasons
from uld.eval.tasks.tofu.scoring import mia_entry, mia_metrics, score

if TYPE_CHECKING:
    from uld.data.prompts import PromptFormat
    from uld.eval.lm import LanguageModel
    from uld.eval.reference import EvalLog

__all__ = [
    "NO_REFERENCE", "ROUGE_KEYS", "SPLITS", "TASK", "UTILITY_METRICS", "Progress", "QAEncoder", "Record",
    "SplitScores", "TofuData", "TofuValues", "Warn", "check_lengths", "check_reference", "compute_metrics",
    "evaluate", "evaluate_tofu", "holdout_split_for", "load_tofu_data", "mia_entry", "mia_metrics", "score",
    "score_model", "summarize", "unavailable_reasons",
]  # fmt: skip


def check_lengths(encoder: QAEncoder, data: TofuData, max_length: int, max_new_tokens: int, context: int | None,
                  warn: Warn | None = None) -> None:
    """Before any model work: every prompt must fit `max_length` with room for one answer token
    (else one sentence), and generation must fit the model's context (else a warning: it stops
    at the context). Answers that will be cut are counted in a warning."""
    qs = [r["question"] for key in SPLITS if key in data.records for r in data.records[key]]
    qs += [r["question"] for r in data.records.get("holdout", [])]
    lengths = encoder.prompt_lengths(qs)
    longest = max(lengths) if lengths else 0
    if longest + 1 > max_length:
        n = sum(x + 1 > max_length for x in lengths)
        raise UldError(
            f"--max-length {max_length} leaves no room for the answer in {n} of {len(lengths)} prompts "
            f"(the longest prompt has {longest} tokens); use --max-length {max(longest + 64, 2 * longest)} or more"
        )
    if context is not None and longest >= context:
        raise UldError(f"a generation prompt of {longest} tokens does not fit the model's context of {context} tokens")
    if context is not None and longest + max_new_tokens > context and warn:
        warn(f"prompts of up to {longest} tokens + --max-new-tokens {max_new_tokens} exceed the model's context of "
             f"{context} tokens: generation stops at the context")


def evaluate_tofu(
    lm: LanguageModel,
    data: TofuData,
    fmt: PromptFormat,
    names: list[str],
    protocol: str = "uld",
    max_length: int = 512,
    max_new_tokens: int = 200,
    min_k: float = MIA.MIN_K,
    reference: EvalLog | None = None,
    reference_lm: LanguageModel | None = None,
    gradnorm_p: float = 2.0,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> dict[str, dict]:
    """Score a model on every split the selected metrics need and compute them."""
    encoder = QAEncoder(lm.tokenizer, fmt, protocol, max_length)
    check_lengths(encoder, data, max_length, max_new_tokens, getattr(lm, "max_length", None), warn)
    if reference is not None and "forget_quality" in names and "forget" in data.records:
        check_reference(reference, [r["answer"] for r in data.records["forget"]], data.forget)
    values = score(lm, encoder, data, names, max_new_tokens, min_k, progress, reference_lm, gradnorm_p)
    values.reference = reference
    if values.truncated and warn:
        warn(f"{values.truncated} scored answers were cut at --max-length {max_length} tokens")
    return compute_metrics(values, names=names)


def evaluate(
    scorer,
    data: TofuData,
    reference: EvalLog | None = None,
    max_new_tokens: int = 200,
    mia: bool = True,
    min_k: float = MIA.MIN_K,
    progress: Progress | None = None,
    metrics: str = "default",
    protocol: str = "uld",
) -> dict[str, dict]:
    """Score a model (a `CausalLMScorer`: model interface + prompt format + max length) on every
    split and compute the selected metrics (TOFU_EVAL.json layout)."""
    names = select(TASK, metrics)
    if not mia:
        names = [n for n in names if not n.startswith("mia_") and n != "privleak"]
    return evaluate_tofu(scorer.lm, data, scorer.fmt, names, protocol, scorer.max_length, max_new_tokens, min_k,
                         reference, progress=progress)


def score_model(scorer, data: TofuData, max_new_tokens: int = 200, mia: bool = True, min_k: float = MIA.MIN_K,
                progress: Progress | None = None) -> tuple[dict[str, SplitScores], dict[str, dict]]:
    """Per-item values of every split and the MIA entries, with uld's default metric set."""
    names = select(TASK, "default")
    if not mia:
        names = [n for n in names if not n.startswith("mia_") and n != "privleak"]
    encoder = QAEncoder(scorer.lm.tokenizer, scorer.fmt, "uld", scorer.max_length)
    values = score(scorer.lm, encoder, data, names, max_new_tokens, min_k, progress)
    return values.splits, values.mia
