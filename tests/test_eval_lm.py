"""The model interface (`uld.eval.lm`): log-likelihood, rolling log-likelihood, generation until
stop strings, gradient norms; and `uld.testing.FakeLM`, values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from uld.errors import UldError
from uld.eval.checks import check_device, check_generation
from uld.eval.lm import GenerationRequest, HFLanguageModel, LoglikelihoodRequest
from uld.testing import FakeLM, tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def _requests(tokenizer):
    texts = [("[INST] Where was the author born? [/INST]", " The author was born in Paris."),
             ("[INST] Who? [/INST]", " His father was a carpenter in Lima, a long time ago."),
             ("Numbers:", " 0 1 2")]
    enc = lambda t: tuple(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    return [LoglikelihoodRequest(enc(c), enc(a)) for c, a in texts]


def test_loglikelihood_equals_one_unpadded_forward_per_request(model, tokenizer):
    reqs = _requests(tokenizer)
    got = HFLanguageModel(model, tokenizer, batch_size=3).loglikelihood(reqs)
    for r, s in zip(reqs, got, strict=True):
        seq = torch.tensor([list(r.context) + list(r.continuation)])
        with torch.no_grad():
            logp = model(input_ids=seq).logits[0].log_softmax(-1).double()
        c = len(r.context)
        rows = logp[c - 1 : -1]
        want = rows.gather(-1, seq[0, c:, None]).squeeze(-1).numpy()
        assert s.logprob.shape == (len(r.continuation),)
        assert np.abs(s.logprob - want).max() < 1e-5
        assert (s.greedy == (rows.argmax(-1) == seq[0, c:]).numpy()).all()
        assert s.sum == pytest.approx(want.sum(), abs=1e-4) and s.nll == pytest.approx(-want.mean(), abs=1e-5)


def test_rolling_windows_cover_every_token_once(model, tokenizer):
    text = "The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    small = HFLanguageModel(model, tokenizer, max_length=8)
    windows = small.rolling_requests(text)
    assert [t for w in windows for t in w.continuation] == ids
    assert all(len(w.context) + len(w.continuation) <= 8 for w in windows)
    # with a context that holds the whole text, rolling = one request conditioned on BOS
    big = HFLanguageModel(model, tokenizer)
    (rolled,) = big.loglikelihood_rolling([text])
    (one,) = big.loglikelihood([LoglikelihoodRequest((tokenizer.bos_token_id,), tuple(ids))])
    assert np.abs(rolled.logprob - one.logprob).max() < 1e-5
    (short,) = small.loglikelihood_rolling([text])
    assert short.logprob.shape == (len(ids),)


def test_fake_lm_values_by_hand(tokenizer):
    """Table rows are the next-token log-probs after the previous token."""
    v = len(tokenizer)
    table = np.full((v, v), -10.0)
    table[5, 7], table[7, 9], table[9, 2] = math.log(0.5), math.log(0.25), math.log(0.9)
    lm = FakeLM(tokenizer, table=table)
    (s,) = lm.loglikelihood([LoglikelihoodRequest((5,), (7, 9, 2))])
    assert s.logprob == pytest.approx([math.log(0.5), math.log(0.25), math.log(0.9)])
    assert s.nll == pytest.approx(-(math.log(0.5) + math.log(0.25) + math.log(0.9)) / 3)
    assert s.greedy.tolist() == [True, True, True] and s.is_greedy
    # greedy generation follows the argmax and stops at EOS (id 2)
    assert lm.generate_until([GenerationRequest((5,), 10)]) == [tokenizer.decode([7, 9]).strip()]


def test_generation_stops_at_stop_strings_and_seeded_sampling_repeats(model, tokenizer):
    lm = HFLanguageModel(model, tokenizer, batch_size=4)
    ctx = tuple(tokenizer("[INST] Where was the author born? [/INST]", add_special_tokens=False)["input_ids"])
    (free,) = lm.generate_until([GenerationRequest(ctx, 12)])
    assert len(free) > 2
    stop = free[1:3]
    (cut,) = lm.generate_until([GenerationRequest(ctx, 12, until=(stop,))])
    assert cut == free[: free.index(stop)].strip()
    sampled = [GenerationRequest(ctx, 8, do_sample=True, temperature=1.5, seed=3)]
    assert lm.generate_until(sampled) == lm.generate_until(sampled)


def test_generation_settings_are_refused_before_any_work():
    for kwargs, word in [({"max_new_tokens": 0}, "--max-new-tokens"), ({"max_new_tokens": 4, "temperature": float("nan")}, "--temperature"),
                         ({"max_new_tokens": 4, "top_p": 0.0}, "--top-p")]:
        with pytest.raises(UldError, match=word):
            check_generation(**kwargs)
    with pytest.raises(UldError, match="cuda:7"):
        check_device("cuda:7")
    with pytest.raises(UldError, match="not a device"):
        check_device("gpu")
    check_device("cpu")


class _Bigram(torch.nn.Module):
    """logits = W[previous token] + b, both zero: a uniform next-token distribution over 3 ids."""

    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(3, 3))
        self.b = torch.nn.Parameter(torch.zeros(3))

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return type("Out", (), {"logits": self.W[input_ids] + self.b})()


def test_grad_norm_by_hand(tokenizer):
    """Request: context (0,), continuation (1, 2); loss = mean NLL over 2 tokens, p = 1/3 each.
    dL/dW[0] = (p - e1)/2 = (1/6, -1/3, 1/6), dL/dW[1] = (p - e2)/2 = (1/6, 1/6, -1/3), so
    ||dW|| = sqrt(1/3); dL/db = (1/3, -1/6, -1/6), ||db|| = sqrt(1/6); score = their mean."""
    lm = HFLanguageModel(_Bigram(), tokenizer, device="cpu")
    (g,) = lm.grad_norms([LoglikelihoodRequest((0,), (1, 2))])
    assert g == pytest.approx((math.sqrt(1 / 3) + math.sqrt(1 / 6)) / 2, rel=1e-6)
    (g1,) = lm.grad_norms([LoglikelihoodRequest((0,), (1, 2))], p=1)
    assert g1 == pytest.approx((4 / 3 + 2 / 3) / 2, rel=1e-6)  # L1: |dW| sums to 4/3, |db| to 2/3


def test_ties_take_the_first_maximum_and_models_without_logits_to_keep_are_sliced():
    """The bigram gives every id probability 1/3: log p = -log 3 everywhere, the argmax of a
    tie is the first id (so only target 0 is "greedy"), mu = -log 3 and sigma^2 = 0. The model
    takes no `logits_to_keep`, so the interface slices the positions it needs itself."""
    tok = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 2, "bos_token_id": None})()
    lm = HFLanguageModel(_Bigram(), tok, batch_size=2, device="cpu")
    reqs = [LoglikelihoodRequest((1,), (0, 2, 0)), LoglikelihoodRequest((2, 1, 1), (1,)),
            LoglikelihoodRequest((0,), (2,))]
    for s, r in zip(lm.loglikelihood(reqs, vocab_stats=True), reqs, strict=True):
        assert np.allclose(s.logprob, -math.log(3), rtol=1e-6)
        assert s.greedy.tolist() == [t == 0 for t in r.continuation]
        assert np.allclose(s.mu, -math.log(3), rtol=1e-6) and np.allclose(s.sigma2, 0, atol=1e-6)


class _KwargsBigram(_Bigram):
    """Takes any keyword but refuses `logits_to_keep`, like a wrapper around an older model."""

    def forward(self, input_ids, **kwargs):
        if "logits_to_keep" in kwargs:
            raise TypeError("forward() got an unexpected keyword argument 'logits_to_keep'")
        return super().forward(input_ids)


def test_a_model_refusing_logits_to_keep_is_scored_on_all_positions():
    tok = type("Tok", (), {"pad_token_id": 0, "eos_token_id": 2, "bos_token_id": None})()
    lm = HFLanguageModel(_KwargsBigram(), tok, batch_size=2, device="cpu")
    (s,) = lm.loglikelihood([LoglikelihoodRequest((1, 2), (0, 1))])
    assert np.allclose(s.logprob, -math.log(3), rtol=1e-6) and s.greedy.tolist() == [True, False]
    assert lm._pass_keep is False
    fresh = HFLanguageModel(_KwargsBigram(), tok, device="cpu")  # the gradient attack falls back the same way
    (g,) = fresh.grad_norms([LoglikelihoodRequest((0,), (1, 2))])
    assert g == pytest.approx((math.sqrt(1 / 3) + math.sqrt(1 / 6)) / 2, rel=1e-6)
