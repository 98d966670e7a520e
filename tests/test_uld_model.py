"""ULDForCausalLM: exact logits, the plausibility filter, generation, save/load."""

import copy
import math
from unittest.mock import patch

import pytest
import torch
import transformers as tf

from uld import ULDForCausalLM, build_assistant
from uld.errors import UldError
from uld.models.uld import (
    SPARSE_HEAD_FAMILIES,
    combine_logits,
    combine_with_head,
    plausibility_mask,
    sparse_head_parts,
)
from uld.ops import token_nll
from uld.testing import FAMILIES, tiny_family_config, tiny_llama

V = 320
EOS, PAD = 2, 0


def sharpen(target, scale=30.0):
    """Random tiny models predict almost uniformly (every token plausible); a scaled output head
    gives logits with a spread of a few units, so the filter has something to cut."""
    with torch.no_grad():
        target.get_output_embeddings().weight.mul_(scale)
    return target


def uld_model(target=None, weight=0.75, rate=0.05, seed=0, k=2, lora_scale=0.5):
    """A ULD model whose assistant is not the truncated target (LoRA A, B randomised)."""
    target = target if target is not None else sharpen(tiny_llama(num_layers=4, seed=seed))
    assistant = build_assistant(target, num_layers=k, lora_rank=4)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * lora_scale)
    return ULDForCausalLM(target, assistant, assistant_weight=weight, filter_rate=rate).eval()


def left_padded_batch(lengths=(3, 7, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.full((len(lengths), t), PAD)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, t - n:] = torch.randint(3, V, (n,), generator=g)
        mask[i, t - n:] = 1
    return ids, mask


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp_min(0)


def assert_equal_up_to_rounding(got, want, ulps=64):
    """Equal up to float rounding: |got - want| <= ulps * eps * max|want|.

    A batched matrix product may accumulate a row in another order than an unbatched one (MKL's
    AVX2 sgemm picks its blocking from the row count, AVX-512 happens not to), so equal
    computations differ by a few units in the last place *of the operands' magnitude*: a fixed
    absolute tolerance is wrong for tensors of magnitude ~100 (one ulp there is 7.6e-6).
    """
    scale = want.abs().max().item()
    atol = ulps * torch.finfo(want.dtype).eps * max(scale, 1.0)
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


# -- the plausibility filter ---------------------------------------------------------------

def test_filter_matches_hand_computed_sets():
    # V = 10, r = 0.2: k = floor(2) = 2. Threshold = min(z_max + log 0.2, z_(2))
    #   = min(3.0 - 1.609, 2.9) = 1.391, so tokens with logit >= 1.391 are plausible: {0, 1, 4}.
    z = torch.tensor([3.0, 2.9, 1.0, 0.5, 1.5, 0.0, -1.0, 1.39, -2.0, 0.2])
    assert plausibility_mask(z, 0.2).nonzero().flatten().tolist() == [0, 1, 4]
    # r = 0.3: k = 3. min(5 - 1.204, 0.5) = 0.5: the k-th term keeps the top 3 (and ties).
    z = torch.tensor([5.0, 1.0, 0.5, 0.2, -1.0, 0.5, -3.0, 0.1, 0.0, -0.5])
    assert plausibility_mask(z, 0.3).nonzero().flatten().tolist() == [0, 1, 2, 5]
    # r = 0.05: k = floor(0.5) = 0, only z >= z_max + log 0.05 = 5 - 2.996 = 2.004 count: {0}.
    z = torch.tensor([5.0, 2.0, 2.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert plausibility_mask(z, 0.05).nonzero().flatten().tolist() == [0, 2]
    # r = 0 disables the filter.
    assert plausibility_mask(z, 0.0).all()


def test_filter_on_logits_equals_the_log_probability_definition():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, 500, generator=g) * 3
    r = 0.01
    logp = torch.log_softmax(z.double(), -1)
    k = math.floor(r * 500)  # 5
    kth = logp.sort(-1, descending=True).values[..., k - 1 : k]
    want = logp >= torch.minimum(logp.amax(-1, keepdim=True) + math.log(r), kth)
    assert torch.equal(plausibility_mask(z.double(), r), want)


# -- exact logits --------------------------------------------------------------------------

def test_logits_are_target_minus_weighted_assistant_inside_and_target_outside():
    model = uld_model(weight=0.75, rate=0.05)
    ids, mask = left_padded_batch()
    kw = dict(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
    zt = model.target(**kw).logits
    za = model.assistant(**kw).logits
    got = model(**kw).logits
    inside = plausibility_mask(zt, 0.05)
    assert inside.any() and (~inside).any()
    assert torch.equal(got[inside], (zt - 0.75 * za)[inside])
    assert torch.equal(got[~inside], zt[~inside])
    # While generating, tokens outside the set can never be chosen.
    gen = model(**kw, exclude_implausible=True).logits
    assert torch.equal(gen[inside], got[inside]) and torch.isneginf(gen[~inside]).all()
    # Rate 0: no filter, the difference everywhere.
    model.filter_rate = 0.0
    assert torch.equal(model(**kw).logits, zt - 0.75 * za)


def test_labels_give_the_mean_next_token_nll_of_the_combined_logits():
    model = uld_model()
    ids, mask = left_padded_batch()
    labels = ids.masked_fill(mask == 0, -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    nll, scored = token_nll(out.logits, labels)
    assert torch.allclose(out.loss, nll.sum() / scored.sum())


def test_vocabulary_mismatch_is_an_error():
    target = tiny_llama(vocab_size=V)
    other = build_assistant(tiny_llama(vocab_size=300), num_layers=1)
    with pytest.raises(UldError, match="vocabulary mismatch: the target predicts 320 tokens, the assistant 300"):
        ULDForCausalLM(target, other)


# -- generation ----------------------------------------------------------------------------

def greedy_reference(model, ids, mask, steps, eos=EOS, exclude=True):
    """Token-by-token greedy decoding with full forward passes (no cache), by hand: implausible
    tokens (by the target's logits) are excluded, finished rows continue with padding."""
    done = torch.zeros(ids.size(0), dtype=torch.bool)
    for _ in range(steps):
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
        logits = model(**kw).logits[:, -1]
        zt = model.target(**kw).logits[:, -1]
        if exclude:
            logits = logits.masked_fill(~plausibility_mask(zt, model.filter_rate), float("-inf"))
        nxt = torch.where(done, PAD, logits.argmax(-1))
        done |= nxt == eos
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids


@pytest.mark.parametrize("fused", [True, False])
def test_greedy_generate_equals_a_hand_written_loop_and_never_recomputes_the_prefix(fused):
    # An assistant close to the truncated target: subtracting it pushes the target's likely tokens
    # below unlikely ones, so excluding implausible tokens changes what greedy decoding picks.
    model = uld_model(weight=1.0, rate=0.05, lora_scale=0.02)
    model.fused = fused
    ids, mask = left_padded_batch((3, 7, 5))
    free = greedy_reference(model, ids, mask, 8, eos=None)
    assert not torch.equal(free, greedy_reference(model, ids, mask, 8, eos=None, exclude=False))
    eos = int(free[0, 7 + 2])  # row 0 emits this token at step 3: make it EOS so that row stops there
    # The target is called with logits_to_keep; the assistant's first block sees the new positions
    # only (fused: stacked under the target's rows, so 2B rows; separate: B rows).
    seen = {"target": [], "assistant": []}
    hooks = [
        model.target.register_forward_pre_hook(
            lambda m, a, kw: seen["target"].append((kw["input_ids"].shape[1], kw["logits_to_keep"])),
            with_kwargs=True,
        ),
        model.assistant.model.model.layers[0].register_forward_pre_hook(
            lambda m, a, kw: seen["assistant"].append(tuple(a[0].shape[:2])), with_kwargs=True,
        ),
    ]
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                         pad_token_id=PAD, eos_token_id=eos)
    for h in hooks:
        h.remove()
    ref = greedy_reference(model, ids, mask, 8, eos=eos)
    assert torch.equal(out, ref[:, : out.shape[1]])
    assert (ref[:, out.shape[1]:] == PAD).all()
    assert out[0, 7 + 2] == eos and (out[0, 7 + 3:] == PAD).all()
    steps = out.shape[1] - ids.shape[1]
    # One prefill over the prompt, then one token per step, for each model (its own KV cache),
    # and the target computes the logits of the last position only.
    assert seen["target"] == [(7, 1)] + [(1, 1)] * (steps - 1)
    rows = 6 if fused else 3
    assert seen["assistant"] == [(rows, 7)] + [(rows, 1)] * (steps - 1)


def test_fused_inference_equals_two_separate_models():
    model = uld_model(weight=0.8, rate=0.05)
    ids, mask = left_padded_batch((3, 7, 5))
    assert model._fused_pass() is not None
    with torch.no_grad():
        fused = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
        model.fused = False
        separate = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    assert_equal_up_to_rounding(fused, separate)
    model.fused = True
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    out = model.generate(**kw)
    model.fused = False
    assert torch.equal(out, model.generate(**kw))
    # Never fused: with gradients, with a training assistant, or with a private block copy.
    model.fused = True
    assert model.assistant.train() and model._fused_pass() is None
    model.assistant.eval()
    copy_model = ULDForCausalLM(model.target, build_assistant(model.target, num_layers=2, lora_rank=0)).eval()
    assert copy_model._fused_pass() is None
    # Nor once the blocks stop sharing the target's tensors (here: the assistant's first base
    # layer replaced by a copy after the fused pass was built).
    assert model._fused_pass() is not None
    q = model.assistant.model.model.layers[0].self_attn.q_proj
    q.base_layer = copy.deepcopy(q.base_layer)
    assert model._fused_pass() is None
    with torch.no_grad():
        again = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    assert_equal_up_to_rounding(again, separate)


def test_fused_cache_buffers_match_separate_caches_through_growth_crop_and_reorder():
    # The fused pass keeps both models' keys of the shared blocks in one buffer that grows by
    # spare capacity; each model's cache holds views of it. Step by step against the separate pass.
    model = uld_model(weight=0.8, rate=0.05)
    ids, mask = left_padded_batch((3, 7, 5))
    caches, logits = {}, {}
    for fused in (True, False):
        model.fused = fused
        cache, m, out = model.new_cache(), mask, []
        with torch.no_grad():
            step = model(input_ids=ids, attention_mask=m, position_ids=positions(m), cache=cache, use_cache=True)
            for i in range(45):
                if i == 35:
                    if fused:  # 7 + 35 positions > the first capacity (7 + 32): the buffer grew
                        assert cache.fused_kv[0].keys.size(-2) > 7 + 32
                    cache.crop(-2)  # drop two positions, then continue from there
                    m = m[:, :-2]
                if i == 40:
                    cache.reorder_cache(torch.tensor([2, 0, 1]))
                    m = m[[2, 0, 1]]
                nxt = step.logits[:, -1:].argmax(-1)
                m = torch.cat([m, torch.ones_like(m[:, :1])], 1)
                pos = positions(m)[:, -1:]
                step = model(input_ids=nxt, attention_mask=m, position_ids=pos, cache=cache, use_cache=True)
                out.append(step.logits[:, -1])
        caches[fused], logits[fused] = cache, torch.stack(out, 1)
    assert_equal_up_to_rounding(logits[True], logits[False])
    fused, separate = caches[True], caches[False]
    assert set(fused.fused_kv) == {0, 1}  # the two shared blocks
    for half in ("target", "assistant"):
        for i in range(2):
            got, want = getattr(fused, half).layers[i], getattr(separate, half).layers[i]
            assert got.keys.shape == want.keys.shape == (3, 2, 7 + 45 - 2, 8)
            buffer = fused.fused_kv[i].keys  # views of the buffer, which has spare room
            assert got.keys.data_ptr() in (buffer.data_ptr(), buffer[3].data_ptr()) and buffer.size(-2) > 50
            assert_equal_up_to_rounding(got.keys, want.keys)
            assert_equal_up_to_rounding(got.values, want.values)
    model.fused = True


def test_sampling_with_a_seed_is_reproducible():
    model = uld_model()
    ids, mask = left_padded_batch((4, 6))
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=1.5,
              top_k=100, top_p=0.95, pad_token_id=PAD, eos_token_id=None)
    torch.manual_seed(7)
    a = model.generate(**kw)
    torch.manual_seed(7)
    b = model.generate(**kw)
    torch.manual_seed(8)
    c = model.generate(**kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_builds_and_generates_with_cache_like_without(family):
    torch.manual_seed(0)
    target = sharpen(tf.AutoModelForCausalLM.from_config(tiny_family_config(family)).eval())
    model = uld_model(target, weight=0.75, rate=0.05)
    ids, mask = left_padded_batch((2, 5))
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
              pad_token_id=PAD, eos_token_id=None)
    cached = model.generate(**kw)
    assert cached.shape == (2, 10)
    assert torch.equal(cached, model.generate(**kw, use_cache=False))
    assert (family in SPARSE_HEAD_FAMILIES) == (sparse_head_parts(model.assistant) is not None)
    # Fused where the family has Llama-style blocks and full attention (Mistral here has a window).
    assert (model._fused_pass() is not None) == (family in ("llama", "qwen2", "phi3"))
    model.fused = False
    assert torch.equal(cached, model.generate(**kw))
    with patch("uld.models.uld.combine.SPARSE_HEAD_FAMILIES", frozenset()):  # the full head everywhere
        assert torch.equal(cached, model.generate(**kw))


def test_sparse_head_gives_the_full_heads_logits_on_the_plausible_set():
    torch.manual_seed(3)
    head = torch.nn.Linear(8, 200, bias=True)
    zt = torch.randn(3, 2, 200) * 8
    hidden = torch.randn(3, 2, 8)
    sizes = []
    for rate in (0.01, 0.05, 0.5):  # few rows (sparse head), more, over a quarter of V (full head)
        full = combine_logits(zt, head(hidden), 0.75, rate, exclude_implausible=True)
        sparse = combine_with_head(zt, hidden, head, 0.75, rate)
        assert torch.equal(torch.isinf(full), torch.isinf(sparse))
        inside = ~torch.isinf(full)
        sizes.append(int(inside.reshape(-1, 200).any(0).sum()))
        assert_equal_up_to_rounding(sparse[inside], full[inside])
    assert sizes[0] < 50 < sizes[-1]  # both branches ran


# -- save / load ---------------------------------------------------------------------------

def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = uld_model(weight=0.6, rate=0.02)
    model.save_pretrained(tmp_path / "uld")
    # The target was built in memory: it is saved beside the adapter, recorded relative to the run.
    assert sorted(p.name for p in (tmp_path / "uld").iterdir()) == [
        "assistant", "config.json", "generation_config.json", "target"]
    assert sorted(p.name for p in (tmp_path / "uld" / "assistant").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    loaded = ULDForCausalLM.from_pretrained(tmp_path / "uld")
    assert (loaded.assistant_weight, loaded.filter_rate) == (0.6, 0.02)
    assert loaded.config.target_name_or_path == str((tmp_path / "uld" / "target").resolve())
    assert loaded.name_or_path == str(tmp_path / "uld")
    ids, mask = left_padded_batch()
    assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits,
                       model(input_ids=ids, attention_mask=mask).logits)


def test_save_refers_to_a_target_on_disk_instead_of_copying_it(tmp_path, tokenizer):
    from uld.models.loading import load_causal_lm, load_model

    tiny_llama().save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    model = uld_model(load_causal_lm(tmp_path / "target"))
    model.save_pretrained(tmp_path / "uld")
    assert not (tmp_path / "uld" / "target").exists()
    loaded, tok = load_model(tmp_path / "uld")  # the tokenizer comes from the target's directory
    assert isinstance(loaded, ULDForCausalLM) and tok.eos_token_id == EOS
    ids, _ = left_padded_batch((4,))
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    # A hub id is recorded as is.
    model.target.name_or_path = "some-org/some-model"
    model.save_pretrained(tmp_path / "uld_hub")
    import json

    cfg = json.loads((tmp_path / "uld_hub" / "config.json").read_text())
    assert cfg["target_name_or_path"] == "some-org/some-model" and not (tmp_path / "uld_hub" / "target").exists()
    # A local target is recorded relative to the run directory.
    cfg = json.loads((tmp_path / "uld" / "config.json").read_text())
    assert cfg["target_name_or_path"] == "../target" and cfg["model_type"] == "uld"


def test_missing_or_corrupt_adapter_is_one_clear_error(tmp_path):
    uld_model().save_pretrained(tmp_path / "uld")
    adapter = tmp_path / "uld" / "assistant" / "adapter_model.safetensors"
    adapter.write_bytes(b"\x80\x04 this is not safetensors")
    with pytest.raises(UldError, match="is corrupt or not safetensors"):
        ULDForCausalLM.from_pretrained(tmp_path / "uld")
    adapter.unlink()
    with pytest.raises(UldError, match="has no adapter file"):
        ULDForCausalLM.from_pretrained(tmp_path / "uld")
    with pytest.raises(UldError, match="config.json with model_type 'uld' is missing"):
        ULDForCausalLM.from_pretrained(tmp_path)


def test_tokenizer_mismatch_between_uld_dir_and_target_is_an_error(tmp_path, tokenizer):
    from uld.models.loading import load_causal_lm
    from uld.testing import tiny_tokenizer

    tiny_llama().save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    model = uld_model(load_causal_lm(tmp_path / "target"))
    model.save_pretrained(tmp_path / "uld", tokenizer=tiny_tokenizer(300))
    with pytest.raises(UldError, match="tokenizer mismatch"):
        ULDForCausalLM.from_pretrained(tmp_path / "uld")


def test_beam_search_reorders_both_caches():
    model = uld_model(weight=1.0, rate=0.05, lora_scale=0.02)
    ids, mask = left_padded_batch((3, 6))
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, num_beams=3, do_sample=False,
              pad_token_id=PAD, eos_token_id=None)
    assert torch.equal(model.generate(**kw), model.generate(**kw, use_cache=False))
