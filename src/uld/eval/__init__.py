"""Evaluation: TOFU metrics (exactly as the original code), membership inference, result files.

Data flows one way: records (`tofu.load_tofu_data`) -> per-item values through the narrow model
interface (`scoring.Scorer`, `tofu.score_model`) -> metrics (`metrics`, `mia`,
`tofu.compute_metrics`) -> files (`results`). `reference.read_log` reads TOFU and
OpenUnlearning logs back into per-item values. See docs/eval.md.
"""

from uld.eval.reference import EvalLog, read_log
from uld.eval.results import print_table, read_results, write_results
from uld.eval.scoring import CausalLMScorer, Scorer, TokenStats
from uld.eval.tofu import (
    SplitScores,
    compute_metrics,
    evaluate,
    load_tofu_data,
    score_model,
    summarize,
)

__all__ = [
    "CausalLMScorer",
    "EvalLog",
    "Scorer",
    "SplitScores",
    "TokenStats",
    "compute_metrics",
    "evaluate",
    "load_tofu_data",
    "print_table",
    "read_log",
    "read_results",
    "score_model",
    "summarize",
    "write_results",
]
