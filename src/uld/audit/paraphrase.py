"""Paraphrase probe: the forget questions reworded, and asked after a few retain QA pairs.

- `paraphrased_question`: TOFU's `paraphrased_question` field where the records have one, else a
  reworded question from the augmentation file (`--augment-file`, `uld augment`'s format);
- `few_shot`: the original question after `few_shot` retain QA pairs shown as earlier turns
  (a chat template's user/assistant turns, or the plain template repeated), the in-context
  setting MUSE's KnowMem uses.

Greedy decoding and the answer's likelihood can hide knowledge that another wording reaches
(TOFU reports paraphrased-question results; Lynch et al. 2024, arXiv 2402.16835, "Eight methods
to evaluate robust unlearning", use rephrasings and in-context prompts as attacks).
"""

from __future__ import annotations

from dataclasses import dataclass

from uld.audit.base import AuditContext, Variant, measure, probe, scorer_for
from uld.data.prompts import PromptFormat


@dataclass(frozen=True)
class FewShotFormat(PromptFormat):
    """A `PromptFormat` whose prompt is preceded by `shots` (question, answer) turns."""

    shots: tuple[tuple[str, str], ...] = ()

    def prompt(self, tokenizer, question: str) -> str:
        if self.use_chat_template and getattr(tokenizer, "chat_template", None):
            messages = []
            for q, a in self.shots:
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            messages.append({"role": "user", "content": question})
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        context = "".join(self.template.format(question=q) + self.answer_prefix + a + "\n" for q, a in self.shots)
        return context + self.template.format(question=question)


def paraphrased_questions(ctx: AuditContext) -> tuple[list[str] | None, str]:
    """One reworded question per forget item and where they come from, or (None, reason)."""
    items = ctx.items
    if all(r.get("paraphrased_question") for r in items):
        return [str(r["paraphrased_question"]) for r in items], "the records' paraphrased_question"
    if ctx.augment:
        qs = [ctx.augment.get(" ".join(r["question"].split()).lower(), []) for r in items]
        if all(qs):
            return [q[0] for q in qs], "the augmentation file's reworded questions"
        missing = sum(not q for q in qs)
        return None, f"the augmentation file rewords no question for {missing} of {len(items)} forget items"
    return None, "the forget records have no paraphrased_question and no --augment-file was given"


@probe("paraphrase")
def paraphrase_probe(ctx: AuditContext) -> list[Variant]:
    s = ctx.settings
    variants = []
    questions, source = paraphrased_questions(ctx)
    v = Variant("paraphrased_question", f"forget questions reworded ({source})")
    if questions is None:
        v.unavailable = source
    else:
        for name, sub in ctx.subjects.items():
            ctx.log(f"audit: paraphrase/paraphrased_question on {name}")
            v.results[name] = ctx.cached(sub, "paraphrase/paraphrased_question",
                                         lambda sub=sub: measure(scorer_for(sub.model, sub.tokenizer, s), questions, ctx.items, s))
    variants.append(v)

    v = Variant("few_shot", f"each forget question after {s.few_shot} retain QA pairs as earlier turns")
    if s.few_shot == 0 or len(ctx.retain) < s.few_shot:
        v.unavailable = f"needs {s.few_shot} retain QA pairs, have {len(ctx.retain)}" if s.few_shot else "--few-shot is 0"
    else:
        shots = tuple((r["question"], r["answer"]) for r in ctx.retain[: s.few_shot])
        v.extra["shots"] = [list(x) for x in shots]
        base = s.prompt_format
        fmt = FewShotFormat(base.template, base.answer_prefix, base.use_chat_template, base.add_eos, shots)
        qs = [r["question"] for r in ctx.items]
        for name, sub in ctx.subjects.items():
            ctx.log(f"audit: paraphrase/few_shot on {name}")
            v.results[name] = ctx.cached(sub, "paraphrase/few_shot",
                                         lambda sub=sub: measure(scorer_for(sub.model, sub.tokenizer, s, fmt), qs, ctx.items, s))
    variants.append(v)
    return variants
