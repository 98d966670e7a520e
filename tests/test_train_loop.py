"""The training loop on tiny models: ULD learns what it should, the target is untouched,
stop + resume equals an uninterrupted run, a NaN loss stops the run, plain fine-tuning works."""

import json
import math

import pytest
import torch
from train_helpers import forget_records, make_workspace, read_jsonl, retain_records

from uld.cli import main
from uld.data.collate import encode_records, pad_batch
from uld.errors import UldError
from uld.methods.base import MethodSpec, get_method
from uld.ops import sequence_nll, token_nll
from uld.train.config import RunConfig, build_config, parse_set
from uld.train.loop import TrainData, TrainingDiverged, finetune, latest_checkpoint, train


def _cfg(*sets: str) -> RunConfig:
    return build_config((parse_set(list(sets)), ""))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="module")
def memorised_target(tmp_path_factory, tokenizer):
    """A tiny Llama fine-tuned with `finetune` on forget + retain, so it is confident on both."""
    from uld.testing import tiny_llama

    model = tiny_llama(vocab_size=len(tokenizer), hidden=48)
    records = forget_records() + retain_records()
    cfg = _cfg("method=sft", "train.lr=3e-2", "train.epochs=15", "train.batch_size=36", "train.warmup_ratio=0")
    enc = encode_records(tokenizer, records)
    before = _mean_nll(model, enc, tokenizer)
    result = finetune(model, tokenizer, records, cfg)
    model = result.module.eval()
    after = _mean_nll(model, enc, tokenizer)
    out = tmp_path_factory.mktemp("target")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, before, after


@torch.no_grad()
def _mean_nll(model, enc, tokenizer) -> float:
    b = pad_batch(enc.items, tokenizer.pad_token_id)
    return sequence_nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).mean().item()


@torch.no_grad()
def _retain_entropy(model, enc, tokenizer) -> float:
    """Mean next-token entropy (nats) over the real positions of the retain items."""
    b = pad_batch(enc.items, tokenizer.pad_token_id)
    logp = torch.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float(), -1)
    ent = -(logp.exp() * logp).sum(-1)[:, :-1]
    m = (b["attention_mask"][:, :-1] * b["attention_mask"][:, 1:]).bool()
    return ent[m].mean().item()


def test_finetune_learns_the_records(memorised_target):
    _, before, after = memorised_target
    assert after < 0.7 * before, (before, after)


def test_uld_assistant_memorises_forget_and_flattens_retain_target_untouched(memorised_target, tokenizer):
    """Assistant forget NLL falls; its retain entropy rises toward log|V|; the target's tensors
    are bit-identical after training; the saved run loads and generates."""
    from uld.models.loading import load_causal_lm
    from uld.models.uld_model import ULDForCausalLM
    from uld.train.policy import ULDPolicy

    path, _, _ = memorised_target
    target = load_causal_lm(path)
    snapshot = {k: v.clone() for k, v in target.state_dict().items()}
    # Paper objective (beta 6.5, LoRA r 32) on a 2-of-4-layer assistant; 120 steps of one pair.
    cfg = _cfg("method=uld", "policy.num_layers=2", "train.epochs=30", "train.batch_size=1", "train.lr=1e-2")
    torch.manual_seed(0)
    policy = ULDPolicy(target, cfg)
    f_enc = encode_records(tokenizer, forget_records())
    r_enc = encode_records(tokenizer, retain_records())
    f0, h0 = _mean_nll(policy.module, f_enc, tokenizer), _retain_entropy(policy.module, r_enc, tokenizer)
    result = train(policy, get_method("uld"), TrainData(f_enc, r_enc, forget_eval=f_enc, pad_id=0), cfg)
    assistant = result.module.eval()
    f1, h1 = _mean_nll(assistant, f_enc, tokenizer), _retain_entropy(assistant, r_enc, tokenizer)
    log_v = math.log(len(tokenizer))
    assert f1 < 0.85 * f0, (f0, f1)  # measured: 3.61 -> 2.84
    # Retain entropy 3.37 -> 5.60..5.76 of log|V| = 5.768: 120 steps at lr 1e-2 amplify rounding,
    # so the end point depends on the BLAS kernel and thread count (measured: 1 vs 2 threads,
    # AVX-512 vs AVX2). The claim is the direction and most of the gap, not the last digits.
    assert h1 > h0 and (log_v - h1) < 0.1 * (log_v - h0), (h0, h1, log_v)
    assert result.history[-1]["forget_prob"] > result.history[0]["forget_prob"]
    for k, v in target.state_dict().items():
        assert torch.equal(v, snapshot[k]), k

    out = path.parent / "uld-run"
    policy.save(assistant, out, tokenizer, cfg)
    uld = ULDForCausalLM.from_pretrained(out)
    assert uld.assistant_weight == 0.75
    prompt = torch.tensor([[tokenizer.bos_token_id, 5, 6, 7]])
    gen = uld.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > prompt.shape[1]


def _files(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    # The final weights: the full model's file, or a ULD run's adapter (assistant/).
    f = next(p for p in sorted(run.rglob("*.safetensors")) if "checkpoints" not in p.relative_to(run).parts)
    return load_file(f)


@pytest.mark.parametrize("method, extra", [("uld", ["--forget", "forget_plain"]), ("npo_gd", [])])
def test_stop_after_epoch_one_then_resume_equals_uninterrupted(workspace, tmp_path, method, extra):
    model, data = workspace
    base = ["unlearn", "--model", str(model), "--data", str(data), "--forget", "forget", "--retain", "retain",
            "--method", method, *extra, "--set", "train.epochs=3", "--set", "train.batch_size=2", "--set", "train.lr=5e-3"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    assert main([*base, "--out", str(tmp_path / "part"), "--set", "train.stop_after_epoch=1"]) == 0
    run = json.loads((tmp_path / "part" / "run.json").read_text())
    assert run["status"] == "stopped" and run["epochs_done"] == 1
    assert latest_checkpoint(tmp_path / "part").name == "epoch-1"
    assert main(["unlearn", "--out", str(tmp_path / "part"), "--resume"]) == 0
    assert json.loads((tmp_path / "part" / "run.json").read_text())["status"] == "finished"
    a, b = _files(tmp_path / "full"), _files(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps_a = [ln["loss"] for ln in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
    steps_b = [ln["loss"] for ln in read_jsonl(tmp_path / "part" / "metrics.jsonl")]
    assert steps_a == steps_b


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, tokenizer):
    from uld.testing import tiny_llama
    from uld.train.policy import FullPolicy

    calls = {"n": 0}

    def blows_up(inputs, opts):
        """NLL, then NaN from the third step on."""
        calls["n"] += 1
        nll = token_nll(inputs.forget_logits, inputs.forget_labels)[0].sum()
        return (nll * float("nan") if calls["n"] >= 3 else nll), {}

    spec = MethodSpec("blows_up", blows_up)
    enc = encode_records(tokenizer, forget_records())
    cfg = _cfg("method=ga", "train.epochs=3", "train.batch_size=2")
    policy = FullPolicy(tiny_llama(vocab_size=len(tokenizer)), needs_frozen=False)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3 \(epoch 2\).*epoch-1") as e:
        train(policy, spec, TrainData(enc, pad_id=0), cfg, tmp_path)
    assert isinstance(e.value, UldError)
    assert latest_checkpoint(tmp_path).name == "epoch-1"


def test_uld_stop_rule_ends_training_when_forget_probability_is_reached(workspace, tmp_path):
    model, data = workspace
    rc = main(["unlearn", "--model", str(model), "--data", str(data), "--forget", "forget_plain", "--retain", "retain",
               "--method", "uld", "--out", str(tmp_path / "r"), "--set", "train.epochs=5",
               "--set", "train.batch_size=4", "--set", "train.stop_forget_prob=1e-6"])
    assert rc == 0
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["status"] == "finished" and run["epochs_done"] == 1
    assert "forget-answer probability" in run["reason"]
    epochs = [ln for ln in read_jsonl(tmp_path / "r" / "metrics.jsonl") if ln["type"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["forget_prob"] >= 1e-6


def test_offset_policy_starts_at_the_target_and_saves_a_loadable_dir(workspace, tmp_path, tokenizer):
    from uld.models.loading import load_causal_lm, load_model
    from uld.train.policy import OffsetPolicy

    model_dir, data = workspace
    target = load_causal_lm(model_dir)
    policy = OffsetPolicy(target, _cfg("method=npo", "policy.kind=offset", "policy.num_layers=1"))
    b = {k: v for k, v in pad_batch(encode_records(tokenizer, forget_records()).items, 0).items() if k != "labels"}
    with torch.no_grad():
        combined, _ = policy.logits(policy.module, b)
        assert torch.allclose(combined, target(**b).logits.float(), atol=1e-5)

    rc = main(["unlearn", "--model", str(model_dir), "--data", str(data), "--forget", "forget", "--method", "npo",
               "--out", str(tmp_path / "off"), "--set", "policy.kind=offset", "--set", "train.epochs=2",
               "--set", "train.batch_size=2", "--set", "train.lr=1e-3"])
    assert rc == 0
    loaded, tok = load_model(tmp_path / "off")
    with torch.no_grad():
        diff = (loaded(**b).logits - target(**b).logits).abs().max().item()
    assert diff > 0  # the offset moved away from the target
    gen = loaded.generate(input_ids=b["input_ids"][:1, :5], max_new_tokens=3)
    assert gen.shape == (1, 8) or gen.shape[1] <= 8
