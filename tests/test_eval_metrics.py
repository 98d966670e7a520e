"""TOFU metrics and MIA statistics on small arrays, against values worked out by hand."""

import math
import zlib

import numpy as np
import pytest

from uld.eval import metrics as M
from uld.eval import mia as MIA

LN2, LN4, LN8 = math.log(2), math.log(4), math.log(8)


def test_answer_probability_is_exp_of_minus_mean_nll():
    # l = 0 -> p = 1; l = ln 2 -> p = 1/2
    assert M.answer_probability([0.0, LN2]) == pytest.approx([1.0, 0.5])
    assert M.answer_probability.better == "higher"


def test_normalised_probability_divides_by_true_plus_all_wrong():
    # p(true) = 1/2, two wrong answers of 1/4 each -> 0.5 / (0.5 + 0.25 + 0.25) = 0.5
    # p(true) = 1/4, wrong 1/8 and 1/8 -> 0.25 / 0.5 = 0.5; wrong 1/2, 1/4 with true 1/4 -> 0.25
    out = M.normalised_probability([LN2, LN4, LN4], np.array([[LN4, LN4], [LN8, LN8], [LN2, LN4]]))
    assert out == pytest.approx([0.5, 0.5, 0.25])


def test_truth_ratio_stat_uses_mean_of_perturbed_nll():
    # R = exp(mean(ln4, ln8) - ln2) = exp(2.5 ln2 - ln2) = 2^1.5
    assert M.truth_ratio_stat([LN2], np.array([[LN4, LN8]])) == pytest.approx([2**1.5])


def test_forget_truth_ratio_is_mean_of_min_r_and_inverse():
    # min(2, 1/2) = 0.5, min(0.5, 2) = 0.5, min(1, 1) = 1 -> 2/3; symmetric in R <-> 1/R
    r = np.array([2.0, 0.5, 1.0])
    assert M.forget_truth_ratio(r) == pytest.approx(2 / 3)
    assert M.forget_truth_ratio(1 / r) == pytest.approx(2 / 3)


def test_utility_truth_ratio_is_mean_of_one_minus_inverse_clipped_at_zero():
    # 1 - 1/2 = 0.5, max(0, 1 - 2) = 0, 1 - 1/4 = 0.75 -> 1.25 / 3
    assert M.utility_truth_ratio([2.0, 0.5, 4.0]) == pytest.approx(1.25 / 3)


def test_model_utility_is_harmonic_mean_and_zero_when_any_is_zero():
    # 3 / (1/1 + 1/0.5 + 1/0.25) = 3/7
    assert M.model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert M.model_utility([1.0, 0.0, 0.25]) == 0.0
    with pytest.raises(ValueError):
        M.model_utility([1.0, -0.1])


def test_rouge_l_recall_counts_lcs_over_answer_words_with_stemming():
    # LCS(the cat sat on the mat | the cat is on a mat) = the cat on mat: 4 of 6 answer words
    # "running" and "runs" both stem to "run", "quickly" to "quickli": recall 1
    out = M.rouge_l_recall(["the cat is on a mat", "she running quickly"], ["the cat sat on the mat", "She runs quickly"])
    assert out == pytest.approx([4 / 6, 1.0])


def test_rouge_scores_equal_rouge_score_defaults_when_texts_repeat():
    """Stems and tokenised texts are kept between comparisons: the same generation scored
    against several references, twice over, gives rouge_score's own numbers every time."""
    from rouge_score import rouge_scorer

    gens = ["He was running quickly, generously.", "He was running quickly, generously.", "A mat"]
    refs = ["She runs quickly", "The generous runner ran", "a mat, mats and matting"]
    plain = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    for _ in range(2):
        got = M.rouge_scores(gens, refs)
        for i, (g, r) in enumerate(zip(gens, refs, strict=True)):
            want = plain.score(r, g)
            assert got["rouge1_recall"][i] == want["rouge1"].recall
            assert got["rougeL_recall"][i] == want["rougeL"].recall
            assert got["rougeL_f1"][i] == want["rougeL"].fmeasure


def test_forget_quality_is_ks_p_value():
    # fully separated samples of 3 and 3: D = 1, exact p = 2 / C(6, 3) = 0.1
    ks = M.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert ks.statistic == 1.0 and ks.pvalue == pytest.approx(0.1)


def test_forget_quality_unchanged_when_r_replaced_by_inverse():
    """OpenUnlearning stores 1/R, TOFU R: the KS test depends on ranks only, so FQ is the same.
    A non-monotone map (min(R, 1/R)) does change it, so the check has teeth."""
    rng = np.random.default_rng(0)
    r_model = np.exp(rng.normal(0.8, 1.0, 40))
    r_ref = np.exp(rng.normal(0.0, 0.7, 40))
    fq = M.forget_quality(r_model, r_ref).pvalue
    assert M.forget_quality(1 / r_model, 1 / r_ref).pvalue == fq
    folded = M.forget_quality(np.minimum(r_model, 1 / r_model), np.minimum(r_ref, 1 / r_ref)).pvalue
    assert folded != pytest.approx(fq)


def test_directions_are_declared():
    assert M.direction_of("forget_quality") == "higher"
    assert M.direction_of("forget_Q_A_ROUGE") == "lower"
    assert M.direction_of("privleak") == "closer_to_zero"
    assert MIA.auc.better == "closer_to_half"


def test_min_k_keeps_lowest_fraction_at_least_one_token():
    lp = [-1.0, -2.0, -3.0, -4.0, -5.0]
    assert MIA.min_k_score(lp, 0.4) == pytest.approx(-4.5)  # floor(0.4 * 5) = 2 tokens: -5, -4
    assert MIA.min_k_score(lp, 0.1) == pytest.approx(-5.0)  # floor(0.5) = 0 -> at least 1


def test_min_k_plus_plus_standardises_by_vocab_mean_and_std():
    lp = np.array([-1.0, -2.0, -3.0, -4.0, -5.0])
    # mu = 0, sigma^2 = 4 -> z = lp / 2; lowest 2: -2.5, -2 -> -2.25
    assert MIA.min_k_plus_plus_score(lp, np.zeros(5), np.full(5, 4.0), 0.4) == pytest.approx(-2.25)
    # mu = -3 (z = (lp + 3)/2 = 1, .5, 0, -.5, -1) -> lowest 2: -1, -0.5 -> -0.75
    assert MIA.min_k_plus_plus_score(lp, np.full(5, -3.0), np.full(5, 4.0), 0.4) == pytest.approx(-0.75)


def test_loss_and_zlib_scores_are_higher_for_members():
    assert MIA.loss_score(0.5) > MIA.loss_score(2.0)
    n = len(zlib.compress(b"aaaa"))
    assert MIA.zlib_score(2.0, "aaaa") == pytest.approx(-2.0 / n)


def test_auc_counts_pairs_with_half_for_ties():
    # pairs (3,1) (3,2) (2,1) win, (2,2) ties: 3.5 / 4
    assert MIA.auc([3.0, 2.0], [1.0, 2.0]) == pytest.approx(0.875)
    assert MIA.auc([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert MIA.auc([0.0], [1.0]) == 0.0


def test_privleak_sign_over_unlearning_positive():
    """Reference (retain model) AUC 0.5. Over-unlearned: forget looks less familiar than unseen
    data, AUC 0.25 -> ((1-.25) - (1-.5)) / (1-.5) * 100 = +50. Under-unlearned: AUC 0.75 -> -50."""
    assert MIA.privleak(0.25, 0.5) == pytest.approx(50.0)
    assert MIA.privleak(0.75, 0.5) == pytest.approx(-50.0)
    assert MIA.privleak(0.6, 0.6) == 0.0
    with pytest.raises(ValueError):
        MIA.privleak(0.5, 1.0)
