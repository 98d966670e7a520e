"""The real-model TOFU study's outputs: one summary row per model, REPORT.md, the FQ-vs-MU plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uld.studies.demo import fmt, row_summary

COLUMNS = (("forget_quality", "FQ"), ("log10_forget_quality", "log10 FQ"), ("model_utility", "MU"),
           ("forget_rouge", "forget ROUGE"), ("retain_rouge", "retain ROUGE"), ("ra_rouge", "real-author ROUGE"),
           ("wf_rouge", "world-fact ROUGE"), ("forget_prob", "forget prob"), ("retain_prob", "retain prob"),
           ("forget_truth_ratio_median", "forget TR median"), ("train_seconds", "train s"),
           ("train_forget_prob", "policy forget prob"))


def summary(metrics: dict[str, dict], seconds: float | None, final: dict | None = None) -> dict[str, Any]:
    """The numbers the study reports for one model; `final` is the run's last epoch line."""
    row = row_summary(metrics, seconds)

    def agg(name: str) -> float | None:
        v = metrics.get(name, {}).get("agg_value")
        return float(v) if isinstance(v, int | float) else None

    row.update(ra_rouge=agg("ra_Q_A_ROUGE"), wf_rouge=agg("wf_Q_A_ROUGE"), retain_prob=agg("retain_Q_A_Prob"),
               train_forget_prob=(final or {}).get("forget_prob"))
    return row


def report_markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    st = s["study"]
    head = "| model | seeds | " + " | ".join(c for _, c in COLUMNS) + " |"
    chosen = result.get("chosen") or {}
    lines = [f"# uld study tofu: {Path(s['model']).name}", "",
             f"Real TOFU data ({s['data']}): {st['retain_authors']} retain + {st['forget_authors']} forget author(s), "
             f"{st['qa_per_author']} QA each; {s['seeds']} unlearning seed(s) per setting"
             + (f", {s.get('chosen_seeds')} for the chosen settings" if chosen else "") + " (means shown).", "",
             head, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, r in result["results"].items():
        lines.append(f"| {name} | {r.get('seeds', '-')} | " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |")
    if chosen:
        lines += ["", f"Chosen settings (the highest forget quality among the settings that keep {s['keep_utility']:.0%} of "
                  "the target's model utility, else the highest utility), run with more seeds: "
                  + ", ".join(f"{kind} `{label}`" for kind, label in chosen.items()) + "."]
    spreads = result.get("spread") or {}
    if spreads:
        lines += ["", "## Spread over seeds (sample standard deviation)", "",
                  "| model | seeds | " + " | ".join(c for _, c in COLUMNS[:10]) + " |", "|" + "---|" * (10 + 2)]
        for name, sp in spreads.items():
            cells = [fmt(sp[k]["sd"]) if sp.get(k) else "n/a" for k, _ in COLUMNS[:10]]
            lines.append(f"| {name} | {len(result['per_seed'][name])} | " + " | ".join(cells) + " |")
    if any(len(rows) > 1 for rows in result["per_seed"].values()):
        lines += ["", "## Per seed", "", "| model | seed | " + " | ".join(c for _, c in COLUMNS) + " |",
                  "|" + "---|" * (len(COLUMNS) + 2)]
        for name, rows in result["per_seed"].items():
            if len(rows) < 2:
                continue
            for seed, r in enumerate(rows):
                lines.append(f"| {name} | {seed} | " + " | ".join(fmt(r.get(k)) for k, _ in COLUMNS) + " |")
    lines += ["", "## Settings", "",
              "- Split sizes: " + ", ".join(f"{k} {v}" for k, v in s["split_sizes"].items()) + ".",
              f"- Target and retain model: full fine-tune, chat template, {st['finetune_epochs']} epochs, lr {st['finetune_lr']}, "
              f"batch {st['finetune_batch']}; evaluation: greedy, {st['eval_max_new_tokens']} new tokens, batch {st['eval_batch']}.",
              "- ULD's D'_r wrong answers are other (retain) authors' answers to the forget questions (never the "
              "evaluation's perturbed answers); no paraphrases (none exist outside the evaluation's)."]
    for v in s["variants"]:
        extra = ", ".join(f"{k} {val}" for k, val in v["overrides"].items())
        lines.append(f"- {v['name']}: method {v['method']}, lr {v['lr']}, epochs {v['epochs']}, batch {v['batch_size']}"
                     + (f", {extra}" if extra else "") + (f"; evaluated at assistant weight {v['alphas']}" if v["alphas"] else ""))
    lines.append("- Stage seconds (0 = reused from the cache): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in result["stage_seconds"].items()))
    lines += ["", f"Total wall time of this run: {result['total_seconds']:.0f} s.", "",
              "FQ: KS-test p-value of the forget truth ratios against the retain model's (near 1 = indistinguishable); "
              "MU: harmonic mean of probability, ROUGE and truth ratio on retain, real-author and world-fact QA; "
              "'policy forget prob': the trained policy's own mean forget-answer probability at its last epoch "
              "(for ULD, the assistant's: it must memorise the forget set for the logit difference to mean anything)."]
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], path: Path, title: str) -> None:
    """FQ (log scale) against model utility, one point per row. The rows of one variant family (an
    assistant-weight sweep `uld a=...`, a learning-rate sweep `ga lr=...`) share a colour and are
    joined in sweep order, the marker growing with the setting; the target, the retain model and
    rows averaged over seeds are named on the plot (others: in the legend). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uld.io import save_figure

    fig, ax = plt.subplots(figsize=(9, 6))
    groups: dict[str, list[tuple[float, float, str, int]]] = {}
    for name, r in rows.items():
        fq, mu = r.get("forget_quality"), r.get("model_utility")
        if fq is None or mu is None:
            continue
        groups.setdefault(name.split(" ")[0], []).append((mu, max(fq, 1e-30), name, r.get("seeds") or 1))
    colors = plt.get_cmap("tab20").colors
    named: list[tuple[float, float, str]] = []
    for i, (group, pts) in enumerate(groups.items()):
        marker = {"target": "s", "retain": "*"}.get(group, "D" if group == "uld" else "o")
        color = colors[(2 * i) % 20 + (2 * i // 20) % 2]
        settings = ", ".join(p[2][len(group):].strip() for p in pts if p[2] != group)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linewidth=1, marker=marker, markersize=5,
                label=f"{group} ({settings})" if settings else group)
        for k, (x, y, name, seeds) in enumerate(pts):
            ax.plot([x], [y], marker=marker, color=color, linestyle="none", zorder=3 if group == "retain" else 2,
                    markersize=14 if group == "retain" else 5 + 3 * k, markerfacecolor="none" if group == "retain" else color)
            if group in ("target", "retain") or seeds > 1:
                named.append((x, y, name + (f" ({seeds} seeds)" if seeds > 1 else "")))
    for n, (x, y, text) in enumerate(named):  # staggered so that close points stay readable
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(-150, -14 - 12 * n), fontsize=7,
                    arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "grey"})
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (log scale)")
    ax.set_title(title)
    ax.axhline(0.05, color="grey", linestyle=":", linewidth=1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="sweep: marker grows with the setting",
              title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
