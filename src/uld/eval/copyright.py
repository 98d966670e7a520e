"""The ULD paper's copyrighted-text protocol (Ji et al. 2024, section 3.3, Table 3).

- Forget side: each forget text is cut into chunks of `chunk_tokens` tokens (paper: 512); the
  first `prefix_tokens` (paper: 200) are the prompt, the model continues it greedily for
  `max_new_tokens`, and the continuation is compared with the chunk's true continuation (cut to
  the same number of tokens) by
  - BLEU: sacrebleu's `sentence_bleu` per item (default 13a tokeniser, exponential smoothing),
    averaged over items, 0-100 (`copyright_BLEU`); sacrebleu's `corpus_bleu` over all items
    is reported beside it (`copyright_BLEU_corpus`), since the paper does not say which;
  - ROUGE-L F1 (rouge_score, stemmer off, as MUSE), mean over items, 0-100 like the paper's table.
- Retain side:
  - word perplexity of held-out text (the paper: WikiText-2): exp(-sum log p / words), words
    counted by splitting on whitespace, every token of a text scored once (`TextLM.token_logprobs`),
    as lm-evaluation-harness's `word_perplexity`;
  - zero-shot multiple-choice accuracy (the paper: BoolQ, RTE, HellaSwag, ARC, OpenBookQA, PIQA
    via lm-evaluation-harness): the choice with the highest log-likelihood given the query
    (`acc`), and with log-likelihood per byte (`acc_norm`), per task and averaged over tasks.

Local data layout (beside MUSE's folders in one data directory):
`raw/forget.json` (forget texts), `copyright/ppl.json` (held-out texts) and
`copyright/mc/<task>.json` (`[{"query", "choices": [...], "gold": index}]`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uld.errors import UldError
from uld.eval.metrics import better
from uld.eval.textlm import TextLM

EVAL_FILE = "COPYRIGHT_EVAL.json"
SUMMARY_FILE = "COPYRIGHT_SUMMARY.json"


# ---- metrics: pure functions of per-item values ---------------------------------------------


def sentence_bleu(generations: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-item sacrebleu sentence BLEU (0-100) of each generation against its one reference."""
    import sacrebleu

    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations for {len(references)} references")
    return np.array([sacrebleu.sentence_bleu(g, [r]).score for g, r in zip(generations, references, strict=True)])


def corpus_bleu(generations: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100): n-gram counts pooled over all items before the geometric mean."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(generations), [list(references)]).score)


def rouge_l_f1(generations: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-item ROUGE-L F1 (rouge_score, stemmer off), 0-1."""
    from uld.eval.muse import rouge_scores

    return np.array([s["rougeL_f1"] for s in rouge_scores(generations, references)])


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for word perplexity: whitespace-separated pieces."""
    return len(re.split(r"\s+", text))


@better("lower")
def word_perplexity(token_logprobs: Sequence[np.ndarray], texts: Sequence[str]) -> float:
    """exp(-(sum over texts and tokens of log p) / (sum over texts of words))."""
    total = float(sum(np.sum(lp) for lp in token_logprobs))
    words = sum(count_words(t) for t in texts)
    if words == 0:
        raise ValueError("word perplexity needs at least one word")
    return math.exp(-total / words)


@better("higher")
def mc_accuracy(loglikelihoods: Sequence[Sequence[float]], gold: Sequence[int],
                choices: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """Per-item 1.0 when the gold choice has the highest score, else 0.0 (ties: the first
    maximum, numpy's argmax, as lm-evaluation-harness). With `choices`, each log-likelihood is
    divided by its choice's length in UTF-8 bytes first (lm-evaluation-harness's `acc_norm`)."""
    out = []
    for i, (ll, g) in enumerate(zip(loglikelihoods, gold, strict=True)):
        s = np.asarray(ll, dtype=np.float64)
        if choices is not None:
            s = s / np.array([max(1, len(c.encode("utf-8"))) for c in choices[i]])
        out.append(float(int(np.argmax(s)) == int(g)))
    return np.array(out)


# ---- data -----------------------------------------------------------------------------------


@dataclass
class CopyrightData:
    forget_texts: list[str]
    ppl_texts: list[str] | None
    mc: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UldError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from e


def load_copyright_data(source: str | Path) -> CopyrightData:
    """The forget texts, held-out texts and multiple-choice tasks from a local directory."""
    from uld.eval.muse import _texts

    p = Path(source)
    if not p.is_dir():
        raise UldError(f"copyright data {str(source)!r} is not a directory (expected raw/forget.json, copyright/ppl.json, copyright/mc/)")
    forget_path = p / "raw" / "forget.json"
    if not forget_path.is_file():
        raise UldError(f"{p} has no raw/forget.json (the forget texts whose continuations are checked)")
    forget = _texts(_read(forget_path), str(forget_path))
    ppl_path = p / "copyright" / "ppl.json"
    ppl = _texts(_read(ppl_path), str(ppl_path)) if ppl_path.is_file() else None
    mc = {}
    for f in sorted((p / "copyright" / "mc").glob("*.json")) if (p / "copyright" / "mc").is_dir() else []:
        rows = _read(f)
        ok = isinstance(rows, list) and all(
            isinstance(r, dict) and isinstance(r.get("query"), str) and isinstance(r.get("choices"), list)
            and len(r["choices"]) >= 2 and isinstance(r.get("gold"), int) and 0 <= r["gold"] < len(r["choices"]) for r in rows)
        if not ok or not rows:
            raise UldError(f"{f} must be a non-empty JSON list of {{query, choices (>= 2), gold (an index into choices)}}")
        mc[f.stem] = rows
    return CopyrightData(forget, ppl, mc)


def completion_items(lm, texts: Sequence[str], prefix_tokens: int, chunk_tokens: int, max_new_tokens: int,
                     max_items: int | None) -> list[dict[str, str]]:
    """{"prompt", "gt"} per chunk: each text's tokens (no special tokens) in consecutive chunks of
    `chunk_tokens`; prompt = the first `prefix_tokens` decoded, gt = the next
    min(max_new_tokens, rest) decoded. Chunks with no token after the prefix are skipped."""
    tok = lm.tokenizer
    items = []
    for t in texts:
        ids = list(tok(t, add_special_tokens=False)["input_ids"])
        for s in range(0, len(ids), chunk_tokens):
            chunk = ids[s : s + chunk_tokens]
            if len(chunk) <= prefix_tokens:
                continue
            items.append({"prompt": tok.decode(chunk[:prefix_tokens], skip_special_tokens=True),
                          "gt": tok.decode(chunk[prefix_tokens : prefix_tokens + max_new_tokens], skip_special_tokens=True)})
            if max_items and len(items) >= max_items:
                return items
    return items


# ---- the task -------------------------------------------------------------------------------


@dataclass
class CopyrightConfig:
    """The protocol's sizes; defaults from the ULD paper (App. B) where it gives them."""

    prefix_tokens: int = 200
    """Prompt length in tokens (paper: 200)."""
    chunk_tokens: int = 512
    """Forget texts are cut into chunks of this many tokens (paper: 512)."""
    max_new_tokens: int = 200
    """Greedy continuation length, and the length the true continuation is cut to."""
    max_items: int | None = 400
    """Chunks evaluated (paper: 400); None = all."""


Progress = Callable[[str, int], Callable[[int], None]]


def evaluate_copyright(lm: TextLM, data: CopyrightData, cfg: CopyrightConfig | None = None,
                       progress: Progress | None = None) -> dict[str, dict]:
    """COPYRIGHT_EVAL.json: `{metric: {agg_value, value_by_index}}` as MUSE_EVAL.json."""
    cfg = cfg or CopyrightConfig()
    if cfg.prefix_tokens < 1 or cfg.chunk_tokens <= cfg.prefix_tokens or cfg.max_new_tokens < 1:
        raise UldError("copyright needs prefix_tokens >= 1, chunk_tokens > prefix_tokens and max_new_tokens >= 1")

    def bar(name: str, n: int):
        return progress(name, n) if progress else None

    out: dict[str, dict] = {}
    items = completion_items(lm, data.forget_texts, cfg.prefix_tokens, cfg.chunk_tokens, cfg.max_new_tokens, cfg.max_items)
    if not items:
        raise UldError(f"no forget text is longer than the {cfg.prefix_tokens}-token prefix; lower --prefix-tokens")
    gens = lm.generate_until([i["prompt"] for i in items], cfg.max_new_tokens, progress=bar("completions", len(items)))
    refs = [i["gt"] for i in items]
    bleu, rl = sentence_bleu(gens, refs), rouge_l_f1(gens, refs)
    out["copyright_BLEU"] = {"agg_value": float(bleu.mean()), "value_by_index": {
        str(k): {"bleu": float(b), "rougeL_f1": float(r), "input": i["prompt"], "ground_truth": i["gt"], "generation": g}
        for k, (b, r, i, g) in enumerate(zip(bleu, rl, items, gens, strict=True))}}
    out["copyright_BLEU_corpus"] = {"agg_value": corpus_bleu(gens, refs)}
    out["copyright_ROUGE_L"] = {"agg_value": float(rl.mean() * 100)}
    if data.ppl_texts:
        lps = lm.token_logprobs(data.ppl_texts, progress=bar("perplexity", len(data.ppl_texts)))
        out["heldout_word_perplexity"] = {"agg_value": word_perplexity(lps, data.ppl_texts), "value_by_index": {
            str(k): {"logprob_sum": float(lp.sum()), "tokens": int(lp.size), "words": count_words(t)}
            for k, (lp, t) in enumerate(zip(lps, data.ppl_texts, strict=True))}}
    accs = []
    for task, rows in data.mc.items():
        ctx = [r["query"] for r in rows for _ in r["choices"]]
        cont = [c for r in rows for c in r["choices"]]
        ll = [x[0] for x in lm.loglikelihood(ctx, cont, progress=bar(f"mc {task}", len(ctx)))]
        per, pos = [], 0
        for r in rows:
            per.append(ll[pos : pos + len(r["choices"])])
            pos += len(r["choices"])
        acc = mc_accuracy(per, [r["gold"] for r in rows])
        norm = mc_accuracy(per, [r["gold"] for r in rows], [r["choices"] for r in rows])
        out[f"mc_{task}_acc"] = {"agg_value": float(acc.mean()), "acc_norm": float(norm.mean()), "value_by_index": {
            str(k): {"loglikelihoods": per[k], "gold": r["gold"], "acc": float(acc[k])} for k, r in enumerate(rows)}}
        accs.append(float(acc.mean()))
    if accs:
        out["mc_mean_acc"] = {"agg_value": float(np.mean(accs)) * 100}
    return out


def write_copyright_results(out_dir: str | Path, metrics: dict[str, dict]) -> dict[str, float]:
    from uld.eval.muse import summarize
    from uld.io import write_json_files

    summary = summarize(metrics)
    write_json_files(out_dir, {EVAL_FILE: metrics, SUMMARY_FILE: summary})
    return summary
