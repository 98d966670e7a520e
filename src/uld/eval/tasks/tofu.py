"""The TOFU task: records -> requests to the model interface -> per-item values -> metrics.

Three steps, each usable alone:
1. `load_tofu_data(source, forget, max_items)`: the evaluation records of every split;
2. `score(lm, encoder, data, names)`: per-item values (`TofuValues`) through a `LanguageModel`;
3. `compute_metrics(...)`: the metrics, in OpenUnlearning's `TOFU_EVAL.json` layout
   `{name: {"agg_value": ..., "value_by_index": {...}}}`, each built by its registered function
   (`uld.eval.registry`). `uld aggregate` runs only this step, on values read back from a log.

Prompt formatting and tokenisation live here (`QAEncoder`), under one of two protocols
(`uld.eval.config.PROTOCOLS`). A metric that cannot be computed is
`{"agg_value": None, "unavailable": "<reason>"}`.
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
from uld.eval.lm import GenerationRequest, LoglikelihoodRequest
from uld.eval.registry import register, select

if TYPE_CHECKING:
    from uld.data.prompts import PromptFormat
    from uld.eval.lm import LanguageModel, TokenScores
    from uld.eval.reference import EvalLog

TASK = "tofu"

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
ROUGE_KEYS = ("rouge1_recall", "rougeL_f1", "rougeL_recall")

Record = dict[str, Any]
Progress = Callable[[str, int], Callable[[int], None]]
"""`progress(description, total)` returns a function called with the number of items done."""
Warn = Callable[[str], None]


@dataclass
class SplitScores:
    """Per-item values of one evaluation split (N items, K wrong answers each).

    nll (N,): l(answer); nll_para (N,): l(paraphrased answer), forget/retain only;
    nll_pert (N, K): l(each perturbed answer); rouge (N,): ROUGE-L recall of the greedy
    generation against the answer, `rouge_more` its ROUGE-1 recall and ROUGE-L F1;
    `para_rouge` / `pert_rouge`: the three ROUGE numbers of the same generation against the
    paraphrased (N,) / each perturbed answer (N, K); es / em (N,): extraction strength and exact
    memorisation of the answer. Any of them may be missing when read back from a partial log.
    """

    nll: np.ndarray | None = None
    nll_para: np.ndarray | None = None
    nll_pert: np.ndarray | None = None
    rouge: np.ndarray | None = None
    questions: list[str] | None = None
    answers: list[str] | None = None
    generations: list[str] | None = None
    rouge_more: dict[str, np.ndarray] | None = None
    para_rouge: dict[str, np.ndarray] | None = None
    pert_rouge: dict[str, np.ndarray] | None = None
    para_answers: list[str] | None = None
    pert_answers: list[list[str]] | None = None
    es: np.ndarray | None = None
    em: np.ndarray | None = None

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


def load_tofu_data(source: str, forget: str, max_items: int | None = None, mia: bool = True,
                   splits: tuple[str, ...] | None = None) -> TofuData:
    """Read every split the evaluation needs; the first `max_items` of each (TOFU used 300)."""
    from uld.data.records import load_split

    if max_items is not None and max_items < 1:
        raise UldError(f"--max-items must be at least 1, got {max_items}")
    holdout = holdout_split_for(forget)
    data = TofuData(forget=forget, holdout=holdout)
    for key, (split, has_para) in SPLITS.items():
        if splits is not None and key not in splits:
            continue
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


# ---- tokenisation: the two protocols -------------------------------------------------------


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
        ids = ids["input_ids"]
    return list(ids)


class QAEncoder:
    """Turns (question, answer) pairs into log-likelihood and generation requests.

    protocol `uld`: prompt and answer tokenised separately (`encode_qa`), answers longer than
    `max_length` cut from the end; `openunlearning`: OpenUnlearning's `preprocess_chat_instance`
    (one string, the first len(tok(prompt)) positions masked, the prompt's trailing space kept
    in the generation prompt, truncation of both at `max_length`, EOS appended when missing).
    """

    def __init__(self, tokenizer, fmt: PromptFormat, protocol: str = "uld", max_length: int = 512):
        self.tokenizer, self.fmt, self.protocol, self.max_length = tokenizer, fmt, protocol, max_length
        self.chat = bool(fmt.use_chat_template and getattr(tokenizer, "chat_template", None))

    def _ou(self, question: str, answer: str) -> tuple[list[int], list[int], bool]:
        tok = self.tokenizer
        if self.chat:
            user = [{"role": "user", "content": question}]
            full = _chat_ids(tok, [*user, {"role": "assistant", "content": answer}], False)
            prompt = _chat_ids(tok, user, True)
            truncated = False
        else:
            wrapped = self.fmt.template.format(question=question) + self.fmt.answer_prefix
            whole = tok(wrapped + answer, add_special_tokens=True)["input_ids"]
            truncated = len(whole) > self.max_length
            full = list(whole[: self.max_length])
            prompt = list(tok(wrapped, add_special_tokens=True)["input_ids"][: self.max_length])
        if tok.eos_token_id is not None and (not full or full[-1] != tok.eos_token_id):
            full.append(tok.eos_token_id)
        return full, prompt, truncated

    def request(self, question: str, answer: str) -> tuple[LoglikelihoodRequest, bool]:
        """The request scoring `answer` after `question`'s prompt, and whether it was cut."""
        if self.protocol == "openunlearning":
            full, prompt, truncated = self._ou(question, answer)
            n = min(len(prompt), len(full) - 1)
            return LoglikelihoodRequest(tuple(full[:n]), tuple(full[n:])), truncated
        from uld.data.prompts import encode_qa

        enc = encode_qa(self.tokenizer, question, answer, self.fmt, self.max_length)
        ids = enc.input_ids
        return LoglikelihoodRequest(tuple(ids[: enc.prompt_len]), tuple(ids[enc.prompt_len :])), enc.truncated

    def prompt(self, question: str) -> tuple[int, ...]:
        """The generation prompt's token ids."""
        if self.protocol == "openunlearning":
            if self.chat:
                return tuple(_chat_ids(self.tokenizer, [{"role": "user", "content": question}], True))
            wrapped = self.fmt.template.format(question=question) + self.fmt.answer_prefix
            return tuple(self.tokenizer(wrapped, add_special_tokens=True)["input_ids"][: self.max_length])
        return tuple(self.fmt.prompt_ids(self.tokenizer, question))

    def reference_text(self, question: str, answer: str) -> str:
        """What ROUGE compares a generation with: the answer (`uld`); OpenUnlearning's decoded
        full sequence minus the decoded prompt, stripped (`openunlearning`)."""
        if self.protocol != "openunlearning":
            return answer
        full, prompt, _ = self._ou(question, answer)
        dec = self.tokenizer.decode
        return dec(full, skip_special_tokens=True).replace(dec(prompt, skip_special_tokens=True), "").strip()

    def prompt_lengths(self, questions: list[str]) -> list[int]:
        return [len(self.prompt(q)) for q in questions]


# ---- scoring --------------------------------------------------------------------------------


@dataclass
class TofuValues:
    """Everything the TOFU metrics are computed from."""

    splits: dict[str, SplitScores] = field(default_factory=dict)
    mia: dict[str, dict] = field(default_factory=dict)
    """Finished `mia_*` entries (from scoring) or `{"agg_value": auc}` (read from a log)."""
    reference: EvalLog | None = None
    forget_r: np.ndarray | None = None
    """Overrides the forget set's R (for logs that store only the truth ratio)."""
    protocol: str = "uld"
    truncated: int = 0
    """Scored pairs whose answer was cut at `max_length`."""


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
        want_answer = bool(what & {"answer", "mia", "memorization"})
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
            stats = lm.loglikelihood(reqs, vocab_stats=want_mia and key == "forget", progress=tick)
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
        tick = progress("scoring holdout", len(rows)) if progress else None
        hold_stats = lm.loglikelihood(hold_reqs, vocab_stats=True, progress=tick)
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


# ---- metrics (registered) --------------------------------------------------------------------


def _unavailable(reason: str) -> dict:
    return {"agg_value": None, "unavailable": reason}


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
        for key, src in (("input", s.questions), ("ground_truth", s.answers), ("generation", s.generations)):
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
        if s.questions is not None:
            item["input"] = [s.questions[i]] * scores["rougeL_recall"].shape[1] if multi else s.questions[i]
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
