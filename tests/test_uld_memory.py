"""Memory of ULD decoding, counted in live tensor bytes (torch's allocator events), not resident set.

The resident set depends on the C allocator (what glibc keeps after a free), the thread count and
the run; the bytes torch allocates for tensors do not. These tests pin them with shape arithmetic.
"""

from __future__ import annotations

import torch

from uld import ULDForCausalLM, build_assistant
from uld.bench.measure import live_window
from uld.testing import tiny_llama

# tiny_llama: hidden 32, 4 heads (head dim 8), 2 KV heads, 4 layers, fp32; the assistant takes K = 1.
B, PROMPT, NEW, HKV, D, L, K, V = 4, 6, 40, 2, 8, 4, 1, 320
T = PROMPT + NEW - 1  # cached positions: the last generated token is never fed back
LAYER_KV = 2 * B * HKV * T * D * 4  # keys + values of one layer of one model, bytes
TOKENS = B * (PROMPT + NEW) * 8  # the returned int64 sequences


def test_live_window_counts_allocations_and_frees_in_order():
    """4000 bytes, then 2000 more (peak 6000), then the first freed: 2000 held at the end; a
    tensor created before the window and freed inside it is not counted."""
    before = torch.empty(10_000)

    def body():
        nonlocal before
        a = torch.empty(1000)
        b = torch.empty(500)
        del a
        before = None
        return b

    out, live = live_window(body)
    assert out.numel() == 500
    assert live.peak_mb * 2**20 == 6000 and live.end_mb * 2**20 == 2000


def _decode(model):
    torch.manual_seed(0)
    ids = torch.randint(3, V, (B, PROMPT))
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids=ids, max_new_tokens=2, min_new_tokens=2, **kw)  # warm-up
        return live_window(lambda: model.generate(input_ids=ids, max_new_tokens=NEW, min_new_tokens=NEW,
                                                  return_dict_in_generate=True, **kw))


def test_uld_decoding_holds_the_two_caches_and_nothing_per_step():
    """What generation leaves alive is its tokens and caches, nothing else (no per-step logits).

    Target alone: L layers of KV, 4 x 23,040 bytes, + 1,472 bytes of tokens = 93,632.
    ULD: the target's layers K..L-1 (3 x 23,040) + one fused buffer per shared layer holding both
    models' keys and values for 2B rows: capacity = prompt + 32 = 38 after the prompt, grown at
    position 39 to 39 + max(32, 39 // 4) = 71, so 2 x 2B x HKV x 71 x D x 4 = 72,704 bytes;
    + tokens = 143,296. That is the target's + the assistant's KV (23,040) + 26,624 bytes of spare
    capacity (71 - 45 positions of the 2B-row buffer).
    Peak: ULD's transients (peak - end) are at most the target's plus the old fused buffer, held
    while it is copied into the grown one (2 x 2B x HKV x 38 x D x 4 = 38,912 bytes). Logits kept
    for every step would add NEW x B x V x 4 = 204,800 bytes.
    """
    target = tiny_llama(vocab_size=V, num_layers=L)
    uld = ULDForCausalLM(target, build_assistant(target, num_layers=K, lora_rank=4)).eval()
    _, t_live = _decode(target)
    u_out, u_live = _decode(uld)

    assert t_live.end_mb * 2**20 == L * LAYER_KV + TOKENS == 93_632
    slot = u_out.cache.fused_kv[0]
    assert (slot.length, slot.keys.size(-2)) == (T, 71)
    assert u_live.end_mb * 2**20 == (L - K) * LAYER_KV + 2 * (2 * B * HKV * 71 * D * 4) + TOKENS == 143_296
    assert u_live.end_mb * 2**20 - t_live.end_mb * 2**20 == K * LAYER_KV + 26_624

    old_buffer = 2 * (2 * B * HKV * 38 * D * 4)
    assert (u_live.peak_mb - u_live.end_mb) * 2**20 <= (t_live.peak_mb - t_live.end_mb) * 2**20 + old_buffer
