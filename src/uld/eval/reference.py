"""Read evaluation logs back into per-item values: a reference (retain model) or a log to aggregate.

Two public formats, detected from their keys:
- the original TOFU `eval_log_aggregated.json`: `eval_log.json` (retain), `eval_log_forget.json`,
  `eval_real_author_wo_options.json`, `eval_real_world_wo_options.json`, each holding
  `avg_gt_loss`, `avg_paraphrased_loss`, `average_perturb_loss`, `rougeL_recall`,
  `generated_text` ([prompt, generation, answer]) as {item index: value};
- OpenUnlearning's `TOFU_EVAL.json`: `{metric: {agg_value, value_by_index}}`, which is also what
  `uld eval` writes, so one run can be the reference of another.
A path may be the file or a directory holding `TOFU_EVAL.json` or `eval_log_aggregated.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from uld.errors import UldError
from uld.eval.mia import ATTACKS
from uld.eval.tofu import SPLITS, SplitScores

LOG_FILES = ("TOFU_EVAL.json", "eval_log_aggregated.json")
TOFU_KEYS = {
    "forget": "eval_log_forget.json",
    "retain": "eval_log.json",
    "ra": "eval_real_author_wo_options.json",
    "wf": "eval_real_world_wo_options.json",
}


@dataclass
class EvalLog:
    """Per-item values read from a log. `forget_r` is R per forget item (TOFU's convention)."""

    path: Path
    format: Literal["tofu", "openunlearning"]
    splits: dict[str, SplitScores] = field(default_factory=dict)
    forget_r: np.ndarray | None = None
    forget_answers: list[str] | None = None
    mia_auc: dict[str, float] = field(default_factory=dict)


def _ordered(d: dict) -> list:
    """Values of an {index: value} dict in index order."""
    return [d[k] for k in sorted(d, key=lambda k: (int(k) if str(k).lstrip("-").isdigit() else 0, str(k)))]


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in LOG_FILES:
            if (p / name).is_file():
                return p / name
        raise UldError(f"{str(p)!r} holds no evaluation log: expected {' or '.join(LOG_FILES)} in it")
    if not p.is_file():
        raise UldError(f"evaluation log {str(p)!r} does not exist")
    return p


def read_log(path: str | Path) -> EvalLog:
    """Read a TOFU or OpenUnlearning (or `uld eval`) log; one clear error when it is neither."""
    p = _resolve(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UldError(f"evaluation log {str(p)!r} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise UldError(f"evaluation log {str(p)!r} must be a JSON object")
    try:
        if any(k in data for k in TOFU_KEYS.values()):
            log = _read_tofu(p, data)
        elif any(isinstance(v, dict) and "agg_value" in v for v in data.values()):
            log = _read_openunlearning(p, data)
        else:
            raise UldError(
                f"{str(p)!r} is neither a TOFU eval_log_aggregated.json (keys like eval_log_forget.json) "
                f"nor an OpenUnlearning TOFU_EVAL.json ({{metric: {{agg_value, value_by_index}}}})"
            )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise UldError(f"evaluation log {str(p)!r} is malformed ({type(e).__name__}: {e})") from e
    if "forget" in log.splits:
        # per-item losses give R exactly; a stored truth ratio is the fallback
        r = log.splits["forget"].truth_ratio_r(paraphrased=True)
        log.forget_r = r if r is not None else log.forget_r
    if log.forget_answers is None and "forget" in log.splits:
        log.forget_answers = log.splits["forget"].answers
    return log


def _arr(d: dict | None, ndim: int = 1) -> np.ndarray | None:
    if d is None:
        return None
    a = np.asarray(_ordered(d), dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"expected {ndim}-d per-item values, got shape {a.shape}")
    return a


def _read_tofu(p: Path, data: dict) -> EvalLog:
    log = EvalLog(path=p, format="tofu")
    for key, fname in TOFU_KEYS.items():
        if fname not in data:
            continue
        d = data[fname]
        gen = _ordered(d["generated_text"]) if "generated_text" in d else None
        log.splits[key] = SplitScores(
            nll=_arr(d.get("avg_gt_loss")),
            # on real authors / world facts this is the answer scored again (see truth_ratio_r)
            nll_para=_arr(d.get("avg_paraphrased_loss")),
            nll_pert=_arr(d.get("average_perturb_loss"), 2),
            rouge=_arr(d.get("rougeL_recall")),
            questions=[g[0] for g in gen] if gen else None,
            generations=[g[1] for g in gen] if gen else None,
            answers=[g[2] for g in gen] if gen else None,
        )
    return log


def _vbi(data: dict, name: str) -> dict | None:
    entry = data.get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("value_by_index"), dict):
        return None
    return entry["value_by_index"]


def _field(vbi: dict | None, key: str, ndim: int = 1) -> np.ndarray | None:
    if vbi is None:
        return None
    items = _ordered(vbi)
    if not all(isinstance(it, dict) and key in it and it[key] is not None for it in items):
        return None
    a = np.asarray([it[key] for it in items], dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"expected {ndim}-d {key!r} values, got shape {a.shape}")
    return a


def _texts(vbi: dict | None, key: str) -> list[str] | None:
    if vbi is None:
        return None
    items = _ordered(vbi)
    if not all(isinstance(it, dict) and isinstance(it.get(key), str) for it in items):
        return None
    return [it[key] for it in items]


def _read_openunlearning(p: Path, data: dict[str, Any]) -> EvalLog:
    log = EvalLog(path=p, format="openunlearning")
    for key in SPLITS:
        rouge = _vbi(data, f"{key}_Q_A_ROUGE")
        s = SplitScores(
            nll=_field(_vbi(data, f"{key}_Q_A_Prob"), "avg_loss"),
            nll_para=_field(_vbi(data, f"{key}_Q_A_PARA_Prob"), "avg_loss"),
            nll_pert=_field(_vbi(data, f"{key}_Q_A_PERT_Prob"), "avg_loss", 2),
            rouge=_field(rouge, "rougeL_recall"),
            questions=_texts(rouge, "input"),
            answers=_texts(rouge, "ground_truth"),
            generations=_texts(rouge, "generation"),
        )
        if any(v is not None for v in (s.nll, s.nll_para, s.nll_pert, s.rouge)):
            log.splits[key] = s
    tr = _field(_vbi(data, "forget_truth_ratio"), "score")
    if tr is not None:
        # OpenUnlearning stores p(wrong)/p(paraphrase) = 1/R per item
        log.forget_r = 1.0 / tr
    for name in ATTACKS:
        entry = data.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("agg_value"), (int, float)):
            log.mia_auc[name] = float(entry["agg_value"])
    return log
