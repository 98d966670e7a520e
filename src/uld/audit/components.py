"""Components probe (ULD and offset unlearning): each part of the served model on its own.

ULD serves `target - alpha * assistant`: the target's weights are untouched, so whoever holds the
target alone holds all the knowledge (its recovery is 1 by construction), and the assistant is
trained to *remember* the forget set, so its adapter is itself a copy of it: its answer
probability on the forget set says how much of it. Offset unlearning serves
`target + (offset - offset_base)`: the same holds for its target; its offset model alone is shown
too. For other methods the served model is one network and this probe does not apply.
"""

from __future__ import annotations

from uld.audit.base import AuditContext, Variant, measure, probe, scorer_for


def parts(sub) -> dict[str, object]:
    """The separately held networks of a served model, by name (empty for a plain model)."""
    if sub.kind == "uld":
        return {"target_alone": sub.model.target, "assistant_alone": sub.model.assistant.model}
    if sub.kind == "offset":
        return {"target_alone": sub.model.target, "offset_alone": sub.model.offset}
    return {}


@probe("components")
def components_probe(ctx: AuditContext) -> list[Variant]:
    s = ctx.settings
    sub = ctx.subjects["unlearned"]
    found = parts(sub)
    if not found:
        return [Variant("target_alone", "the served model's parts alone",
                        unavailable="the model is one network (not ULD or offset unlearning): no parts to hold apart")]
    qs = [r["question"] for r in ctx.items]
    variants = []
    for name, net in found.items():
        what = name.replace("_alone", "")
        v = Variant(name, f"the {what} of the served model, used on its own")
        ctx.log(f"audit: components/{name}")
        v.results["unlearned"] = measure(scorer_for(net, sub.tokenizer, s), qs, ctx.items, s)
        variants.append(v)
    return variants
