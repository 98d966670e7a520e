"""The TOFU evaluator: records -> per-item scores (through a `Scorer`) -> metrics.

Three steps, each usable alone:
1. `load_tofu_data(source, forget, max_items)`: the evaluation records of every split;
2. `score_model(scorer, data, ...)`: per-item values (`SplitScores`, MIA scores) from a model;
3. `compute_metrics(splits, mia, reference)`: the metrics, in OpenUnlearning's `TOFU_EVAL.json`
   layout `{name: {"agg_value": ..., "value_by_index": {...}}}`. `uld aggregate` runs only this
   step, on per-item values read back from a log.

A metric that cannot be computed is `{"agg_value": None, "unavailable": "<reason>"}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from uld.errors import UldError
from uld.eval import metrics as M
from uld.eval import mia as MIA

if TYPE_CHECKING:
    from uld.eval.reference import EvalLog
    from uld.eval.scoring import Scorer

# internal split key -> (data split name or None for the forget split, has paraphrased answer)
SPLITS: dict[str, tuple[str | None, bool]] = {
    "forget": (None, True),
    "retain": ("retain_perturbed", True),
    "ra": ("real_authors_perturbed", False),
    "wf": ("world_facts_perturbed", False),
}
UTILITY_METRICS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)  # fmt: skip
NO_REFERENCE = "no --reference given: forget quality compares with a retain model's evaluation log"

Record = dict[str, Any]
Progress = Callable[[str, int], Callable[[int], None]]
"""`progress(description, total)` returns a function called with the number of items done."""


@dataclass
class SplitScores:
    """Per-item values of one evaluation split (N items, K wrong answers each).

    nll (N,): l(answer); nll_para (N,): l(paraphrased answer), forget/retain only;
    nll_pert (N, K): l(each perturbed answer); rouge (N,): ROUGE-L recall of the greedy
    generation. Any of them may be missing when read back from a partial log.
    """

    nll: np.ndarray | None = None
    nll_para: np.ndarray | None = None
    nll_pert: np.ndarray | None = None
    rouge: np.ndarray | None = None
    questions: list[str] | None = None
    answers: list[str] | None = None
    generations: list[str] | None = None

    def truth_ratio_r(self, paraphrased: bool) -> np.ndarray | None:
        """R per item; base = the paraphrased answer (forget, retain) or the answer (others).

        On real authors / world facts a TOFU log scores the answer a second time as its
        "paraphrase" (`avg_paraphrased_loss`, equal to `avg_gt_loss` up to batching noise) and
        TOFU's truth ratio uses that copy; when present it is used, to reproduce TOFU exactly.
        """
        base = self.nll_para if (paraphrased or self.nll_para is not None) else self.nll
        if base is None or self.nll_pert is None:
            return None
        return M.truth_ratio_stat(base, self.nll_pert)


@dataclass
class TofuData:
    forget: str
    holdout: str
    records: dict[str, list[Record]] = field(default_factory=dict)  # keys: SPLITS + "holdout"


def holdout_split_for(forget: str) -> str:
    if not forget.startswith("forget"):
        raise UldError(f"forget split {forget!r} should be named forgetXX (forget01, forget05, forget10)")
    return "holdout" + forget[len("forget") :]


def load_tofu_data(source: str, forget: str, max_items: int | None = None, mia: bool = True) -> TofuData:
    """Read every split the evaluation needs; the first `max_items` of each (TOFU used 300)."""
    from uld.data.records import load_split

    if max_items is not None and max_items < 1:
        raise UldError(f"--max-items must be at least 1, got {max_items}")
    holdout = holdout_split_for(forget)
    data = TofuData(forget=forget, holdout=holdout)
    for key, (split, has_para) in SPLITS.items():
        name = split or f"{forget}_perturbed"
        req = ("question", "answer", "perturbed_answer") + (("paraphrased_answer",) if has_para else ())
        rows = load_split(source, name, required=req)[:max_items]
        for i, r in enumerate(rows):
            if not isinstance(r["perturbed_answer"], list) or len(r["perturbed_answer"]) != len(rows[0]["perturbed_answer"]):
                raise UldError(f"record {i} of {name!r} needs a list of {len(rows[0]['perturbed_answer'])} perturbed answers like the others")
        data.records[key] = rows
    if mia:
        data.records["holdout"] = load_split(source, holdout)[:max_items]
    return data


def score_model(
    scorer: Scorer,
    data: TofuData,
    max_new_tokens: int = 200,
    mia: bool = True,
    min_k: float = MIA.MIN_K,
    progress: Progress | None = None,
) -> tuple[dict[str, SplitScores], dict[str, dict]]:
    """Per-item values of every split, and the MIA entries (`mia_*` metrics).

    All candidate answers of a split (answer, paraphrase, K wrong answers per item) are flattened
    into one list of (question, answer) pairs and scored in padded batches.
    """
    splits: dict[str, SplitScores] = {}
    forget_stats = None
    for key, (_, has_para) in SPLITS.items():
        rows = data.records[key]
        n, k = len(rows), len(rows[0]["perturbed_answer"])
        qs = [r["question"] for r in rows]
        pairs_q, pairs_a = list(qs), [r["answer"] for r in rows]
        if has_para:
            pairs_q += qs
            pairs_a += [r["paraphrased_answer"] for r in rows]
        for r in rows:
            pairs_q += [r["question"]] * k
            pairs_a += list(r["perturbed_answer"])
        tick = progress(f"scoring {key}", len(pairs_q)) if progress else None
        want_vocab = mia and key == "forget"  # Min-K%++ needs the vocabulary statistics
        stats = scorer.token_stats(pairs_q, pairs_a, vocab_stats=want_vocab, progress=tick)
        nll = np.array([s.nll for s in stats])
        off = 2 * n if has_para else n
        tick = progress(f"generating {key}", n) if progress else None
        gens = scorer.generate(qs, max_new_tokens, progress=tick)
        answers = [r["answer"] for r in rows]
        splits[key] = SplitScores(
            nll=nll[:n],
            nll_para=nll[n : 2 * n] if has_para else None,
            nll_pert=nll[off:].reshape(n, k),
            rouge=M.rouge_l_recall(gens, answers),
            questions=qs,
            answers=answers,
            generations=gens,
        )
        if key == "forget":
            forget_stats = stats[:n]
    mia_entries: dict[str, dict] = {}
    if mia:
        rows = data.records["holdout"]
        tick = progress("scoring holdout", len(rows)) if progress else None
        hold_stats = scorer.token_stats(
            [r["question"] for r in rows], [r["answer"] for r in rows], vocab_stats=True, progress=tick
        )
        mia_entries = mia_metrics(
            forget_stats, [r["answer"] for r in data.records["forget"]], hold_stats, [r["answer"] for r in rows], min_k
        )
    return splits, mia_entries


def mia_metrics(forget_stats, forget_texts, holdout_stats, holdout_texts, min_k: float = MIA.MIN_K) -> dict[str, dict]:
    """The four `mia_*` entries: AUC of forget (members) vs holdout, per-item member scores."""

    def scores(stats, texts) -> dict[str, list[float]]:
        return {
            "mia_loss": [MIA.loss_score(s.nll) for s in stats],
            "mia_zlib": [MIA.zlib_score(s.nll, t) for s, t in zip(stats, texts, strict=True)],
            "mia_min_k": [MIA.min_k_score(s.logprob, min_k) for s in stats],
            "mia_min_k_plus_plus": [MIA.min_k_plus_plus_score(s.logprob, s.mu, s.sigma2, min_k) for s in stats],
        }

    f, h = scores(forget_stats, forget_texts), scores(holdout_stats, holdout_texts)
    out = {}
    for name in MIA.ATTACKS:
        out[name] = {
            "agg_value": MIA.auc(f[name], h[name]),
            "score_direction": "higher = more likely a member (forget); auc = P(forget > holdout)",
            "forget": {"agg_value": float(np.mean(f[name])), "value_by_index": {str(i): {"score": v} for i, v in enumerate(f[name])}},
            "holdout": {"agg_value": float(np.mean(h[name])), "value_by_index": {str(i): {"score": v} for i, v in enumerate(h[name])}},
        }
    return out


def check_reference(reference: EvalLog, forget_answers: list[str], forget: str) -> None:
    """One clear sentence when the reference was not evaluated on the same forget items."""
    if reference.forget_r is None:
        raise UldError(f"reference {reference.path} holds no per-item forget truth ratios, so it cannot give forget quality")
    n_ref, n = len(reference.forget_r), len(forget_answers)
    if n_ref != n:
        raise UldError(
            f"reference {reference.path} has {n_ref} forget items but this evaluation has {n} ({forget}); "
            f"evaluate the same forget split with the same --max-items as the reference"
        )
    if reference.forget_answers:
        norm = [" ".join(a.split()) for a in reference.forget_answers]
        same = sum(a == " ".join(b.split()) for a, b in zip(norm, forget_answers, strict=True))
        if same < 0.9 * n:
            raise UldError(
                f"reference {reference.path} was evaluated on different forget items than {forget} "
                f"(only {same} of {n} answers match); pass the retain model's log for {forget}"
            )


def _unavailable(reason: str) -> dict:
    return {"agg_value": None, "unavailable": reason}


def _prob_entry(nll: np.ndarray) -> dict:
    p = M.answer_probability(nll)
    return {"agg_value": M.mean(p), "value_by_index": {str(i): {"prob": float(p[i]), "avg_loss": float(nll[i])} for i in range(len(nll))}}


def _pert_entry(nll_pert: np.ndarray) -> dict:
    p = np.exp(-nll_pert)
    vbi = {str(i): {"prob": p[i].tolist(), "avg_loss": nll_pert[i].tolist()} for i in range(len(p))}
    return {"agg_value": float(p.mean(-1).mean()), "value_by_index": vbi}


def _split_metrics(prefix: str, s: SplitScores) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if s.nll is not None:
        out[f"{prefix}_Q_A_Prob"] = _prob_entry(s.nll)
    if s.nll_para is not None:  # on ra/wf only from TOFU logs (see truth_ratio_r); kept for round trips
        out[f"{prefix}_Q_A_PARA_Prob"] = _prob_entry(s.nll_para)
    if s.nll_pert is not None:
        out[f"{prefix}_Q_A_PERT_Prob"] = _pert_entry(s.nll_pert)
    if prefix in ("ra", "wf") and s.nll is not None and s.nll_pert is not None:
        p = M.normalised_probability(s.nll, s.nll_pert)
        out[f"{prefix}_Q_A_Prob_normalised"] = {"agg_value": M.mean(p), "value_by_index": {str(i): {"prob": float(v)} for i, v in enumerate(p)}}
    if s.rouge is not None:
        vbi = {}
        for i, v in enumerate(s.rouge):
            item: dict[str, Any] = {"rougeL_recall": float(v)}
            for key, src in (("input", s.questions), ("ground_truth", s.answers), ("generation", s.generations)):
                if src is not None:
                    item[key] = src[i]
            vbi[str(i)] = item
        out[f"{prefix}_Q_A_ROUGE"] = {"agg_value": M.mean(s.rouge), "value_by_index": vbi}
    r = s.truth_ratio_r(SPLITS[prefix][1])
    if r is not None:
        # per item OpenUnlearning's "score" = p(wrong) / p(base) = 1/R
        vbi = {str(i): {"score": float(1.0 / v)} for i, v in enumerate(r)}
        if prefix == "forget":
            out["forget_truth_ratio"] = {"agg_value": M.forget_truth_ratio(r), "value_by_index": vbi}
        else:
            out[f"{prefix}_Truth_Ratio"] = {"agg_value": M.utility_truth_ratio(r), "value_by_index": vbi}
    return out


def compute_metrics(
    splits: dict[str, SplitScores],
    mia: dict[str, dict] | None = None,
    reference: EvalLog | None = None,
    forget_r: np.ndarray | None = None,
) -> dict[str, dict]:
    """All TOFU metrics from per-item values, in `TOFU_EVAL.json` layout (OpenUnlearning names).

    `forget_r` overrides the forget set's R (for logs that store only the truth ratio).
    """
    out: dict[str, dict] = {}
    for prefix in SPLITS:
        if prefix in splits:
            out.update(_split_metrics(prefix, splits[prefix]))
    if forget_r is None and "forget" in splits:
        forget_r = splits["forget"].truth_ratio_r(paraphrased=True)
    if forget_r is not None and "forget_truth_ratio" not in out:
        out["forget_truth_ratio"] = {"agg_value": M.forget_truth_ratio(forget_r), "value_by_index": {str(i): {"score": float(1.0 / v)} for i, v in enumerate(forget_r)}}

    # forget quality: KS test of R against the retain model's R (DESIGN §3)
    if reference is None:
        out["forget_quality"] = _unavailable(NO_REFERENCE)
    elif forget_r is None:
        out["forget_quality"] = _unavailable("this log holds no per-item forget truth ratios")
    else:
        answers = splits["forget"].answers if "forget" in splits else None
        if answers:
            check_reference(reference, answers, "the forget split")
        elif reference.forget_r is None or len(reference.forget_r) != len(forget_r):
            check_reference(reference, [""] * len(forget_r), "the forget split")
        ks = M.forget_quality(forget_r, reference.forget_r)
        out["forget_quality"] = {
            "agg_value": ks.pvalue,
            "ks_statistic": ks.statistic,
            "log10": math.log10(ks.pvalue) if ks.pvalue > 0 else None,
            "median_R": float(np.median(forget_r)),
            "reference_median_R": float(np.median(reference.forget_r)),
            "reference": f"{reference.path} ({reference.format} format)",
        }

    missing = [k for k in UTILITY_METRICS if k not in out]
    if missing:
        out["model_utility"] = _unavailable(f"the log lacks {', '.join(missing)}")
    else:
        out["model_utility"] = {
            "agg_value": M.model_utility([out[k]["agg_value"] for k in UTILITY_METRICS]),
            "components": {k: out[k]["agg_value"] for k in UTILITY_METRICS},
        }

    if mia:
        out.update(mia)
        if "mia_min_k" not in mia:
            out["privleak"] = _unavailable("no Min-K% AUC for this model")
        elif reference is None:
            out["privleak"] = _unavailable("no --reference given: privleak compares with the retain model's Min-K% AUC")
        elif "mia_min_k" not in reference.mia_auc:
            out["privleak"] = _unavailable(f"the reference ({reference.format} format) has no Min-K% AUC (mia_min_k)")
        else:
            ref_auc = reference.mia_auc["mia_min_k"]
            try:
                value = MIA.privleak(mia["mia_min_k"]["agg_value"], ref_auc)
                out["privleak"] = {"agg_value": value, "reference_auc": ref_auc, "attack": "mia_min_k"}
            except ValueError as e:
                out["privleak"] = _unavailable(str(e))
    return out


def summarize(metrics: dict[str, dict]) -> dict[str, Any]:
    """TOFU_SUMMARY.json: each metric's aggregate, plus `unavailable: {name: reason}`."""
    summary: dict[str, Any] = {k: v.get("agg_value") for k, v in metrics.items()}
    reasons = {k: v["unavailable"] for k, v in metrics.items() if "unavailable" in v}
    if reasons:
        summary["unavailable"] = reasons
    return summary


def evaluate(
    scorer: Scorer,
    data: TofuData,
    reference: EvalLog | None = None,
    max_new_tokens: int = 200,
    mia: bool = True,
    min_k: float = MIA.MIN_K,
    progress: Progress | None = None,
) -> dict[str, dict]:
    """Score a model on every split and compute all metrics (TOFU_EVAL.json layout)."""
    if reference is not None:
        check_reference(reference, [r["answer"] for r in data.records["forget"]], data.forget)
    splits, mia_entries = score_model(scorer, data, max_new_tokens, mia, min_k, progress)
    return compute_metrics(splits, mia_entries if mia else None, reference)
