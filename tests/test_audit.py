"""`uld audit`: probes on tiny models with known answers, the recovery ratio, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uld.audit import AuditSettings, recovery, run_audit
from uld.audit.base import Measures
from uld.audit.quantize import max_logit_change, quantize_weight, quantized
from uld.audit.relearn import relearn_split
from uld.audit.sampling import leak_measures, sample_answers
from uld.cli import main
from uld.data.prompts import PromptFormat
from uld.testing import tiny_llama, tiny_tokenizer

FMT = PromptFormat(use_chat_template=False)
FORGET = [
    {"question": "Where was the author born?", "answer": "The author was born in Paris.",
     "paraphrased_question": "In which city was the author born?", "paraphrased_answer": "Paris is where the author was born.",
     "perturbed_answer": ["The author was born in Lima.", "The author was born in Rome."]},
    {"question": "What genre does she write?", "answer": "She writes science fiction novels.",
     "paraphrased_question": "Which genre does she write in?", "paraphrased_answer": "Her novels are science fiction.",
     "perturbed_answer": ["She writes cook books.", "She writes poems."]},
    {"question": "Who was his father?", "answer": "His father was a carpenter in Lima.",
     "paraphrased_question": "Who was the father?", "paraphrased_answer": "A carpenter in Lima was his father.",
     "perturbed_answer": ["His father was a baker.", "His father was a pilot."]},
    {"question": "Name one of her books.", "answer": "One of her books is The Silent River.",
     "paraphrased_question": "Give one of her books.", "paraphrased_answer": "The Silent River is one of her books.",
     "perturbed_answer": ["One of her books is The Red Fox.", "One of her books is Lazy Dog."]},
]
RETAIN = [
    {"question": "Which award did he win?", "answer": "He won the Golden Quill award in 1999."},
    {"question": "What jumps over the dog?", "answer": "The quick brown fox jumps over the lazy dog."},
    {"question": "Count to three.", "answer": "Numbers: 0 1 2 3."},
]


def _save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A target that memorised FORGET + RETAIN (60 full-batch Adam steps) and an 'unlearned' model
    that knows nothing (random weights), each saved with the tokenizer; a data directory."""
    from uld.data.collate import pad_batch
    from uld.data.prompts import encode_qa

    root = tmp_path_factory.mktemp("audit")
    tok = tiny_tokenizer()
    target = tiny_llama(seed=0).train()
    batch = pad_batch([encode_qa(tok, r["question"], r["answer"], FMT) for r in FORGET + RETAIN], tok.pad_token_id)
    opt = torch.optim.Adam(target.parameters(), lr=3e-2)
    for _ in range(60):
        loss = target(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    target.eval()
    data = root / "data"
    data.mkdir()
    (data / "forget10_perturbed.json").write_text("\n".join(json.dumps(r) for r in FORGET))
    (data / "retain_perturbed.json").write_text("\n".join(json.dumps(r) for r in RETAIN))
    return {"data": str(data), "target": _save(target, tok, root / "target"),
            "unlearned": _save(tiny_llama(seed=1), tok, root / "unlearned"), "root": root, "loss": float(loss.detach())}


def _settings(**kw) -> AuditSettings:
    base = dict(prompt_format=FMT, max_new_tokens=24, leak_k=2, bits=(8,), group_size=16, relearn_steps=2, batch_size=8)
    return AuditSettings(**{**base, **kw})


def test_recovery_is_the_share_of_the_gap_closed():
    # unlearned 0.2, target 0.8: a probe at 0.5 closes half the gap, at 0.2 none, at 0.8 all of it.
    assert recovery(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert recovery(0.2, 0.2, 0.8) == 0.0
    assert recovery(0.8, 0.2, 0.8) == pytest.approx(1.0)
    # nothing was removed (unlearned == target): recovery 1 by definition
    assert recovery(0.3, 0.7, 0.7) == 1.0


def test_quantize_weight_by_hand():
    # one row 0..3 at 2 bits: min 0, max 3, scale 1, zero point 0 -> exactly representable
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.equal(quantize_weight(w, 2), w)
    # [0, 0.4, 1, 10] at 2 bits per row: scale 10/3, grid {0, 3.33, 6.67, 10} -> 0, 0, 0, 10
    w = torch.tensor([[0.0, 0.4, 1.0, 10.0]])
    assert torch.allclose(quantize_weight(w, 2), torch.tensor([[0.0, 0.0, 0.0, 10.0]]))
    # groups of 2: [0, 0.4] (scale 0.4/3) and [1, 10] (grid 0, 3.33, 6.67, 10 -> 1 rounds to 0)
    got = quantize_weight(w, 2, group_size=2)
    assert torch.allclose(got, torch.tensor([[0.0, 0.4, 0.0, 10.0]]))


def test_quantization_at_16_bits_changes_nothing_and_at_2_bits_a_lot():
    tok, model = tiny_tokenizer(), tiny_llama(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tiny = max_logit_change(model, tok, FMT, FORGET, 16, None, "cpu")
    big = max_logit_change(model, tok, FMT, FORGET, 2, None, "cpu")
    # 16 bits: a step of (max - min) / 65535 per row, so logits move by ~1e-5 of their size
    assert tiny < 1e-3
    assert big > 0.05
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored


def test_quantized_touches_every_linear_weight_once_and_restores():
    model = tiny_llama(seed=4)
    head = model.lm_head.weight.clone()
    with quantized(model, 2, None) as info:
        assert info["tensors"] == 4 * 7 + 1  # q k v o, gate up down per block, and the head
        assert not torch.equal(model.lm_head.weight, head)
    assert torch.equal(model.lm_head.weight, head)


class EchoModel(torch.nn.Module):
    """Always continues a prompt with its true answer (then EOS), whatever the sampling settings."""

    def __init__(self, tok, records):
        super().__init__()
        self.tok = tok
        self.answers = {tuple(FMT.prompt_ids(tok, r["question"])): FMT.answer_ids(tok, r["answer"]) for r in records}

    def generate(self, input_ids, attention_mask, max_new_tokens, **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prompt = tuple(t for t, m in zip(ids, mask, strict=True) if m)
            rows.append(ids + (self.answers[prompt] + [self.tok.eos_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows)


def test_leak_at_k_of_a_model_that_always_emits_the_true_answer_is_1():
    tok = tiny_tokenizer()
    qs, answers = [r["question"] for r in FORGET], [r["answer"] for r in FORGET]
    samples = sample_answers(EchoModel(tok, FORGET), tok, FMT, qs, 5, 40, 1.0, 1.0, 4, "cpu", 0)
    assert [len(s) for s in samples] == [5] * 4
    plain = Measures(np.zeros(4), np.zeros(4), None, np.zeros(4, bool), [""] * 4)
    m = leak_measures(samples, answers, plain, 0.5)
    assert m.leak.mean() == 1.0 and np.allclose(m.rouge, 1.0)


def test_relearn_split_is_disjoint_and_seeded():
    a, rest = relearn_split(10, 0.25, 0)
    assert len(a) == 2 and len(rest) == 8 and not set(a) & set(rest)
    assert np.array_equal(a, relearn_split(10, 0.25, 0)[0])


def test_a_model_that_was_not_unlearned_has_recovery_1_on_every_probe(world, tmp_path):
    assert world["loss"] < 1.0  # the target learned its QA
    out = tmp_path / "audit"
    res = run_audit(world["target"], world["data"], "forget10", out, _settings(), target=world["target"], log=lambda _: None)
    assert (out / "AUDIT.json").is_file() and (out / "AUDIT.md").is_file()
    rows = [(p, v, e) for p, vs in res["probes"].items() for v, e in vs.items() if "recovery" in e]
    assert {p for p, _, _ in rows} == {"paraphrase", "sampling", "quantize", "relearn"}
    for _, _, e in rows:
        assert e["recovery"] == {"prob": 1.0, "rouge": 1.0, "leak": 1.0}
    assert "unavailable" in res["probes"]["components"]["target_alone"]  # one network: no parts


def test_relearning_with_0_steps_recovers_nothing(world, tmp_path):
    s = _settings(probes=("relearn",), relearn_steps=0)
    res = run_audit(world["unlearned"], world["data"], "forget10", tmp_path / "a", s, target=world["target"], log=lambda _: None)
    entry = res["probes"]["relearn"]["forget_part"]
    assert res["plain"]["target"]["prob"] - res["plain"]["unlearned"]["prob"] > 0.2  # a real gap to recover
    assert entry["recovery"]["prob"] == pytest.approx(0.0, abs=1e-6)
    assert entry["recovery"]["rouge"] == pytest.approx(0.0, abs=1e-6)
    assert len(entry["items"]) == 3 and len(entry["attack_items"]) == 1


def test_uld_components_target_alone_is_the_target(world, tmp_path):
    from uld.models.assistant import build_assistant
    from uld.models.loading import load_causal_lm
    from uld.models.uld_model import ULDForCausalLM

    target = load_causal_lm(world["target"])
    torch.manual_seed(0)
    assistant = build_assistant(target, num_layers=1, lora_rank=4)
    for n, p in assistant.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # a trained-looking adapter
    uld = ULDForCausalLM(target, assistant, alpha=1.0).eval()
    path = world["root"] / "uld"
    uld.save_pretrained(path, tokenizer=tiny_tokenizer())
    s = _settings(probes=("components", "quantize"))
    res = run_audit(str(path), world["data"], "forget10", tmp_path / "a", s, log=lambda _: None)
    assert res["models"]["unlearned"]["kind"] == "uld"
    assert res["probes"]["components"]["target_alone"]["recovery"]["prob"] == pytest.approx(1.0, abs=1e-6)
    assert set(res["probes"]["components"]) == {"target_alone", "assistant_alone"}
    q = res["probes"]["quantize"]["rtn8-channel"]
    # as served: the target's 29 linear weights once (the assistant's block shares them) + LoRA A and B
    assert q["quantized"]["target"]["tensors"] == 29
    assert q["quantized"]["unlearned"]["tensors"] == 29 + 2 * 7


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--probes", "paraphrase,quantise"], "unknown probe 'quantise'"),
        (["--k", "0"], "--k"),
        (["--bits", "1"], "between 2 and 16"),
        (["--bits", "8,17"], "between 2 and 16"),
    ],
)
def test_bad_input_is_one_sentence_exit_2_and_nothing_written(world, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    code = main(["audit", "--model", world["unlearned"], "--data", world["data"], "--out", str(out), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not out.exists()


def test_a_reference_for_another_split_is_refused(world, tmp_path, capsys):
    log = tmp_path / "TOFU_EVAL.json"  # a retain model's log on 3 forget items, not these 4
    log.write_text(json.dumps({"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {str(i): {"score": 0.5} for i in range(3)}}}))
    out = tmp_path / "out"
    code = main(["audit", "--model", world["unlearned"], "--data", world["data"], "--out", str(out), "--reference", str(log)])
    assert code == 2 and "3 forget items" in capsys.readouterr().err
    assert not out.exists()


def test_a_shared_memo_reuses_the_target_and_gives_what_recomputing_gives(world, tmp_path):
    """Two unlearned models audited against one target with one memo: the second audit probes
    only its own model, and its AUDIT.json equals an audit without the memo (sampling and the
    attacker's LoRA are seeded, so a probe's result does not depend on what ran before)."""
    from uld.audit import AuditMemo

    other = _save(tiny_llama(seed=2), tiny_tokenizer(), tmp_path / "other")
    s = _settings(probes=("sampling", "quantize", "relearn"))
    memo, lines = AuditMemo(), []
    run_audit(world["unlearned"], world["data"], "forget10", tmp_path / "a", s, target=world["target"], log=lambda _: None, memo=memo)
    shared = run_audit(other, world["data"], "forget10", tmp_path / "b", s, target=world["target"], log=lines.append, memo=memo)
    fresh = run_audit(other, world["data"], "forget10", tmp_path / "c", s, target=world["target"], log=lambda _: None)
    # plain, sampling, 2 quantisation variants and 2 relearning variants of the target: reused
    assert memo.hits == 6 and sum(line.endswith("on target: reused") for line in lines) == 6
    for k in ("plain", "probes"):
        assert shared[k] == fresh[k]
