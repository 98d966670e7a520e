"""The ULD assistant: first K blocks of the target, shared frozen weights, LoRA only trains."""

import pytest
import torch
import transformers as tf
from torch import nn

from uld import build_assistant
from uld.errors import UldError
from uld.testing import FAMILIES, tiny_family, tiny_llama

V = 320




def truncated_reference(target, k: int):
    """The target cut to its first k blocks, built independently: a fresh k-layer model of the same
    class loaded with the target's tensors (its extra blocks' weights are simply not loaded)."""
    cfg = target.config.__class__(**target.config.to_dict())
    cfg.num_hidden_layers = k
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:k]
    ref = type(target)(cfg).eval()
    ref.load_state_dict(target.state_dict(), strict=False)
    return ref


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fresh_assistant_equals_target_truncated_to_k_blocks(family):
    target = tiny_family(family)
    assistant = build_assistant(target, num_layers=2).eval()
    ids = torch.randint(3, V, (2, 7), generator=torch.Generator().manual_seed(0))
    got = assistant(input_ids=ids).logits
    want = truncated_reference(target, 2)(input_ids=ids).logits
    assert got.shape == (2, 7, V)
    # LoRA B starts at 0, so the adapter adds exactly 0 to every linear layer.
    assert torch.equal(got, want)
    # ...and the assistant is not just the whole target.
    assert not torch.allclose(got, target(input_ids=ids).logits)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_training_the_assistant_never_changes_the_target_and_adds_only_lora(family):
    target = tiny_family(family)
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    target_ptrs = {p.data_ptr() for p in target.parameters()}
    assistant = build_assistant(target, num_layers=2, lora_rank=4, lora_alpha=8)
    lora = assistant.trainable_parameters()
    assert lora and all("lora_" in n for n in assistant.adapter_state_dict())
    # LoRA on every linear layer of the 2 blocks, none on the head.
    assert not any("lm_head" in n for n in assistant.assistant_config["lora_modules"])
    assert all(n.split(".")[2] in ("0", "1") for n in assistant.assistant_config["lora_modules"])

    opt = torch.optim.AdamW(lora, lr=1e-2)
    ids = torch.randint(3, V, (2, 9), generator=torch.Generator().manual_seed(1))
    assistant.train()
    losses = []
    for _ in range(4):
        logits = assistant(input_ids=ids).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    shared = {id(p) for p in assistant.parameters()}
    for n, p in target.named_parameters():
        assert torch.equal(p, before[n]), n
        if id(p) in shared:
            assert not p.requires_grad  # the assistant's frozen weights are the target's tensors
    ptrs = target_ptrs | {p.data_ptr() for p in assistant.parameters()}
    assert len(ptrs) == len(target_ptrs) + len(lora)
    # The B matrices moved away from 0: the assistant now differs from the truncated target.
    assistant.eval()
    assert not torch.equal(assistant(input_ids=ids).logits, truncated_reference(target, 2)(input_ids=ids).logits)
    # Merging LoRA into the base weights would write into the target's tensors: refused.
    layer = assistant.model.get_submodule(assistant.assistant_config["lora_modules"][0])
    with pytest.raises(UldError, match="would change the target"):
        layer.merge()
    for n, p in target.named_parameters():
        assert torch.equal(p, before[n]), n


def test_rank_zero_trains_a_private_copy_of_the_blocks():
    target = tiny_llama(num_layers=4)
    assistant = build_assistant(target, num_layers=1, lora_rank=0).eval()
    block_params = list(target.model.layers[0].parameters())
    copied = assistant.trainable_parameters()
    assert len(copied) == len(block_params)
    assert {p.data_ptr() for p in copied}.isdisjoint({p.data_ptr() for p in target.parameters()})
    ids = torch.randint(3, V, (1, 6), generator=torch.Generator().manual_seed(2))
    assert torch.equal(assistant(input_ids=ids).logits, truncated_reference(target, 1)(input_ids=ids).logits)
    # Embeddings and head remain shared: the copy adds exactly one block's tensors.
    all_ptrs = {p.data_ptr() for p in target.parameters()} | {p.data_ptr() for p in assistant.parameters()}
    assert len(all_ptrs) == len(list(target.parameters())) + len(block_params)


def test_default_k_is_a_quarter_of_the_layers():
    assert build_assistant(tiny_llama(num_layers=8)).assistant_config["num_layers"] == 2
    assert build_assistant(tiny_llama(num_layers=3)).assistant_config["num_layers"] == 1


@pytest.mark.parametrize("k", [0, 4, 7, -1])
def test_k_out_of_range_is_one_clear_error(k):
    with pytest.raises(UldError, match=r"1 <= K < 4"):
        build_assistant(tiny_llama(num_layers=4), num_layers=k)


def test_lora_target_modules_restrict_and_must_match():
    target = tiny_llama(num_layers=4)
    a = build_assistant(target, num_layers=2, target_modules=["q_proj", "v_proj"])
    assert a.assistant_config["lora_modules"] == [
        f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")
    ]
    # 2 blocks x 2 modules x (A, B)
    assert len(a.trainable_parameters()) == 8
    with pytest.raises(UldError, match="match no linear layer.*available: .*q_proj"):
        build_assistant(target, num_layers=2, target_modules=["query"])
    with pytest.raises(UldError, match="match no linear layer"):
        build_assistant(target, num_layers=2, target_modules="lm_head")  # never on the head


def test_unsplittable_architectures_say_which_and_why():
    target = tiny_llama(num_layers=4)
    target.model.layers = nn.Sequential(*target.model.layers)  # no block list to cut
    with pytest.raises(UldError, match=r"cannot split LlamaForCausalLM: .*4 decoder blocks.*found none"):
        build_assistant(target, num_layers=2)
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=V, d_model=16, d_kv=4, d_ff=32,
                                                   num_layers=2, num_heads=2))
    with pytest.raises(UldError, match="cannot split T5ForConditionalGeneration: it is an encoder-decoder"):
        build_assistant(t5, num_layers=1)


def test_adapter_state_dict_round_trip_and_mismatch():
    target = tiny_llama(num_layers=4)
    a = build_assistant(target, num_layers=2, lora_rank=4)
    with torch.no_grad():
        for p in a.trainable_parameters():
            p.normal_()
    sd = {k: v.clone() for k, v in a.adapter_state_dict().items()}
    b = build_assistant(target, num_layers=2, lora_rank=4)
    b.load_adapter_state_dict(sd)
    ids = torch.randint(3, V, (1, 5), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.eval()(input_ids=ids).logits, b.eval()(input_ids=ids).logits)
    with pytest.raises(UldError, match="does not fit"):
        build_assistant(target, num_layers=1, lora_rank=4).load_adapter_state_dict(sd)
    with pytest.raises(UldError, match="has shape"):
        build_assistant(target, num_layers=2, lora_rank=8).load_adapter_state_dict(sd)


@pytest.mark.parametrize("family", ["llama", "gpt2"])  # nn.Linear and GPT-2's Conv1D
def test_lean_eval_forward_is_pefts_forward_bit_for_bit(family):
    target = tiny_family(family)
    assistant = build_assistant(target, num_layers=2, lora_rank=4, lora_dropout=0.5)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.normal_(0, 0.2)  # non-zero B: the adapters change the output
    ids = torch.randint(3, 300, (2, 6))
    lora_layers = [m for m in assistant.model.modules() if "forward" in vars(m)]
    assert len(lora_layers) == len(assistant.assistant_config["lora_modules"]) > 0
    assistant.eval()
    with torch.no_grad():
        lean = assistant(input_ids=ids).logits
        for m in lora_layers:  # peft's own forward
            m.__dict__["lean"] = m.__dict__.pop("forward")
        peft_out = assistant(input_ids=ids).logits
        for m in lora_layers:
            m.forward = m.__dict__.pop("lean")
        assert torch.equal(lean, peft_out)
        assistant.train()  # training: peft's forward, dropout active
        torch.manual_seed(0)
        a = assistant(input_ids=ids).logits
        torch.manual_seed(1)
        assert not torch.equal(a, assistant(input_ids=ids).logits)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_norm_scale_gives_the_assistant_its_own_scaled_trainable_final_norm_saved_with_it(tmp_path, lora_rank):
    from uld.models.uld import ULDForCausalLM

    target = tiny_llama(num_layers=4)
    gain = target.model.norm.weight.detach().clone()
    assistant = build_assistant(target, num_layers=2, lora_rank=lora_rank, norm_scale=0.25)
    own = assistant.model.model.norm
    assert own is not target.model.norm and torch.equal(own.weight, gain * 0.25)
    assert torch.equal(target.model.norm.weight, gain)  # the target's norm is untouched
    assert "model.norm.weight" in assistant.adapter_state_dict()
    assert assistant.assistant_config["norm_scale"] == 0.25
    # The logits are the head applied to block 2's output through RMSNorm with the scaled gain.
    ids = torch.randint(3, V, (2, 6), generator=torch.Generator().manual_seed(2))
    assistant.eval()
    h = target(input_ids=ids, output_hidden_states=True).hidden_states[2]
    eps = target.config.rms_norm_eps
    want = target.lm_head(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * gain * 0.25)
    torch.testing.assert_close(assistant(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
    # It trains (one step moves the gain), and a saved ULD model reloads with the trained gain.
    assistant.train()
    opt = torch.optim.SGD(assistant.trainable_parameters(), lr=0.1)
    assistant(input_ids=ids).logits.logsumexp(-1).mean().backward()
    opt.step()
    assert not torch.equal(own.weight, gain * 0.25)
    model = ULDForCausalLM(target, assistant.eval(), assistant_weight=0.5, filter_rate=0.0).eval()
    model.save_pretrained(tmp_path / "uld")
    loaded = ULDForCausalLM.from_pretrained(tmp_path / "uld")
    assert loaded.config.norm_scale == 0.25
    torch.testing.assert_close(loaded.assistant.model.model.norm.weight, own.weight, rtol=0, atol=0)
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    model.fused = False  # the shared pass through the blocks uses the assistant's own norm too
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(UldError, match="norm_scale"):
        build_assistant(target, num_layers=2, norm_scale=-1.0)
