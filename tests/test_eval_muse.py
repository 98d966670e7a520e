"""MUSE and copyright metrics with hand-computed values, the raw-text model interface on a tiny
model, and both tasks end to end through a fake model."""

import json
import math

import numpy as np
import pytest
import torch

from uld.eval import copyright as cp
from uld.eval import muse
from uld.eval.textlm import HFTextLM, cut_at_stops
from uld.testing import tiny_llama

# ---- MUSE metrics ---------------------------------------------------------------------------


def test_rouge_l_f1_of_a_prefix_generation():
    """gen 'the cat sat' vs ref 'the cat sat on the mat': LCS 3, P = 3/3, R = 3/6,
    F1 = 2 * 1 * 0.5 / 1.5 = 2/3; ROUGE-1 recall = 3/6."""
    (s,) = muse.rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    assert s["rougeL_f1"] == pytest.approx(2 / 3)
    assert s["rougeL_recall"] == pytest.approx(0.5)
    assert s["rouge1_recall"] == pytest.approx(0.5)


def test_rouge_stemmer_is_off_as_in_muse_bench_and_on_as_in_openunlearning():
    """'cats running' vs 'cat runs': no common word unstemmed (0); stemmed both are 'cat run' (1)."""
    assert muse.rouge_scores(["cats running"], ["cat runs"])[0]["rougeL_f1"] == 0.0
    assert muse.rouge_scores(["cats running"], ["cat runs"], stemmer=True)[0]["rougeL_f1"] == pytest.approx(1.0)


def test_mean_rouge_l_f1_is_the_plain_mean_on_a_0_1_scale():
    assert muse.mean_rouge_l_f1([{"rougeL_f1": 0.2}, {"rougeL_f1": 0.6}]) == pytest.approx(0.4)


def test_knowmem_prompt_matches_muse_bench_format():
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    assert muse.knowmem_prompt("Q?", icl) == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q?\nAnswer: "
    assert muse.knowmem_prompt("Q?") == "Question: Q?\nAnswer: "


def test_knowmem_answer_is_cut_before_each_stop_string():
    assert cut_at_stops("Paris.\n\nQuestion: next", muse.KNOWMEM_STOPS) == "Paris."
    assert cut_at_stops("Paris\nQuestion: x", muse.KNOWMEM_STOPS) == "Paris"
    assert cut_at_stops("Paris Question: x", muse.KNOWMEM_STOPS) == "Paris "
    assert cut_at_stops("no stop here", muse.KNOWMEM_STOPS) == "no stop here"


def test_min_k_keeps_the_lowest_forty_percent():
    """T = 5, k = 0.4: floor(2) lowest of [-1..-5] = -5, -4, mean -4.5; T = 2 keeps max(1, 0) = 1."""
    got = muse.min_k_scores([np.array([-1.0, -2.0, -3.0, -4.0, -5.0]), np.array([-0.5, -3.0])])
    assert got.tolist() == pytest.approx([-4.5, -3.0])


def test_privleak_is_minus_100_for_full_memorisation_and_0_at_the_retain_auc():
    """AUC 1 (forget always more familiar): ((1-1) - (1-0.5)) / 0.5 * 100 = -100."""
    assert muse.muse_privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert muse.muse_privleak(0.5, 0.5) == pytest.approx(0.0)
    assert muse.muse_privleak(0.0, 0.5) == pytest.approx(100.0)
    # against a retain model at 0.6: ((1-0.8) - 0.4) / 0.4 * 100 = -50
    assert muse.muse_privleak(0.8, 0.6) == pytest.approx(-50.0)


def test_criteria_compare_with_retain_and_target():
    s = {"forget_verbmem_ROUGE": 0.2, "forget_knowmem_ROUGE": 0.5, "privleak": -4.0, "retain_knowmem_ROUGE": 0.45}
    retain = {"forget_verbmem_ROUGE": 0.25, "forget_knowmem_ROUGE": 0.3}
    target = {"retain_knowmem_ROUGE": 0.5}
    assert muse.criteria(s, retain, target) == {
        "no_verbmem": True, "no_knowmem": False, "no_privleak": True, "utility_preserved": True}  # 0.45 >= 0.9 * 0.5
    assert muse.criteria(s, None, None)["no_verbmem"] is None


# ---- copyright metrics ----------------------------------------------------------------------


def test_sentence_bleu_by_hand():
    """ref 'a b c d e', gen 'a b c d x': n-gram precisions 4/5, 3/4, 2/3, 1/2, brevity 1:
    BLEU = (0.8 * 0.75 * 2/3 * 0.5) ** (1/4) * 100 = 0.2 ** 0.25 * 100 = 66.874."""
    got = cp.sentence_bleu(["a b c d x", "a b c d e", "v w x y z"], ["a b c d e"] * 3)
    assert got[0] == pytest.approx(100 * 0.2 ** 0.25, rel=1e-4)
    assert got[1] == pytest.approx(100.0)
    assert got[2] == pytest.approx(0.0)


def test_corpus_bleu_pools_counts_before_the_mean():
    """Items (gen 'a b c d x', ref 'a b c d e') and (gen = ref = 'f g h i j'): pooled precisions
    9/10, 7/8, 5/6, 3/4: BLEU = (0.9 * 0.875 * 5/6 * 0.75) ** (1/4) * 100."""
    got = cp.corpus_bleu(["a b c d x", "f g h i j"], ["a b c d e", "f g h i j"])
    assert got == pytest.approx(100 * (0.9 * 0.875 * 5 / 6 * 0.75) ** 0.25, rel=1e-4)


def test_word_perplexity_divides_by_words_not_tokens():
    """Texts of 3 + 1 words, log-prob sums -4 and -4: exp(8 / 4) = e^2."""
    got = cp.word_perplexity([np.array([-1.0, -3.0]), np.array([-2.0, -1.0, -1.0])], ["one two three", "four"])
    assert got == pytest.approx(math.e**2)


def test_mc_accuracy_and_length_normalised_accuracy():
    """Item 1: gold 0 has the highest log-likelihood. Item 2: raw, choice 1 (-4) beats gold 0 (-6);
    per byte gold 'aaaaaa' scores -1 and 'bb' -2, so acc_norm picks the gold."""
    ll = [[-1.0, -2.0], [-6.0, -4.0]]
    assert cp.mc_accuracy(ll, [0, 0]).tolist() == [1.0, 0.0]
    assert cp.mc_accuracy(ll, [0, 0], [["x", "y"], ["aaaaaa", "bb"]]).tolist() == [1.0, 1.0]


# ---- the raw-text model interface on a tiny model -------------------------------------------

TEXTS = ["The author was born in Paris.", "Numbers: 0 1 2 3 4 5 6 7 8 9 and more words here.", "One"]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def _naive_logprobs(model, ids):
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    return logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1).numpy()


def test_token_logprobs_match_one_unpadded_forward_per_text(model, tokenizer):
    """Every token after the BOS is scored once, given the whole prefix; batch of 2 pads."""
    got = HFTextLM(model, tokenizer, batch_size=2).token_logprobs(TEXTS)
    for t, lp in zip(TEXTS, got, strict=True):
        ids = tokenizer(t)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and lp.shape == (len(ids) - 1,)
        np.testing.assert_allclose(lp, _naive_logprobs(model, ids), rtol=1e-4, atol=1e-5)


def test_rolling_windows_score_every_token_once(model, tokenizer):
    """max_length 6: windows [0..5], [5..10], ... each scoring 5 tokens; the first window equals
    the plain forward's first 5 values."""
    ids = tokenizer(TEXTS[1])["input_ids"]
    (lp,) = HFTextLM(model, tokenizer, max_length=6).token_logprobs([TEXTS[1]])
    assert lp.shape == (len(ids) - 1,)
    np.testing.assert_allclose(lp[:5], _naive_logprobs(model, ids)[:5], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lp[5:10], _naive_logprobs(model, ids[5:11]), rtol=1e-4, atol=1e-5)


def test_loglikelihood_scores_the_continuation_only_and_is_batch_invariant(model, tokenizer):
    ctx, cont = ["Where was he born?", "Hi"], [" In Paris.", " there, how are you?"]
    one = [HFTextLM(model, tokenizer, batch_size=1).loglikelihood([c], [x])[0] for c, x in zip(ctx, cont, strict=True)]
    both = HFTextLM(model, tokenizer, batch_size=2).loglikelihood(ctx, cont)
    for (a, ga), (b, gb), c, x in zip(one, both, ctx, cont, strict=True):
        assert a == pytest.approx(b, rel=1e-5) and ga == gb
        ci, xi = tokenizer(c)["input_ids"], tokenizer(x, add_special_tokens=False)["input_ids"]
        assert a == pytest.approx(_naive_logprobs(model, ci + xi)[len(ci) - 1 :].sum(), rel=1e-5)


def test_generate_until_is_batch_invariant_and_truncate_counts_the_bos(model, tokenizer):
    prompts = ["The author", "Numbers: 0 1 2"]
    a = HFTextLM(model, tokenizer, batch_size=1).generate_until(prompts, 6)
    b = HFTextLM(model, tokenizer, batch_size=2).generate_until(prompts, 6)
    assert a == b
    lm = HFTextLM(model, tokenizer)
    ids = tokenizer(TEXTS[1])["input_ids"]
    assert lm.truncate(TEXTS[1], 4) == tokenizer.decode(ids[1:4])


# ---- the tasks through a fake model ---------------------------------------------------------


class FakeLM:
    """Generations and log-probs looked up in tables; words are tokens."""

    def __init__(self, gens: dict[str, str], logprobs: dict[str, list[float]] | None = None, ll: dict | None = None):
        self.gens, self.logprobs, self.ll = gens, logprobs or {}, ll or {}
        self.tokenizer = _WordTok()

    def generate_until(self, prompts, max_new_tokens, stop=(), progress=None):
        return [cut_at_stops(" ".join(self.gens[p].split()[:max_new_tokens]), stop) for p in prompts]

    def token_logprobs(self, texts, progress=None):
        return [np.array(self.logprobs[t]) for t in texts]

    def loglikelihood(self, contexts, continuations, progress=None):
        return [(self.ll[(c, x)], False) for c, x in zip(contexts, continuations, strict=True)]

    def truncate(self, text, max_tokens):
        return " ".join(text.split()[: max_tokens - 1])  # the BOS counts as one token


class _WordTok:
    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(ids)


def test_evaluate_muse_by_hand(tmp_path):
    """VerbMem (3 new tokens): gt cut to 3 tokens (BOS + 2 words) = 'w1 w2', generation cut to
    'w1 w2 x': LCS 2, P = 2/3, R = 1, F1 = 2 * 2/3 / (5/3) = 0.8. KnowMem forget: 'Paris' vs 'Paris' = 1; retain:
    'Rome\\n\\nQuestion: ...' cut to 'Rome' vs 'Lima' = 0. Min-K% (k 0.4, T = 5 -> 2 lowest):
    forget scores -1, -3; holdout -2, -4: AUC = 3/4; privleak vs retain AUC 0.5 = -50."""
    icl = [{"question": "Q0?", "answer": "A0"}]
    data = muse.MuseData(
        verbmem=[{"prompt": "p1", "gt": "w1 w2 w3 w4"}],
        knowmem_forget=[{"question": "Q1?", "answer": "Paris"}], knowmem_forget_icl=icl,
        knowmem_retain=[{"question": "Q2?", "answer": "Lima"}], knowmem_retain_icl=icl,
        privleak={"forget": ["f1", "f2"], "holdout": ["h1", "h2"]},
    )
    gens = {"p1": "w1 w2 x y z z z", muse.knowmem_prompt("Q1?", icl): "Paris", muse.knowmem_prompt("Q2?", icl): "Rome\n\nQuestion: Q3?"}
    lp = {"f1": [-1, -1, -1, -1, -1], "f2": [-3, -3, 0, 0, 0], "h1": [-2, -2, 0, 0, 0], "h2": [-4, -4, -4, -4, -4]}
    m = muse.evaluate_muse(FakeLM(gens, lp), data, reference={"mia_min_k": {"agg_value": 0.5}},
                           cfg=muse.MuseConfig(verbmem_max_new_tokens=3))
    assert m["forget_verbmem_ROUGE"]["value_by_index"]["0"]["ground_truth"] == "w1 w2"
    assert m["forget_verbmem_ROUGE"]["agg_value"] == pytest.approx(0.8)
    assert m["forget_knowmem_ROUGE"]["agg_value"] == pytest.approx(1.0)
    assert m["retain_knowmem_ROUGE"]["agg_value"] == pytest.approx(0.0)
    assert m["mia_min_k"]["agg_value"] == pytest.approx(0.75)
    assert m["privleak"]["agg_value"] == pytest.approx(-50.0)
    summary = muse.write_muse_results(tmp_path, m)
    assert json.loads((tmp_path / "MUSE_SUMMARY.json").read_text()) == summary
    assert all(isinstance(v, float) for v in summary.values())
    assert muse.read_muse_log(tmp_path)["mia_min_k"]["agg_value"] == pytest.approx(0.75)


def test_evaluate_copyright_by_hand():
    """Prefix 2 words, chunk 4: text 'a b c d e f' -> chunks 'a b c d' (prompt 'a b', gt 'c d')
    and 'e f' (no token after the prefix: skipped). Generation 'c d' = gt: BLEU 100 (the 13a
    tokeniser sees 2 tokens: smoothed 3/4-gram counts), ROUGE-L 100. Perplexity: -2 over 2 words
    = e. MC: one item, gold 1 with the higher log-likelihood: accuracy 1."""
    data = cp.CopyrightData(forget_texts=["a b c d e f"], ppl_texts=["w v"], mc={"toy": [{"query": "q", "choices": ["x", "y"], "gold": 1}]})
    lm = FakeLM({"a b": "c d"}, {"w v": [-1.0, -1.0]}, {("q", "x"): -3.0, ("q", "y"): -1.0})
    m = cp.evaluate_copyright(lm, data, cp.CopyrightConfig(prefix_tokens=2, chunk_tokens=4, max_new_tokens=2))
    assert list(m["copyright_BLEU"]["value_by_index"]) == ["0"]
    assert m["copyright_ROUGE_L"]["agg_value"] == pytest.approx(100.0)
    assert m["heldout_word_perplexity"]["agg_value"] == pytest.approx(math.e)
    assert m["mc_toy_acc"]["agg_value"] == 1.0 and m["mc_mean_acc"]["agg_value"] == pytest.approx(100.0)


def test_load_muse_data_reads_muse_bench_layout_and_explains_a_wrong_dir(tmp_path):
    from uld.errors import UldError

    d = tmp_path / "news"
    (d / "verbmem").mkdir(parents=True)
    (d / "privleak").mkdir()
    (d / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "p", "gt": "g"}]))
    (d / "privleak" / "forget.json").write_text(json.dumps(["a"]))
    (d / "privleak" / "holdout.json").write_text(json.dumps(["b"]))
    data = muse.load_muse_data(d)
    assert data.verbmem == [{"prompt": "p", "gt": "g"}] and data.knowmem_forget is None
    assert data.privleak == {"forget": ["a"], "holdout": ["b"]}
    with pytest.raises(UldError, match="did you mean"):
        muse.load_muse_data(tmp_path)
