"""The TOFU task on the model interface: both tokenisation protocols, the new metrics (ES, EM,
paraphrased / perturbed ROUGE, gradient-norm and reference-model MIA), the metric registry and
the result schema, with values worked out by hand from a `FakeLM` table."""

import math

import numpy as np
import pytest

from uld.data.prompts import PromptFormat
from uld.errors import UldError
from uld.eval import metrics as M
from uld.eval.registry import select
from uld.eval.tasks.tofu import (
    QAEncoder,
    compute_metrics,
    evaluate_tofu,
    load_tofu_data,
    mia_entry,
    summarize,
)
from uld.testing import FakeLM

QA = PromptFormat("Question: {question}\nAnswer:", " ", use_chat_template=False)  # OpenUnlearning's non-chat template
Q, A = "Where was the author born?", "The author was born in Paris."


def _hand_nll(table, context, continuation):
    seq = list(context) + list(continuation)
    c = len(context)
    return -np.mean([table[seq[t - 1], seq[t]] for t in range(c, len(seq))])


def test_openunlearning_protocol_masks_the_merged_first_answer_token(tokenizer):
    """Byte-level BPE: tok("...Answer: ") ends in a lone "Ġ"; tok("...Answer: The ...") merges it
    into "ĠThe". OpenUnlearning masks the first len(tok(prompt)) positions, so "ĠThe" is never
    scored and the generation prompt ends in the lone space; uld scores "ĠThe"."""
    ou = QAEncoder(tokenizer, QA, "openunlearning")
    uld = QAEncoder(tokenizer, QA, "uld")
    prompt = tokenizer(f"Question: {Q}\nAnswer: ")["input_ids"]
    full = tokenizer(f"Question: {Q}\nAnswer: {A}")["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.convert_ids_to_tokens(prompt[-1:]) == ["Ġ"]
    assert tokenizer.convert_ids_to_tokens(full[len(prompt) - 1 : len(prompt)]) == ["ĠThe"]

    r_ou, _ = ou.request(Q, A)
    assert list(r_ou.context) == full[: len(prompt)] and list(r_ou.continuation) == full[len(prompt) :]
    assert tokenizer.convert_ids_to_tokens(r_ou.continuation[:1]) == ["Ġauthor"]  # "ĠThe" masked
    assert list(ou.prompt(Q)) == prompt  # generation starts after the lone space

    r_uld, _ = uld.request(Q, A)
    assert tokenizer.convert_ids_to_tokens(r_uld.continuation[:1]) == ["ĠThe"]  # scored
    assert tokenizer.convert_ids_to_tokens(list(uld.prompt(Q))[-1:]) == [":"]
    assert ou.reference_text(Q, A) == A

    # per-item values under each rule, from the table by hand
    lm = FakeLM(tokenizer, seed=1)
    got_ou, got_uld = (lm.loglikelihood([r])[0].nll for r in (r_ou, r_uld))
    assert got_ou == pytest.approx(_hand_nll(lm.table, full[: len(prompt)], full[len(prompt) :]), abs=1e-12)
    uld_ans = tokenizer(" " + A, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    uld_prompt = tokenizer(f"Question: {Q}\nAnswer:")["input_ids"]
    assert got_uld == pytest.approx(_hand_nll(lm.table, uld_prompt, uld_ans), abs=1e-12)
    assert abs(got_ou - got_uld) > 1e-3


def test_extraction_strength_and_exact_memorisation_by_hand():
    g = [True, True, False, True, True]
    assert M.extraction_strength(g) == pytest.approx(1 - 3 / 5)  # suffix from offset 3 is all greedy
    assert M.exact_memorization(g) == pytest.approx(4 / 5)
    assert M.extraction_strength([True] * 4) == 1.0
    # the last token wrong: nothing extractable (0) -- OpenUnlearning's loop stops at k = T-1 (1/T)
    assert M.extraction_strength([True, True, True, False]) == 0.0
    assert M.extraction_strength([True, True, True, False], openunlearning=True) == pytest.approx(1 / 4)
    assert M.extraction_strength([False, True, True, True], openunlearning=True) == pytest.approx(1 - 1 / 4)


def test_mia_entries_use_openunlearning_sign_and_auc():
    """Scores: lower = member. forget (0.1, 0.5) vs holdout (0.3, 0.9): pairs where forget is
    lower: (0.1<0.3), (0.1<0.9), (0.5<0.9) = 3 of 4 -> AUC 0.75."""
    e = mia_entry([0.1, 0.5], [0.3, 0.9])
    assert e["auc"] == e["agg_value"] == pytest.approx(0.75)
    assert e["forget"]["value_by_index"]["1"]["score"] == 0.5 and e["holdout"]["agg_value"] == pytest.approx(0.6)


@pytest.fixture(scope="module")
def data():
    from conftest import TOFU_DIR

    if not TOFU_DIR.is_dir():
        pytest.skip("TOFU mirror absent")
    return load_tofu_data(str(TOFU_DIR), "forget01", max_items=3)


@pytest.mark.parametrize("protocol", ["uld", "openunlearning"])
def test_tofu_task_on_fake_lm_per_item_values_by_hand(protocol, data, tokenizer):
    lm, ref = FakeLM(tokenizer, seed=2), FakeLM(tokenizer, seed=3)
    names = select("tofu", "all")
    out = evaluate_tofu(lm, data, QA, names, protocol=protocol, max_new_tokens=6, reference_lm=ref)
    enc = QAEncoder(tokenizer, QA, protocol)
    rows = data.records["forget"]
    for i, r in enumerate(rows):
        req, _ = enc.request(r["question"], r["answer"])
        nll = _hand_nll(lm.table, req.context, req.continuation)
        assert out["forget_Q_A_Prob"]["value_by_index"][str(i)]["avg_loss"] == pytest.approx(nll, abs=1e-12)
        assert out["mia_loss"]["forget"]["value_by_index"][str(i)]["score"] == pytest.approx(nll, abs=1e-12)
        ref_nll = _hand_nll(ref.table, req.context, req.continuation)
        assert out["mia_reference"]["forget"]["value_by_index"][str(i)]["score"] == pytest.approx(nll - ref_nll, abs=1e-12)
        # Min-K% (k = 0.4), OpenUnlearning's sign; the openunlearning rule leaves out the EOS
        seq = list(req.context) + list(req.continuation)
        lp = [lm.table[seq[t - 1], seq[t]] for t in range(len(req.context), len(seq))]
        lp = lp[:-1] if protocol == "openunlearning" else lp
        kept = sorted(lp)[: max(1, int(len(lp) * 0.4))]
        assert out["mia_min_k"]["forget"]["value_by_index"][str(i)]["score"] == pytest.approx(-np.mean(kept), abs=1e-12)
        # ES / EM over the answer tokens without the final EOS
        greedy = [lm.table[seq[t - 1]].argmax() == seq[t] for t in range(len(req.context), len(seq) - 1)]
        assert out["exact_memorization"]["value_by_index"][str(i)]["score"] == pytest.approx(np.mean(greedy))
        rouge = out["forget_Q_A_ROUGE"]["value_by_index"][str(i)]
        assert {"rouge1_recall", "rougeL_f1", "rougeL_recall", "input", "ground_truth", "generation"} <= set(rouge)
        pert = out["forget_Q_A_PERT_ROUGE"]["value_by_index"][str(i)]
        assert len(pert["rougeL_recall"]) == 5 and len(pert["ground_truth"]) == 5
    assert "gradients" in out["mia_gradnorm"]["unavailable"]  # a FakeLM has none (gradnorm: test_eval_lm.py)
    for name in ("mia_loss", "mia_min_k", "mia_reference"):
        assert out[name]["auc"] == out[name]["agg_value"]
    # generation-based metrics share one generation per question
    para = out["forget_Q_A_PARA_ROUGE"]["value_by_index"]["0"]
    assert para["generation"] == out["forget_Q_A_ROUGE"]["value_by_index"]["0"]["generation"]
    summary = summarize(out)
    assert all(isinstance(v, float) for v in summary.values())
    assert "forget_quality" not in summary and out["forget_quality"]["unavailable"]


def test_metric_selection_and_registry():
    assert "mia_gradnorm" not in select("tofu", "default") and "mia_gradnorm" in select("tofu", "all")
    # dependencies come along: model utility needs its nine components
    chosen = select("tofu", "model_utility")
    assert len(chosen) == 10 and "ra_Truth_Ratio" in chosen
    assert select("tofu", "memorization") == ["extraction_strength", "exact_memorization"]
    with pytest.raises(UldError, match="did you mean 'forget_quality'"):
        select("tofu", "forget_qualty")
    assert M.direction_of("extraction_strength") == "lower"  # a result metric: less memorised is better


def test_reference_with_nan_gives_forget_quality_unavailable_with_reason(data, tokenizer):
    from pathlib import Path

    from uld.eval.reference import EvalLog

    out = evaluate_tofu(FakeLM(tokenizer), data, QA, select("tofu", "forget_quality"), max_new_tokens=2)
    assert out["forget_quality"]["unavailable"]
    ref = EvalLog(path=Path("ref.json"), format="openunlearning", forget_r=np.array([1.0, math.nan, 2.0]),
                  forget_answers=[r["answer"] for r in data.records["forget"]])
    fq = compute_metrics({}, reference=ref, forget_r=np.array([1.0, 1.5, 2.0]))["forget_quality"]
    assert fq["agg_value"] is None and "NaN" in fq["unavailable"] and "items 1" in fq["unavailable"]


def test_prompt_longer_than_the_context_is_refused_and_max_length_that_cuts_prompts(data, tokenizer):
    with pytest.raises(UldError, match="does not fit the model's context of 10 tokens"):
        evaluate_tofu(FakeLM(tokenizer, max_length=10), data, QA, select("tofu", "forget_Q_A_ROUGE"), max_new_tokens=2)
    with pytest.raises(UldError, match="--max-length 5 leaves no room for the answer"):
        evaluate_tofu(FakeLM(tokenizer), data, QA, select("tofu", "forget_Q_A_Prob"), max_length=5)
    warnings = []
    evaluate_tofu(FakeLM(tokenizer), data, QA, select("tofu", "forget_Q_A_Prob"), max_length=100, warn=warnings.append)
    assert any("were cut at --max-length 100" in w for w in warnings)
