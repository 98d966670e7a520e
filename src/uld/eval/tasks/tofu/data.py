"""TOFU data, per-item value containers and tokenisation under the two protocols."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from uld.errors import UldError
from uld.eval import metrics as M
from uld.eval.lm import LoglikelihoodRequest

if TYPE_CHECKING:
    from uld.data.prompts import PromptFormat
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
    inputs: list[str] | None = None
    """The ROUGE entries' `input` when it is not the question (OpenUnlearning: the decoded prompt)."""

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
        self._prompts: dict[str, list[int]] = {}
        """Each question's prompt ids, tokenised once (a question is scored with many answers)."""

    def _prompt_ids(self, question: str) -> list[int]:
        ids = self._prompts.get(question)
        if ids is None:
            tok = self.tokenizer
            if self.protocol != "openunlearning":
                ids = self.fmt.prompt_ids(tok, question)
            elif self.chat:
                ids = _chat_ids(tok, [{"role": "user", "content": question}], True)
            else:
                wrapped = self.fmt.template.format(question=question) + self.fmt.answer_prefix
                ids = list(tok(wrapped, add_special_tokens=True)["input_ids"][: self.max_length])
            self._prompts[question] = ids
        return ids

    def _ou(self, question: str, answer: str) -> tuple[list[int], list[int], bool]:
        tok = self.tokenizer
        if self.chat:
            user = [{"role": "user", "content": question}]
            full = _chat_ids(tok, [*user, {"role": "assistant", "content": answer}], False)
            prompt = self._prompt_ids(question)
            truncated = False
        else:
            wrapped = self.fmt.template.format(question=question) + self.fmt.answer_prefix
            whole = tok(wrapped + answer, add_special_tokens=True)["input_ids"]
            truncated = len(whole) > self.max_length
            full = list(whole[: self.max_length])
            prompt = self._prompt_ids(question)
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

        enc = encode_qa(self.tokenizer, question, answer, self.fmt, self.max_length, self._prompt_ids(question))
        ids = enc.input_ids
        return LoglikelihoodRequest(tuple(ids[: enc.prompt_len]), tuple(ids[enc.prompt_len :])), enc.truncated

    def prompt(self, question: str) -> tuple[int, ...]:
        """The generation prompt's token ids (the scoring prompt, under either protocol)."""
        return tuple(self._prompt_ids(question))

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


def _unavailable(reason: str) -> dict:
    return {"agg_value": None, "unavailable": reason}


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
