"""AUDIT.md: one table row per probe variant, from AUDIT.json's content."""

from __future__ import annotations

from typing import Any


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v != 0 and abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """(probe, variant, unlearned / target / retain summaries, recovery) per row, plain first."""
    out = [{"probe": "plain", "variant": "questions as asked", **{k: result["plain"].get(k) for k in ("unlearned", "target", "retain")},
            "recovery": {"prob": 0.0, "rouge": 0.0, "leak": 0.0}}]
    for pname, variants in result["probes"].items():
        for vname, v in variants.items():
            out.append({"probe": pname, "variant": vname, "unavailable": v.get("unavailable"),
                        **{k: v.get(k) for k in ("unlearned", "target", "retain")}, "recovery": v.get("recovery")})
    return out


def audit_markdown(result: dict[str, Any]) -> str:
    models = result["models"]
    s = result["settings"]
    lines = [f"# uld audit: {result['forget']} ({result['items']} items)", "",
             f"- unlearned: `{models['unlearned']['path']}` ({models['unlearned']['kind']})",
             f"- target: `{models['target']['path']}`",
             f"- retain model: `{models['retain']['path']}`" if "retain" in models else
             f"- reference: {result.get('reference') or 'none (no forget quality)'}",
             "",
             "prob = mean answer probability; ROUGE = mean ROUGE-L recall of the greedy answer (of the best "
             f"sample for leak@k); leak = share of questions with ROUGE >= {s['leak_threshold']}; FQ = forget "
             "quality against the retain model. Recovery = (probe - unlearned plain) / (target plain - unlearned "
             "plain): 0 = nothing recovered, 1 = back to the target. Relearning rows are measured on the items "
             "the attacker did not train on.", "",
             "| probe | variant | prob | ROUGE | leak | FQ | recovery prob | recovery ROUGE | recovery leak "
             "| target prob | target ROUGE | target leak | retain prob | retain ROUGE | retain leak |",
             "|---|---|" + "---:|" * 13]
    for r in rows(result):
        if r.get("unavailable"):
            lines.append(f"| {r['probe']} | {r['variant']} | " + " | ".join(["n/a"] * 13) + " |")
            continue
        u, t, rt, rec = r.get("unlearned") or {}, r.get("target") or {}, r.get("retain") or {}, r.get("recovery") or {}
        cells = [u.get("prob"), u.get("rouge"), u.get("leak"), u.get("forget_quality"),
                 rec.get("prob"), rec.get("rouge"), rec.get("leak"),
                 t.get("prob"), t.get("rouge"), t.get("leak"), rt.get("prob"), rt.get("rouge"), rt.get("leak")]
        lines.append(f"| {r['probe']} | {r['variant']} | " + " | ".join(_f(c) for c in cells) + " |")
    missing = [(r["probe"], r["variant"], r["unavailable"]) for r in rows(result) if r.get("unavailable")]
    if missing:
        lines += ["", "Not run:"] + [f"- {p}/{v}: {why}" for p, v, why in missing]
    lines += ["", "Seconds per stage: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items())
              + f"; total {result.get('total_seconds')} (CPU time of all threads {result.get('cpu_seconds')})"
              + (f"; {result['reused']} model x variant results reused from an earlier audit" if result.get("reused") else "")
              + ".", "",
              "Definitions, defaults and sources of each probe: docs/audit.md."]
    return "\n".join(lines) + "\n"
