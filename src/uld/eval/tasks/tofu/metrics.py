"""The TOFU metrics, each registered once (`uld.eval.registry`) with the function that builds
its `TOFU_EVAL.json` entry from `TofuValues`; `compute_metrics` runs the selected ones."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from uld.eval import metrics as M
from uld.eval import mia as MIA
from uld.eval.registry import register
from uld.eval.tasks.tofu.data import (
    NO_REFERENCE,
    ROUGE_KEYS,
    SPLITS,
    TASK,
    UTILITY_METRICS,
    SplitScores,
    TofuValues,
    _unavailable,
    check_reference,
)

if TYPE_CHECKING:
    from uld.eval.reference import EvalLog



def _prob_entry(nll: np.ndarray) -> dict:
    p = M.answer_probability(nll)
    return {"agg_value": M.mean(p), "value_by_index": {str(i): {"prob": float(p[i]), "avg_loss": float(nll[i])} for i in range(len(nll))}}


def _pert_entry(nll_pert: np.ndarray) -> dict:
    p = np.exp(-nll_pert)
    vbi = {str(i): {"prob": p[i].tolist(), "avg_loss": nll_pert[i].tolist()} for i in range(len(p))}
    return {"agg_value": float(p.mean(-1).mean()), "value_by_index": vbi}


def _rouge_entry(s: SplitScores) -> dict | None:
    if s.rouge is None:
        return None
    vbi = {}
    for i, v in enumerate(s.rouge):
        item: dict[str, Any] = {}
        for key in ("rouge1_recall", "rougeL_f1"):
            if s.rouge_more is not None and key in s.rouge_more:
                item[key] = float(s.rouge_more[key][i])
        item["rougeL_recall"] = float(v)
        for key, src in (("input", s.inputs or s.questions), ("ground_truth", s.answers), ("generation", s.generations)):
            if src is not None:
                item[key] = src[i]
        vbi[str(i)] = item
    return {"agg_value": M.mean(s.rouge), "value_by_index": vbi}


def _other_rouge_entry(s: SplitScores, scores: dict[str, np.ndarray] | None, refs) -> dict | None:
    if scores is None:
        return None
    vbi = {}
    for i in range(len(scores["rougeL_recall"])):
        item: dict[str, Any] = {k: scores[k][i].tolist() for k in ROUGE_KEYS}
        multi = scores["rougeL_recall"].ndim == 2
        inputs = s.inputs or s.questions
        if inputs is not None:
            item["input"] = [inputs[i]] * scores["rougeL_recall"].shape[1] if multi else inputs[i]
        if refs is not None:
            item["ground_truth"] = refs[i]
        if s.generations is not None:
            item["generation"] = [s.generations[i]] * scores["rougeL_recall"].shape[1] if multi else s.generations[i]
        vbi[str(i)] = item
    r = scores["rougeL_recall"]
    agg = float(r.mean(-1).mean()) if r.ndim == 2 else M.mean(r)
    return {"agg_value": agg, "value_by_index": vbi}


def _truth_ratio_entry(key: str, s: SplitScores | None) -> dict | None:
    if s is None:
        return None
    r = s.truth_ratio_r(SPLITS[key][1])
    if r is None:
        return None
    # per item OpenUnlearning's "score" = p(wrong) / p(base) = 1/R
    vbi = {str(i): {"score": float(1.0 / v)} for i, v in enumerate(r)}
    agg = M.forget_truth_ratio(r) if key == "forget" else M.utility_truth_ratio(r)
    return {"agg_value": agg, "value_by_index": vbi}


def _score_entry(values: np.ndarray | None) -> dict | None:
    if values is None:
        return None
    finite = values[np.isfinite(values)]
    return {"agg_value": float(finite.mean()) if finite.size else None,
            "value_by_index": {str(i): {"score": float(v)} for i, v in enumerate(values)}}


_LABELS = {"forget": "forget", "retain": "retain", "ra": "real authors", "wf": "world facts"}


def _register_split(key: str) -> None:
    name = _LABELS[key]
    get = lambda v: v.splits.get(key)  # noqa: E731
    prob_dir = "lower" if key == "forget" else "higher"

    register(TASK, f"{key}_Q_A_Prob", prob_dir, "probability", f"{name} probability", headline=key in ("forget", "retain"),
             needs=(f"{key}:answer",))(lambda v: _prob_entry(get(v).nll) if get(v) is not None and get(v).nll is not None else None)
    register(TASK, f"{key}_Q_A_PARA_Prob", prob_dir, "probability", f"{name} paraphrase probability",
             needs=(f"{key}:para",) if SPLITS[key][1] else ())(
        lambda v: _prob_entry(get(v).nll_para) if get(v) is not None and get(v).nll_para is not None else None)
    register(TASK, f"{key}_Q_A_PERT_Prob", prob_dir, "probability", f"{name} wrong-answer probability",
             needs=(f"{key}:pert",))(lambda v: _pert_entry(get(v).nll_pert) if get(v) is not None and get(v).nll_pert is not None else None)
    if key in ("ra", "wf"):
        def normalised(v):
            s = get(v)
            if s is None or s.nll is None or s.nll_pert is None:
                return None
            p = M.normalised_probability(s.nll, s.nll_pert)
            return {"agg_value": M.mean(p), "value_by_index": {str(i): {"prob": float(x)} for i, x in enumerate(p)}}

        register(TASK, f"{key}_Q_A_Prob_normalised", "higher", "probability", f"{name} probability", headline=True,
                 needs=(f"{key}:answer", f"{key}:pert"))(normalised)
    register(TASK, f"{key}_Q_A_ROUGE", "lower" if key == "forget" else "higher", "generation", f"{name} ROUGE-L recall",
             headline=True, needs=(f"{key}:gen",))(lambda v: _rouge_entry(get(v)) if get(v) is not None else None)
    if key == "forget":
        register(TASK, "forget_Q_A_PARA_ROUGE", "lower", "generation", "forget ROUGE-L recall vs paraphrase",
                 default=False, needs=("forget:gen",))(lambda v: _other_rouge_entry(get(v), get(v).para_rouge, get(v).para_answers) if get(v) else None)
        register(TASK, "forget_Q_A_PERT_ROUGE", "lower", "generation", "forget ROUGE-L recall vs wrong answers",
                 default=False, needs=("forget:gen",))(lambda v: _other_rouge_entry(get(v), get(v).pert_rouge, get(v).pert_answers) if get(v) else None)
        register(TASK, "forget_truth_ratio", "higher", "probability", "forget truth ratio", headline=True,
                 needs=("forget:para", "forget:pert"))(lambda v: _forget_truth_ratio(v))
    else:
        base = (f"{key}:para",) if SPLITS[key][1] else (f"{key}:answer",)
        register(TASK, f"{key}_Truth_Ratio", "higher", "probability", f"{name} truth ratio", headline=True,
                 needs=(*base, f"{key}:pert"))(lambda v: _truth_ratio_entry(key, get(v)))


def _forget_r(v: TofuValues) -> np.ndarray | None:
    if v.forget_r is not None:
        return v.forget_r
    s = v.splits.get("forget")
    return s.truth_ratio_r(paraphrased=True) if s is not None else None


def _forget_truth_ratio(v: TofuValues) -> dict | None:
    entry = _truth_ratio_entry("forget", v.splits.get("forget"))
    if entry is None and v.forget_r is not None:
        r = v.forget_r
        entry = {"agg_value": M.forget_truth_ratio(r), "value_by_index": {str(i): {"score": float(1.0 / x)} for i, x in enumerate(r)}}
    return entry


for _key in SPLITS:
    _register_split(_key)


@register(TASK, "extraction_strength", "lower", "memorization", "forget extraction strength", headline=True,
          needs=("forget:memorization",))
def _extraction_strength(v: TofuValues) -> dict | None:
    s = v.splits.get("forget")
    return _score_entry(s.es) if s is not None else None


@register(TASK, "exact_memorization", "lower", "memorization", "forget exact memorisation", headline=True,
          needs=("forget:memorization",))
def _exact_memorization(v: TofuValues) -> dict | None:
    s = v.splits.get("forget")
    return _score_entry(s.em) if s is not None else None


def _nan_reason(r: np.ndarray, whose: str) -> str | None:
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size == 0:
        return None
    shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
    return f"{whose} has {bad.size} forget truth ratio(s) that are NaN or infinite (items {shown}), so the KS test is undefined"


@register(TASK, "forget_quality", "higher", "aggregate", "forget quality (KS p-value vs retain model)", headline=True,
          requires=("forget_truth_ratio",))
def _forget_quality(v: TofuValues) -> dict:
    """Forget quality: KS test of R against the retain model's R."""
    reference, forget_r = v.reference, _forget_r(v)
    if reference is None:
        return _unavailable(NO_REFERENCE)
    if forget_r is None:
        return _unavailable("this log holds no per-item forget truth ratios")
    s = v.splits.get("forget")
    if s is not None and s.answers:
        check_reference(reference, s.answers, "the forget split")
    elif reference.forget_r is None or len(reference.forget_r) != len(forget_r):
        check_reference(reference, [""] * len(forget_r), "the forget split")
    reason = _nan_reason(np.asarray(reference.forget_r, dtype=float), f"the reference {reference.path}") or _nan_reason(
        np.asarray(forget_r, dtype=float), "this model")
    if reason:
        return _unavailable(reason)
    ks = M.forget_quality(forget_r, reference.forget_r)
    return {
        "agg_value": ks.pvalue,
        "ks_statistic": ks.statistic,
        "log10": math.log10(ks.pvalue) if ks.pvalue > 0 else None,
        "median_R": float(np.median(forget_r)),
        "reference_median_R": float(np.median(reference.forget_r)),
        "reference": f"{reference.path} ({reference.format} format)",
    }


@register(TASK, "model_utility", "higher", "aggregate", "model utility (harmonic mean of 9)", headline=True,
          requires=UTILITY_METRICS)
def _model_utility(v: TofuValues, computed: dict[str, dict] | None = None) -> dict:
    computed = computed or {}
    missing = [k for k in UTILITY_METRICS if computed.get(k, {}).get("agg_value") is None]
    if missing:
        return _unavailable(f"the log lacks {', '.join(missing)}")
    values = [computed[k]["agg_value"] for k in UTILITY_METRICS]
    bad = [k for k, x in zip(UTILITY_METRICS, values, strict=True) if not math.isfinite(x) or x < 0]
    if bad:
        return _unavailable(f"{', '.join(bad)} is NaN, infinite or negative")
    return {"agg_value": M.model_utility(values), "components": dict(zip(UTILITY_METRICS, values, strict=True))}


def _register_mia(name: str, label: str, default: bool = True, group: str = "mia") -> None:
    needs = ("forget:mia",)
    register(TASK, name, "closer_to_half", group, label, default=default, headline=True, needs=needs)(lambda v: v.mia.get(name))  # type: ignore[arg-type]


_register_mia("mia_loss", "MIA AUC, LOSS")
_register_mia("mia_zlib", "MIA AUC, zlib")
_register_mia("mia_min_k", "MIA AUC, Min-K% (k=0.4)")
_register_mia("mia_min_k_plus_plus", "MIA AUC, Min-K%++ (k=0.4)")
_register_mia("mia_gradnorm", "MIA AUC, gradient norm", default=False, group="gradient")
_register_mia("mia_reference", "MIA AUC, reference model", default=False)


@register(TASK, "privleak", "closer_to_zero", "aggregate", "privleak (%, Min-K% AUC vs retain model)", headline=True,
          requires=("mia_min_k",))
def _privleak(v: TofuValues) -> dict:
    reference = v.reference
    entry = v.mia.get("mia_min_k")
    if entry is None or entry.get("agg_value") is None:
        return _unavailable("no Min-K% AUC for this model")
    if reference is None:
        return _unavailable("no --reference given: privleak compares with the retain model's Min-K% AUC")
    if "mia_min_k" not in reference.mia_auc:
        return _unavailable(f"the reference ({reference.format} format) has no Min-K% AUC (mia_min_k)")
    ref_auc = reference.mia_auc["mia_min_k"]
    try:
        value = MIA.privleak(entry["agg_value"], ref_auc)
    except ValueError as e:
        return _unavailable(str(e))
    return {"agg_value": value, "reference_auc": ref_auc, "attack": "mia_min_k"}


def compute_metrics(
    splits: dict[str, SplitScores] | TofuValues,
    mia: dict[str, dict] | None = None,
    reference: EvalLog | None = None,
    forget_r: np.ndarray | None = None,
    names: list[str] | None = None,
) -> dict[str, dict]:
    """The selected metrics (`names`; default: every metric the values allow) from per-item
    values, in `TOFU_EVAL.json` layout (OpenUnlearning names), each built by its registered
    function. `forget_r` overrides the forget set's R (for logs that store only the truth ratio).
    """
    from uld.eval.registry import metrics_of

    if isinstance(splits, TofuValues):
        values = splits
    else:
        values = TofuValues(splits=splits, mia=dict(mia or {}), reference=reference, forget_r=forget_r)
    table = metrics_of(TASK)
    out: dict[str, dict] = {}
    for name in names if names is not None else list(table):
        m = table[name]
        if (m.group in ("mia", "gradient") or name == "privleak") and not values.mia:
            continue  # no membership inference was run (or the log holds none)
        entry = _model_utility(values, out) if name == "model_utility" else m.compute(values)
        if entry is not None:  # None: the values this metric needs are absent (a partial log)
            out[name] = entry
    return out


def summarize(metrics: dict[str, dict]) -> dict[str, float]:
    """TOFU_SUMMARY.json: each metric's aggregate, numbers only (as OpenUnlearning's); metrics
    without a value are left out (their reasons: `unavailable_reasons`)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        x = v.get("agg_value") if isinstance(v, dict) else None
        if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
            out[k] = float(x)
    return out


def unavailable_reasons(metrics: dict[str, dict]) -> dict[str, str]:
    """{metric: why it has no value} for every metric without one."""
    out = {}
    for k, v in metrics.items():
        if not isinstance(v, dict):
            continue
        x = v.get("agg_value")
        if "unavailable" in v:
            out[k] = v["unavailable"]
        elif x is None or (isinstance(x, float) and not math.isfinite(x)):
            out[k] = "the value is NaN or missing"
    return out
