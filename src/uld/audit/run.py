"""`uld audit` as a library call: check every input, load the models, run the probes, write
AUDIT.json and AUDIT.md (atomically, only at the end: bad input or a failure writes nothing)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

# Importing the probe modules registers them (each registers itself with `@probe`).
from uld.audit import components, paraphrase, quantize, relearn, sampling  # noqa: F401
from uld.audit.base import (
    PROBES,
    AuditContext,
    AuditMemo,
    AuditSettings,
    Log,
    Measures,
    Subject,
    Variant,
    kind_of,
    measure,
    recovery,
    scorer_for,
    summarize,
)
from uld.audit.report import audit_markdown
from uld.errors import UldError
from uld.io import check_out

RECOVERY_MEASURES = ("prob", "rouge", "leak")


def load_items(data: str, forget: str, max_items: int | None) -> list[dict]:
    """The forget items with their evaluation fields: `{forget}_perturbed` when the source has it."""
    from uld.data.records import load_split

    try:
        rows = load_split(data, f"{forget}_perturbed")
    except UldError:
        rows = load_split(data, forget)
    return rows[:max_items]


def load_retain(data: str, forget: str) -> list[dict]:
    """Retain QA pairs for few-shot prompts and benign relearning (`retain_perturbed`, else the
    complement split retainNN of forgetMM, NN = 100 - MM); empty when there is none."""
    from uld.data.records import load_split

    names = ["retain_perturbed"]
    if forget.startswith("forget") and forget[6:].isdigit():
        names.append(f"retain{100 - int(forget[6:]):02d}")
    for name in names:
        try:
            return load_split(data, name)
        except UldError:
            continue
    return []


def find_target(model_path: str, model) -> str | None:
    """The model before unlearning: the ULD / offset target, or the run's `run.json` "model"."""
    for d in (Path(model_path), Path(model_path).parent):
        run = d / "run.json"
        if run.is_file():
            try:
                return json.loads(run.read_text(encoding="utf-8")).get("model")
            except (OSError, ValueError):
                pass
    kind = kind_of(model)
    if kind == "uld":
        return model.config.target_name_or_path
    if kind == "offset":
        return getattr(model.target, "name_or_path", None) or None
    return None


def is_model_dir(path: str) -> bool:
    from uld.models.loading import MODEL_MARKERS, resolve_model_path

    p = Path(resolve_model_path(path))
    return p.is_dir() and any((p / m).is_file() for m in MODEL_MARKERS)


def run_audit(model: str, data: str, forget: str, out: str | Path, settings: AuditSettings | None = None,
              reference: str | None = None, target: str | None = None, augment_file: str | None = None,
              log: Log = print, memo: AuditMemo | None = None) -> dict[str, Any]:
    """Audit `model` (a run or model directory) on the forget split; returns AUDIT.json's content.

    `memo`, shared across calls, reuses the measures of a model audited before under the same
    settings and data (the target and retain model when several unlearned models are audited)."""
    from uld.data.augment import read_augment_file
    from uld.eval.reference import read_log
    from uld.eval.tofu import check_reference
    from uld.models.loading import load_model, resolve_model_path

    s = settings or AuditSettings()
    out = Path(out)
    check_out(out)
    t_start, cpu_start, hits0 = time.time(), time.process_time(), memo.hits if memo is not None else 0
    # ---------------------------------------------------------------- check every input first
    items = load_items(data, forget, s.max_items)
    retain = load_retain(data, forget)
    augment = {}
    if augment_file:
        for q, (paras, _) in read_augment_file(augment_file).items():
            reworded = [p["question"] for p in paras if " ".join(p["question"].split()).lower() != q]
            augment[q] = reworded
    ref_log, ref_model = None, None
    if reference:
        if is_model_dir(reference):
            ref_model = resolve_model_path(reference)
        else:
            ref_log = read_log(reference)
            check_reference(ref_log, [r["answer"] for r in items], forget)
    model_path = resolve_model_path(model)
    if not is_model_dir(model):
        raise UldError(f"--model {model!r} holds no model (a uld unlearn run or a model directory)")
    if target and not is_model_dir(target) and Path(target).exists():
        raise UldError(f"--target {target!r} holds no model")

    # ---------------------------------------------------------------- load the models
    subjects: dict[str, Subject] = {}
    log(f"audit: loading {model_path}")
    lm, tok = load_model(model_path, device=s.device)
    subjects["unlearned"] = Subject("unlearned", lm, tok, kind_of(lm), model_path)
    target = target or find_target(model_path, lm)
    if not target:
        raise UldError(f"cannot tell which model {model!r} was unlearned from: pass --target")
    log(f"audit: loading the target {target}")
    tm, ttok = load_model(resolve_model_path(target), device=s.device)
    subjects["target"] = Subject("target", tm, ttok, kind_of(tm), target)
    if ref_model:
        log(f"audit: loading the retain model {ref_model}")
        rm, rtok = load_model(ref_model, device=s.device)
        subjects["retain"] = Subject("retain", rm, rtok, kind_of(rm), ref_model)

    ctx = AuditContext(s, forget, items, retain, subjects, augment=augment, log=log, memo=memo,
                       digest=digest(s, items, retain, augment))
    seconds: dict[str, float] = {}
    t0 = time.time()
    qs = [r["question"] for r in items]
    for name, sub in subjects.items():
        log(f"audit: plain questions on {name}")
        ctx.plain[name] = ctx.cached(sub, "plain", lambda sub=sub: measure(scorer_for(sub.model, sub.tokenizer, s), qs, items, s))
    seconds["plain"] = time.time() - t0
    variants: dict[str, list[Variant]] = {}
    for name in s.probes:
        t0 = time.time()
        variants[name] = PROBES[name](ctx)
        seconds[name] = time.time() - t0
    ref_r_log = ref_log.forget_r if ref_log is not None else None
    result = assemble(ctx, variants, ref_r_log, seconds)
    result.update(model=model_path, target=target, reference=reference, data=data,
                  total_seconds=round(time.time() - t_start, 1),
                  cpu_seconds=round(time.process_time() - cpu_start, 1),  # all threads; less load-dependent than wall time
                  reused=memo.hits - hits0 if memo is not None else 0)
    write_audit(out, result)
    log(f"audit: wrote {out / 'AUDIT.json'} and {out / 'AUDIT.md'} in {time.time() - t_start:.0f}s")
    return result


def _reference_r(ctx: AuditContext, variant_results: dict[str, Measures], ref_r_log: np.ndarray | None) -> np.ndarray | None:
    """The retain model's R under the same attack when it is audited too, else the log's plain R."""
    if "retain" in variant_results and variant_results["retain"].r is not None:
        return variant_results["retain"].r
    if "retain" in ctx.plain and ctx.plain["retain"].r is not None:
        return ctx.plain["retain"].r
    return None if ref_r_log is None else np.asarray(ref_r_log, dtype=float)


def assemble(ctx: AuditContext, variants: dict[str, list[Variant]], ref_r_log: np.ndarray | None,
             seconds: dict[str, float]) -> dict[str, Any]:
    """AUDIT.json's content: plain measures, each probe's variants per model, recovery ratios."""
    s = ctx.settings
    plain_out = {}
    for name, m in ctx.plain.items():
        ref = None if name == "retain" else _reference_r(ctx, {}, ref_r_log)
        plain_out[name] = {**summarize(m, None, ref), "per_item": per_item(m, ctx.items)}
    probes_out: dict[str, Any] = {}
    for pname, vs in variants.items():
        pv: dict[str, Any] = {}
        for v in vs:
            entry: dict[str, Any] = {"description": v.description}
            if v.unavailable:
                entry["unavailable"] = v.unavailable
                pv[v.name] = entry
                continue
            ref = _reference_r(ctx, v.results, ref_r_log)
            for sname, m in v.results.items():
                entry[sname] = {**summarize(m, v.idx, None if sname == "retain" else ref),
                                "per_item": per_item(m, ctx.items, v.idx)}
            if "unlearned" in v.results:
                u = summarize(ctx.plain["unlearned"], v.idx)
                t = summarize(ctx.plain["target"], v.idx)
                p = entry["unlearned"]
                entry["recovery"] = {k: recovery(p[k], u[k], t[k]) for k in RECOVERY_MEASURES}
                entry["scale"] = {k: {"unlearned_plain": u[k], "target_plain": t[k]} for k in RECOVERY_MEASURES}
            if v.idx is not None:
                entry["items"] = [int(i) for i in v.idx]
            entry.update({k: val for k, val in v.extra.items() if k not in entry})
            pv[v.name] = entry
        probes_out[pname] = pv
    return {
        "forget": ctx.forget_name,
        "items": len(ctx.items),
        "models": {n: {"path": sub.path, "kind": sub.kind} for n, sub in ctx.subjects.items()},
        "settings": settings_dict(s),
        "recovery_definition": "(probe value - unlearned plain value) / (target plain value - unlearned plain value), "
                               "on the same items; 1 when the two plain values are equal (nothing was removed)",
        "plain": plain_out,
        "probes": probes_out,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def per_item(m: Measures, items: list[dict], idx: np.ndarray | None = None) -> dict[str, dict]:
    rows = range(len(items)) if idx is None else [int(i) for i in idx]
    out = {}
    for i in rows:
        row: dict[str, Any] = {"prob": float(m.prob[i]), "rouge": float(m.rouge[i]), "leak": bool(m.leak[i])}
        if m.r is not None:
            row["truth_ratio_R"] = float(m.r[i])
        gen = m.generations[i]
        row["generation" if isinstance(gen, str) else "samples"] = gen
        out[str(i)] = row
    return out


def digest(s: AuditSettings, items: list[dict], retain: list[dict], augment: dict[str, list[str]]) -> str:
    """A digest of everything besides the model that a probe's result depends on."""
    import hashlib

    blob = json.dumps([settings_dict(s), items, retain, augment], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def settings_dict(s: AuditSettings) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(s)
    d["prompt_format"] = asdict(s.prompt_format)
    d["probes"], d["bits"] = list(s.probes), list(s.bits)
    return d


def write_audit(out: Path, result: dict[str, Any]) -> None:
    from uld.io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "AUDIT.json", result)
    atomic_write_text(out / "AUDIT.md", audit_markdown(result))
