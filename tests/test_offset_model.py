"""OffsetForCausalLM: target + scale * (offset - base), generating with transformers' own loop."""

import torch

from uld.models.offset import OffsetForCausalLM, truncated_copy
from uld.testing import tiny_llama


def offset_model(scale=1.0):
    target = tiny_llama(num_layers=4)
    with torch.no_grad():
        target.lm_head.weight.mul_(20)
    base = truncated_copy(target, 2)
    offset = truncated_copy(target, 2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in offset.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return OffsetForCausalLM(target, offset, base, scale=scale).eval()


def test_logits_are_target_plus_scaled_offset_difference():
    model = offset_model(scale=0.5)
    ids = torch.tensor([[5, 17, 42, 9]])
    with torch.no_grad():
        want = model.target(input_ids=ids).logits + 0.5 * (model.offset(input_ids=ids).logits
                                                             - model.base(input_ids=ids).logits)
        assert torch.allclose(model(input_ids=ids).logits, want, rtol=0, atol=1e-5 * want.abs().max().item())
    # Before training (offset = its start) the model is the target.
    same = OffsetForCausalLM(model.target, model.base, truncated_copy(model.target, 2)).eval()
    with torch.no_grad():
        assert torch.equal(same(input_ids=ids).logits, model.target(input_ids=ids).logits)


def test_generate_with_the_three_caches_equals_generate_without():
    model = offset_model()
    ids = torch.tensor([[0, 0, 5, 17, 42], [9, 77, 31, 8, 3]])
    mask = (ids != 0).long()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    seen = []
    hook = model.target.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].shape[1]), with_kwargs=True)
    cached = model.generate(**kw)
    hook.remove()
    assert seen == [5] + [1] * 5  # one prefill, then one new token per step: the prefix is cached
    assert torch.equal(cached, model.generate(**kw, use_cache=False))
    # By hand: argmax of the combined logits over the whole sequence, step by step.
    seq, m = ids, mask
    for _ in range(6):
        pos = (m.cumsum(-1) - 1).clamp_min(0)
        with torch.no_grad():
            nxt = model(input_ids=seq, attention_mask=m, position_ids=pos).logits[:, -1].argmax(-1)
        seq, m = torch.cat([seq, nxt[:, None]], 1), torch.cat([m, torch.ones_like(m[:, :1])], 1)
    assert torch.equal(cached, seq)
