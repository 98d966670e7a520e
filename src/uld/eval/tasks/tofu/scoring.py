"""TOFU requests to the model interface -> per-item values (`TofuValues`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from uld.eval import metrics as M
from uld.eval import mia as MIA
from uld.eval.lm import GenerationRequest, LoglikelihoodRequest
from uld.eval.tasks.tofu.data import (
    SPLITS,
    TASK,
    Progress,
    QAEncoder,
    SplitScores,
    TofuData,
    TofuValues,
    _unavailable,
)

if TYPE_CHECKING:
    from uld.eval.lm import LanguageModel, TokenScores

def _needs(names: list[str]) -> dict[str, set[str]]:
    """Per split key, which candidate answers / generation the selected metrics need."""
    from uld.eval.registry import metrics_of

    table = metrics_of(TASK)
    need: dict[str, set[str]] = {}
    for n in names:
        for item in table[n].needs:
            split, _, what = item.partition(":")
            need.setdefault(split, set()).add(what)
    return need


def _memorization(stats: list[TokenScores], eos: int | None, continuations: list[tuple[int, ...]], protocol: str):
    es, em = [], []
    for s, cont in zip(stats, continuations, strict=True):
        g = s.greedy
        # the final EOS is a formatting token, not part of the answer
        if protocol == "openunlearning" or (eos is not None and cont and cont[-1] == eos):
            g = g[:-1]
        es.append(M.extraction_strength(g, openunlearning=protocol == "openunlearning"))
        em.append(M.exact_memorization(g) if g.size else float("nan"))
    return np.array(es), np.array(em)


def _mia_scores(stats: list[TokenScores], texts: list[str], min_k: float, protocol: str) -> dict[str, list[float]]:
    """Per-item attack scores in OpenUnlearning's sign: lower = more likely a member."""
    ou = protocol == "openunlearning"

    def tokens(s: TokenScores):
        # OpenUnlearning's token-wise attacks leave out the final (EOS) token
        if ou and s.logprob.size > 1:
            return s.logprob[:-1], s.mu[:-1], s.sigma2[:-1]
        return s.logprob, s.mu, s.sigma2

    out: dict[str, list[float]] = {"mia_loss": [], "mia_zlib": [], "mia_min_k": [], "mia_min_k_plus_plus": []}
    for s, t in zip(stats, texts, strict=True):
        lp, mu, sigma2 = tokens(s)
        out["mia_loss"].append(-MIA.loss_score(s.nll))
        out["mia_zlib"].append(-MIA.zlib_score(s.nll, t))
        out["mia_min_k"].append(-MIA.min_k_score(lp, min_k))
        out["mia_min_k_plus_plus"].append(-MIA.min_k_plus_plus_score(lp, mu, sigma2, min_k))
    return out


def mia_entry(forget_scores: list[float], holdout_scores: list[float]) -> dict:
    """An `mia_*` entry as OpenUnlearning writes it: per-item scores (lower = member), and the
    AUC of telling forget from holdout (1 when the forget set is much more likely)."""
    auc = MIA.auc([-v for v in forget_scores], [-v for v in holdout_scores])
    side = {k: {"agg_value": float(np.mean(v)), "value_by_index": {str(i): {"score": float(x)} for i, x in enumerate(v)}}
            for k, v in (("forget", forget_scores), ("holdout", holdout_scores))}
    return {"agg_value": auc, "auc": auc, **side}


def mia_metrics(forget_stats, forget_texts, holdout_stats, holdout_texts, min_k: float = MIA.MIN_K,
                protocol: str = "uld") -> dict[str, dict]:
    """The four likelihood-based `mia_*` entries of forget (members) vs holdout."""
    f = _mia_scores(forget_stats, forget_texts, min_k, protocol)
    h = _mia_scores(holdout_stats, holdout_texts, min_k, protocol)
    return {name: mia_entry(f[name], h[name]) for name in MIA.ATTACKS}


def score(
    lm: LanguageModel,
    encoder: QAEncoder,
    data: TofuData,
    names: list[str],
    max_new_tokens: int = 200,
    min_k: float = MIA.MIN_K,
    progress: Progress | None = None,
    reference_lm: LanguageModel | None = None,
    gradnorm_p: float = 2.0,
) -> TofuValues:
    """Per-item values for the metrics `names` (already closed under dependencies).

    All candidate answers of a split (answer, paraphrase, K wrong answers per item) are flattened
    into one list of requests and scored in padded batches; each question is generated once, and
    its generation is compared with the answer, the paraphrase and every wrong answer.
    """
    need = _needs(names)
    protocol = encoder.protocol
    values = TofuValues(protocol=protocol)
    want_mia = "mia" in need.get("forget", set())
    # the likelihood attacks and the reference attack need the answers' scores; the gradient
    # attack alone needs only the requests (it runs its own forward and backward passes)
    likelihood_mia = want_mia and bool(set(names) & set(MIA.ATTACKS))
    scored_mia = likelihood_mia or (want_mia and "mia_reference" in names)
    forget_stats: list[TokenScores] | None = None
    forget_reqs: list[LoglikelihoodRequest] | None = None
    for key, (_, has_para) in SPLITS.items():
        what = need.get(key, set())
        if not what:
            continue
        rows = data.records[key]
        n, k = len(rows), len(rows[0]["perturbed_answer"])
        qs = [r["question"] for r in rows]
        answers = [r["answer"] for r in rows]
        s = SplitScores(questions=qs, answers=answers)
        # log-likelihood requests: answers (also for ES/EM and MIA), paraphrases, wrong answers
        want_answer = bool(what & {"answer", "memorization"}) or (key == "forget" and scored_mia)
        if key == "forget" and want_mia and not want_answer:
            forget_reqs = [encoder.request(q, a)[0] for q, a in zip(qs, answers, strict=True)]
        pairs: list[tuple[str, str]] = []
        if want_answer:
            pairs += list(zip(qs, answers, strict=True))
        if has_para and "para" in what:
            pairs += [(r["question"], r["paraphrased_answer"]) for r in rows]
        if "pert" in what:
            pairs += [(r["question"], p) for r in rows for p in r["perturbed_answer"]]
        if pairs:
            encoded = [encoder.request(q, a) for q, a in pairs]
            reqs = [e[0] for e in encoded]
            values.truncated += sum(e[1] for e in encoded)
            tick = progress(f"scoring {key}", len(reqs)) if progress else None
            stats = lm.loglikelihood(reqs, vocab_stats=likelihood_mia and key == "forget", progress=tick)
            nll = np.array([st.nll for st in stats])
            off = 0
            if want_answer:
                s.nll, off = nll[:n], n
                if "memorization" in what:
                    s.es, s.em = _memorization(stats[:n], encoder.tokenizer.eos_token_id,
                                               [r.continuation for r in reqs[:n]], protocol)
                if key == "forget":
                    forget_stats, forget_reqs = stats[:n], reqs[:n]
            if has_para and "para" in what:
                s.nll_para, off = nll[off : off + n], off + n
            if "pert" in what:
                s.nll_pert = nll[off:].reshape(n, k)
        if "gen" in what:
            tick = progress(f"generating {key}", n) if progress else None
            gens = lm.generate_until([GenerationRequest(encoder.prompt(q), max_new_tokens) for q in qs], progress=tick)
            refs = [encoder.reference_text(q, a) for q, a in zip(qs, answers, strict=True)]
            scores = M.rouge_scores(gens, refs)
            s.generations, s.rouge = gens, scores["rougeL_recall"]
            s.rouge_more = {kk: scores[kk] for kk in ("rouge1_recall", "rougeL_f1")}
            if protocol == "openunlearning":
                s.answers = refs
                s.inputs = [encoder.tokenizer.decode(list(encoder.prompt(q)), skip_special_tokens=True) for q in qs]
            if key == "forget" and has_para:
                paras = [encoder.reference_text(r["question"], r["paraphrased_answer"]) for r in rows]
                s.para_answers, s.para_rouge = paras, M.rouge_scores(gens, paras)
                perts = [[encoder.reference_text(r["question"], p) for p in r["perturbed_answer"]] for r in rows]
                flat = M.rouge_scores([g for g in gens for _ in range(k)], [p for row in perts for p in row])
                s.pert_answers, s.pert_rouge = perts, {kk: v.reshape(n, k) for kk, v in flat.items()}
        values.splits[key] = s

    if want_mia:
        rows = data.records["holdout"]
        hold_encoded = [encoder.request(r["question"], r["answer"]) for r in rows]
        hold_reqs = [e[0] for e in hold_encoded]
        if scored_mia:
            tick = progress("scoring holdout", len(rows)) if progress else None
            hold_stats = lm.loglikelihood(hold_reqs, vocab_stats=likelihood_mia, progress=tick)
        if likelihood_mia:
            forget_texts = [r["answer"] for r in data.records["forget"]]
            hold_texts = [r["answer"] for r in rows]
            if protocol == "openunlearning":  # OpenUnlearning's zlib compresses the decoded labels
                dec = encoder.tokenizer.decode
                forget_texts = [dec(list(r.continuation), skip_special_tokens=True) for r in forget_reqs]
                hold_texts = [dec(list(r.continuation), skip_special_tokens=True) for r in hold_reqs]
            values.mia = mia_metrics(forget_stats, forget_texts, hold_stats, hold_texts, min_k, protocol)
        if "mia_gradnorm" in names and not hasattr(lm, "grad_norms"):
            values.mia["mia_gradnorm"] = _unavailable("this model interface gives no gradients")
        elif "mia_gradnorm" in names:
            def trim(reqs):  # OpenUnlearning's gradient attack leaves out the final (EOS) token
                if protocol != "openunlearning":
                    return reqs
                return [LoglikelihoodRequest(r.context, r.continuation[:-1]) if len(r.continuation) > 1 else r for r in reqs]

            tick = progress("gradient norms", len(forget_reqs) + len(hold_reqs)) if progress else None
            f = lm.grad_norms(trim(forget_reqs), p=gradnorm_p, progress=tick)
            h = lm.grad_norms(trim(hold_reqs), p=gradnorm_p, progress=tick)
            values.mia["mia_gradnorm"] = mia_entry(f, h)
        if "mia_reference" in names:
            if reference_lm is None:
                values.mia["mia_reference"] = _unavailable("no --reference-model given: the reference attack compares with a reference model's loss")
            else:
                tick = progress("reference model", len(forget_reqs) + len(hold_reqs)) if progress else None
                rf = reference_lm.loglikelihood(forget_reqs, progress=tick)
                rh = reference_lm.loglikelihood(hold_reqs, progress=tick)
                values.mia["mia_reference"] = mia_entry(
                    [MIA.reference_score(a.nll, b.nll) for a, b in zip(forget_stats, rf, strict=True)],
                    [MIA.reference_score(a.nll, b.nll) for a, b in zip(hold_stats, rh, strict=True)],
                )
    return values
