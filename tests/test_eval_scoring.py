"""The scorer (narrow model interface) and the evaluator on a tiny model: exactness and
batch-size invariance."""

import numpy as np
import pytest
import torch

from uld.data.prompts import PromptFormat, encode_qa
from uld.eval.scoring import CausalLMScorer, answer_nll
from uld.ops import sequence_nll
from uld.testing import tiny_llama

QUESTIONS = [
    "Where was the author born?",
    "Who?",
    "What genre does she write, and which award did she win for it in the end?",
    "Name one of her books.",
    "Which award did he win?",
]
ANSWERS = [
    "The author was born in Paris.",
    "His father was a carpenter in Lima, a long time ago.",
    "She writes science fiction novels.",
    "One",
    "He won the Golden Quill award in 1999.",
]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def test_answer_nll_matches_unpadded_forward_of_each_pair(model, tokenizer):
    """Naive reference: one pair at a time, no padding, `ops.sequence_nll` on encode_qa's labels."""
    fmt = PromptFormat()
    got = answer_nll(CausalLMScorer(model, tokenizer, fmt, batch_size=4), QUESTIONS, ANSWERS)
    for q, a, v in zip(QUESTIONS, ANSWERS, got, strict=True):
        enc = encode_qa(tokenizer, q, a, fmt)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits
        assert v == pytest.approx(sequence_nll(logits, torch.tensor([enc.labels])).item(), abs=1e-5)


def test_vocab_stats_are_mean_and_variance_of_log_probs(model, tokenizer):
    fmt = PromptFormat()
    (st,) = CausalLMScorer(model, tokenizer, fmt).token_stats(QUESTIONS[:1], ANSWERS[:1], vocab_stats=True)
    enc = encode_qa(tokenizer, QUESTIONS[0], ANSWERS[0], fmt)
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([enc.input_ids])).logits[0, enc.prompt_len - 1 : -1].log_softmax(-1).double()
    p = logp.exp()
    mu = (p * logp).sum(-1)
    assert st.logprob.shape == (enc.num_answer_tokens,)
    assert st.mu == pytest.approx(mu.numpy(), abs=1e-5)
    assert st.sigma2 == pytest.approx(((p * (logp - mu[:, None]) ** 2).sum(-1)).numpy(), abs=1e-4)


def test_token_stats_and_generations_do_not_depend_on_batch_size(model, tokenizer):
    one = CausalLMScorer(model, tokenizer, batch_size=1)
    eight = CausalLMScorer(model, tokenizer, batch_size=8)
    a = one.token_stats(QUESTIONS, ANSWERS, vocab_stats=True)
    b = eight.token_stats(QUESTIONS, ANSWERS, vocab_stats=True)
    for x, y in zip(a, b, strict=True):
        assert np.abs(x.logprob - y.logprob).max() < 1e-5
        assert np.abs(x.mu - y.mu).max() < 1e-5
    assert one.generate(QUESTIONS, 12) == eight.generate(QUESTIONS, 12)


def test_evaluator_per_item_values_do_not_depend_on_batch_size(model, tokenizer, tofu_dir):
    from uld.eval.tofu import evaluate, load_tofu_data

    data = load_tofu_data(str(tofu_dir), "forget01", max_items=3)
    runs = [evaluate(CausalLMScorer(model, tokenizer, batch_size=b), data, max_new_tokens=6) for b in (1, 8)]
    assert runs[0].keys() == runs[1].keys()
    checked = 0
    for name, entry in runs[0].items():
        other = runs[1][name]
        if entry["agg_value"] is not None:
            assert entry["agg_value"] == pytest.approx(other["agg_value"], abs=1e-5), name
        for idx, item in entry.get("value_by_index", {}).items():
            for key, v in item.items():
                if isinstance(v, str):
                    assert v == other["value_by_index"][idx][key]
                else:
                    assert np.allclose(v, other["value_by_index"][idx][key], atol=1e-5), (name, idx, key)
                    checked += 1
    assert checked > 60  # every per-item number of every metric


def test_uld_model_is_scored_through_its_combined_logits(tokenizer):
    """A ULD model fits the same interface: padded batched scores equal its own unpadded
    forward, and batch 1 equals batch 8 (scores and generations)."""
    from uld import ULDForCausalLM, build_assistant

    target = tiny_llama(seed=1)
    assistant = build_assistant(target, num_layers=2, lora_rank=4)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    uld = ULDForCausalLM(target, assistant, assistant_weight=0.75, filter_rate=0.05).eval()
    fmt = PromptFormat()
    one, eight = CausalLMScorer(uld, tokenizer, fmt, batch_size=1), CausalLMScorer(uld, tokenizer, fmt, batch_size=8)
    a, b = answer_nll(one, QUESTIONS, ANSWERS), answer_nll(eight, QUESTIONS, ANSWERS)
    assert np.abs(a - b).max() < 1e-5
    enc = encode_qa(tokenizer, QUESTIONS[2], ANSWERS[2], fmt)
    with torch.no_grad():
        logits = uld(input_ids=torch.tensor([enc.input_ids])).logits
    assert b[2] == pytest.approx(sequence_nll(logits, torch.tensor([enc.labels])).item(), abs=1e-5)
    assert one.generate(QUESTIONS, 8) == eight.generate(QUESTIONS, 8)
