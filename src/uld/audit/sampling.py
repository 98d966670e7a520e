"""Sampling probe: leak@k. Greedy decoding shows one answer; an attacker can draw many.

For each forget question, k answers are sampled at temperature T with nucleus mass top-p
(defaults k = 10, T = 1.0, top-p 1.0 and no top-k: the model's full distribution). The question
*leaks* when any sample reaches ROUGE-L recall >= the threshold (default 0.5) against the true
answer; leak@k is the share of questions that leak. Its plain counterpart is the share of greedy
answers above the threshold. The retain model's leak@k is the floor: what a model that never saw
the forget set guesses right by chance or from general knowledge. (Sampling-based extraction of
"unlearned" facts: Scholten et al. 2024, arXiv 2410.03554.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uld.audit.base import AuditContext, Measures, Variant, probe


def sample_answers(model, tokenizer, fmt, questions: Sequence[str], k: int, max_new_tokens: int, temperature: float,
                   top_p: float, batch_size: int, device: str, seed: int) -> list[list[str]]:
    """k sampled answers per question (left-padded batches; text up to the first EOS)."""
    import torch

    from uld.data.collate import left_pad

    torch.manual_seed(seed)
    prompts = [fmt.prompt_ids(tokenizer, q) for q in questions]
    rows = [i for i in range(len(prompts)) for _ in range(k)]  # each prompt k times
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    out: list[list[str]] = [[] for _ in prompts]
    step = max(batch_size, k)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        ids, mask = left_pad([prompts[i] for i in chunk], pad)
        width = ids.shape[1]
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_beams=1,
                                 pad_token_id=pad, eos_token_id=eos)
        for row, i in enumerate(chunk):
            toks = gen[row, width:].tolist()
            if eos is not None and eos in toks:
                toks = toks[: toks.index(eos)]
            out[i].append(tokenizer.decode(toks, skip_special_tokens=True).strip())
    return out


def leak_measures(samples: list[list[str]], answers: Sequence[str], plain: Measures, threshold: float) -> Measures:
    """Per question: the best sample's ROUGE-L recall, leak = best >= threshold; probabilities and
    R are the plain ones (sampling does not change the model)."""
    from uld.eval import metrics as M

    flat = [s for group in samples for s in group]
    refs = [a for a, group in zip(answers, samples, strict=True) for _ in group]
    scores = M.rouge_l_recall(flat, refs) if flat else np.zeros(0)
    best, start = [], 0
    for group in samples:
        best.append(float(scores[start : start + len(group)].max()))
        start += len(group)
    best_arr = np.array(best)
    return Measures(prob=plain.prob, rouge=best_arr, r=plain.r, leak=best_arr >= threshold, generations=samples)


@probe("sampling")
def sampling_probe(ctx: AuditContext) -> list[Variant]:
    s = ctx.settings
    v = Variant(f"leak@{s.leak_k}", f"{s.leak_k} samples per question at T={s.temperature}, top-p {s.top_p}; "
                f"leak = any sample with ROUGE-L recall >= {s.leak_threshold}")
    qs = [r["question"] for r in ctx.items]
    answers = [r["answer"] for r in ctx.items]
    for name, sub in ctx.subjects.items():
        ctx.log(f"audit: sampling on {name}")

        def leak(sub=sub, name=name) -> Measures:
            samples = sample_answers(sub.model, sub.tokenizer, s.prompt_format, qs, s.leak_k, s.max_new_tokens, s.temperature,
                                     s.top_p, s.batch_size, s.device, s.seed)
            return leak_measures(samples, answers, ctx.plain[name], s.leak_threshold)

        v.results[name] = ctx.cached(sub, "sampling", leak)
    return [v]
