"""The real-model TOFU study behind `uld study tofu`: any target, any TOFU-format data.

Stages, each a directory of the cache written atomically with a `stage.json` marker last, so a
second run reuses every finished stage and a stopped one resumes where it stopped:

1. `data/`: the study's splits cut from the TOFU data: `train` (retain + forget authors, the
   target's fine-tuning set), `retain` (the retain authors), `forget_study` + its perturbed
   version, `retain_perturbed` (the retain authors' rows of TOFU's), `holdout_study` (unseen
   authors), the real-author and world-fact sets, and `augment.jsonl` (ULD's wrong answers).
2. `target/`, `retain_model/`: the given model fully fine-tuned (chat template applied) on
   `train` and on `retain` (the model that never saw the forget authors).
3. `reference/`: the retain model's evaluation, the reference of forget quality.
4. `eval-target/`, then `runs/<method>-<recipe key>-s<seed>/` for each unlearning variant: the
   run and its evaluation (`eval*/`), one per inference setting (ULD's alpha). The recipe key is a
   hash of the variant's method, lr, epochs, batch and overrides, so a recipe changed under the
   same name trains anew instead of reusing the old run (and a renamed one reuses it).
5. With `chosen_seeds` above `seeds`: the chosen setting of ULD and of the best baseline (`choose`:
   the highest forget quality among the rows that keep 95 % of the target's model utility) gets
   further seeds, evaluated at that setting only; their rows become means over the seeds.

`study.json` in the cache records the data/fine-tuning settings; a cache built with other ones is
refused. The variants (methods and their recipes) may change between runs: each has its own stage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.io import check_out
from uld.studies.stages import cached_stage

FORGET_SPLIT = "forget_study"
SOURCE_QA_PER_AUTHOR = 20
"""TOFU's authors each have 20 QA pairs, in order: author i owns rows 20 i .. 20 i + 19 of `full`."""


@dataclass
class StudyConfig:
    """The data and the fine-tuning of target and retain model (the cached part of the study)."""

    retain_authors: int = 4
    """Authors kept (the first ones of TOFU's `full`, whose perturbed rows TOFU ships: at most 20 are
    evaluated, as in TOFU's own retain evaluation)."""
    forget_authors: int = 1
    """Authors to forget: the last ones of `full` (TOFU's forget10 holds the last 20)."""
    qa_per_author: int = 20
    """QA pairs per author used (TOFU: 20)."""
    general_items: int = 40
    """Real-author and world-fact items evaluated (0 = all: 100 and 117)."""
    finetune_epochs: int = 4
    """Full fine-tuning epochs of target and retain model (TOFU: 5)."""
    finetune_lr: float = 1e-4
    """Fine-tuning learning rate (TOFU: 1e-5 at batch 32 on 7B models; a 135M model needs more)."""
    finetune_batch: int = 8
    max_length: int = 192
    eval_max_new_tokens: int = 48
    """Greedy tokens generated per evaluation question (ROUGE); TOFU answers are ~30 tokens."""
    eval_batch: int = 16
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Variant:
    """One unlearning run: a method, its recipe, and the inference settings it is evaluated at."""

    name: str
    method: str
    lr: float | None = None
    epochs: int | None = None
    batch_size: int = 8
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted RunConfig fields, e.g. {"policy.lora_rank": 0, "train.stop_forget_prob": 0.9, "loss.beta": 6.5}."""
    alphas: list[float] = field(default_factory=list)
    """ULD only: evaluate at each assistant weight (empty: the run's own)."""

    def stage_name(self) -> str:
        """The run's cache directory name without the seed: method and recipe key."""
        return f"{self.method}-{self.recipe_key()}"

    def label(self, alpha: float | None) -> str:
        """The row name of this variant evaluated at assistant weight `alpha`."""
        return self.name if alpha is None or len(self.alphas) < 2 else f"{self.name} a={alpha}"

    def recipe_key(self) -> str:
        """12 hex digits of a hash of what the run trains with (method, lr, epochs, batch, overrides;
        not the name nor the inference settings)."""
        import hashlib

        recipe = {"method": self.method, "lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size,
                  "overrides": self.overrides}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


Log = Callable[[str], None]


def _authors(rows: list[dict], first: int, count: int) -> list[dict]:
    return rows[first * SOURCE_QA_PER_AUTHOR:(first + count) * SOURCE_QA_PER_AUTHOR]


def _per_author(rows: list[dict], q: int) -> list[dict]:
    return [r for i, r in enumerate(rows) if i % SOURCE_QA_PER_AUTHOR < q]


def prepare_data(source: str, cfg: StudyConfig, out: Path) -> dict[str, int]:
    """Write the study's splits into `out` (see the module docstring); returns split sizes."""
    import random

    from uld.data.records import load_split
    from uld.io import atomic_write_text

    full = load_split(source, "full")
    n_authors = len(full) // SOURCE_QA_PER_AUTHOR
    if cfg.retain_authors < 1 or cfg.forget_authors < 1:
        raise UldError("the study needs at least one retain author and one forget author")
    if cfg.retain_authors + cfg.forget_authors > n_authors:
        raise UldError(f"{cfg.retain_authors} retain + {cfg.forget_authors} forget authors exceed the {n_authors} in {source}")
    if not 1 <= cfg.qa_per_author <= SOURCE_QA_PER_AUTHOR:
        raise UldError(f"qa_per_author must be in 1..{SOURCE_QA_PER_AUTHOR}, got {cfg.qa_per_author}")
    q = cfg.qa_per_author
    retain = _per_author(_authors(full, 0, cfg.retain_authors), q)
    forget = _per_author(_authors(full, n_authors - cfg.forget_authors, cfg.forget_authors), q)
    # forget10_perturbed / holdout10 hold the last 20 authors / 20 unseen authors, in order.
    pert10 = load_split(source, "forget10_perturbed", required=("question", "answer", "perturbed_answer", "paraphrased_answer"))
    by_q = {r["question"]: r for r in pert10}
    missing = [r["question"] for r in forget if r["question"] not in by_q]
    if missing:
        raise UldError(f"{len(missing)} forget questions have no row in forget10_perturbed (at most 20 forget authors)")
    retain_pert = {r["question"]: r for r in load_split(source, "retain_perturbed")}
    holdout = load_split(source, "holdout10")
    k = cfg.general_items or None
    splits = {
        "train": retain + forget,
        "retain": retain,
        FORGET_SPLIT: forget,
        f"{FORGET_SPLIT}_perturbed": [by_q[r["question"]] for r in forget],
        "retain_perturbed": [retain_pert[r["question"]] for r in retain if r["question"] in retain_pert],
        "holdout_study": _per_author(holdout[-cfg.forget_authors * SOURCE_QA_PER_AUTHOR:], q),
        "real_authors_perturbed": load_split(source, "real_authors_perturbed")[:k],
        "world_facts_perturbed": load_split(source, "world_facts_perturbed")[:k],
    }
    if not splits["retain_perturbed"]:
        raise UldError("no retain author has rows in retain_perturbed (TOFU covers the first 20 authors)")
    for name, rows in splits.items():
        atomic_write_text(out / f"{name}.json", "".join(json.dumps(r) + "\n" for r in rows))
    # ULD's wrong answers for D'_r, free of the evaluation's: other authors' answers (a fixed draw).
    rng = random.Random(cfg.seed)
    pool = [r["answer"] for r in retain]
    aug = [{"question": r["question"], "answer": r["answer"], "paraphrases": [], "distractors": rng.sample(pool, min(2, len(pool)))}
           for r in forget]
    atomic_write_text(out / "augment.jsonl", "".join(json.dumps(r) + "\n" for r in aug))
    return {name: len(rows) for name, rows in splits.items()}


def _stage(path: Path, name: str, body: Callable[[Path], dict], log: Log, seconds: dict[str, float]) -> dict:
    """Run `body(tmp)` into `path` atomically unless `path` is finished; returns its stage record."""
    record, reused = cached_stage(path, name, body, log, "study")
    seconds[name] = 0.0 if reused else record["seconds"]
    return record


def _finetune(model_path: str, data: Path, split: str, cfg: StudyConfig, out: Path, log: Log) -> dict:
    from uld.data.records import load_split
    from uld.models.loading import load_causal_lm, load_tokenizer
    from uld.train.config import make_config
    from uld.train.loop import finetune

    run = make_config(method="sft", seed=cfg.seed, train__epochs=cfg.finetune_epochs, train__lr=cfg.finetune_lr,
                      train__batch_size=cfg.finetune_batch, data__max_length=cfg.max_length)
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path)
    model.train()
    records = load_split(str(data), split)
    log(f"study: fine-tuning on {len(records)} QA of '{split}' for {cfg.finetune_epochs} epochs")
    r = finetune(model, tok, records, run)
    r.module.eval()
    r.module.save_pretrained(out)
    tok.save_pretrained(out)
    return {"split": split, "records": len(records), "history": r.history}


def evaluate_dir(model_dir: Path | str, data: Path, out: Path, cfg: StudyConfig, reference: Path | None,
                 alpha: float | None = None, log: Log = print) -> dict[str, dict]:
    """TOFU metrics of a model (a ULD run evaluated at assistant weight `alpha` when given), through
    `uld eval`'s own entry point and config (the prompt format the run recorded, else the chat template;
    the study's lengths and batch)."""
    from uld.eval.config import EvalConfig
    from uld.eval.run import evaluate_model

    config = EvalConfig(forget=FORGET_SPLIT, batch_size=cfg.eval_batch, max_length=cfg.max_length,
                        max_new_tokens=cfg.eval_max_new_tokens, assistant_weight=alpha)

    def progress(desc: str, total: int) -> Callable[[int], None]:
        log(f"study:   {desc}: {total} items")
        return lambda done: None

    metrics, _ = evaluate_model(model_dir, data, out, config, reference=reference, progress=progress, log=None)
    return metrics


def run_variant(v: Variant, target: Path, data: Path, out: Path, seed: int, cfg: StudyConfig) -> Path:
    """One `uld unlearn` run of variant `v` on the study's forget and retain authors."""
    from uld.train.config import build_config
    from uld.train.run import unlearn

    base: dict[str, Any] = {
        "model": str(target), "method": v.method, "seed": seed,
        "data.source": str(data), "data.forget": FORGET_SPLIT, "data.retain": "retain", "data.max_length": cfg.max_length,
        "train.lr": v.lr, "train.epochs": v.epochs, "train.batch_size": v.batch_size,
    }
    if v.method == "uld":
        base.update({"augment.source": "file", "augment.file": str(data / "augment.jsonl")})
    run = build_config((base, " in the study"), (dict(v.overrides), f" in variant {v.name!r}"))
    return unlearn(run, out)


BASELINES = ("ga", "gd", "npo", "npo_gd", "simnpo", "idkpo", "rmu")
BASELINE_LRS = {m: (2e-5, 5e-5) for m in BASELINES} | {"simnpo": (2e-5, 1e-4), "rmu": (5e-5, 2e-4)}
"""The reported study's learning-rate sweep per baseline (5 epochs, batch 4); `--quick` runs the first."""
ULD_ALPHAS = (0.5, 0.75, 1.0)
"""The reported study's assistant weights (`--quick`: 0.75, the paper's default)."""


def default_variants(quick: bool) -> list[Variant]:
    """The methods and recipes of the study (docs/realmodel.md says how they were chosen).

    Baselines: full-model unlearning at batch 4 for 5 epochs (TOFU / NPO: lr 1e-5, 5 epochs at batch
    32 on 7B models), swept over `BASELINE_LRS` (the first lr alone with `quick`). ULD: the recipe
    that made the truncated assistant learn on SmolLM2-135M (probes in docs/realmodel.md): a
    trainable private copy of the K = L/4 blocks (`lora_rank=0`) at lr 1e-3, a private final norm
    at 0.2x the target's gain (`norm_scale`), the retain term left out while the forget NLL is above
    1 nat (`warmup_forget_nll`), batch 8, 20 epochs or until the assistant's forget-answer
    probability reaches 0.9; evaluated at each of `ULD_ALPHAS`. The full study adds the paper's own
    recipe (LoRA r32, lr 1e-3, batch 32, 10 epochs) as `uld-paper`.
    """
    uld = Variant("uld", "uld", lr=1e-3, epochs=20, batch_size=8,
                  overrides={"policy.lora_rank": 0, "policy.norm_scale": 0.2, "loss.warmup_forget_nll": 1.0,
                             "train.stop_forget_prob": 0.9},
                  alphas=[0.75] if quick else list(ULD_ALPHAS))
    if quick:
        return [uld, *(Variant(m, m, lr=BASELINE_LRS[m][0], epochs=5, batch_size=4) for m in BASELINES)]
    paper = Variant("uld-paper", "uld", lr=1e-3, epochs=10, batch_size=32, alphas=[0.75])
    sweep = [Variant(f"{m} lr={lr:g}", m, lr=lr, epochs=5, batch_size=4) for m in BASELINES for lr in BASELINE_LRS[m]]
    return [uld, paper, *sweep]


KEEP_UTILITY = 0.95
"""`choose`'s bar: the share of the target's model utility a setting must keep to compete on forget quality."""


def choose(rows: dict[str, dict], labels: list[str], target_utility: float | None, keep: float = KEEP_UTILITY) -> str | None:
    """The label among `labels` with the highest forget quality among rows whose model utility is at
    least `keep` x the target's (ties: higher utility); when none keeps it, the highest utility."""
    have = [lb for lb in labels if rows.get(lb, {}).get("forget_quality") is not None
            and rows[lb].get("model_utility") is not None]
    if not have:
        return None
    floor = keep * target_utility if target_utility is not None else float("-inf")
    kept = [lb for lb in have if rows[lb]["model_utility"] >= floor]
    if kept:
        return max(kept, key=lambda lb: (rows[lb]["forget_quality"], rows[lb]["model_utility"]))
    return max(have, key=lambda lb: rows[lb]["model_utility"])


def quick_config() -> StudyConfig:
    """`--quick`: 2 retain authors + 1 forget author, 10 QA each, 10 real-author and 10 world-fact
    items; fine-tuning at batch 4 for 4 epochs (30 optimizer steps on the target's 30 QA)."""
    return StudyConfig(retain_authors=2, forget_authors=1, qa_per_author=10, general_items=10, finetune_epochs=4,
                       finetune_batch=4, eval_max_new_tokens=40)


def reported_config() -> StudyConfig:
    """The reported study (no `--quick`): 3 retain authors + 1 forget author, 10 QA each, 20
    real-author and 20 world-fact items, fine-tuning at batch 4 for 4 epochs; with the sweep and
    3 seeds of the chosen settings it fits about 2 hours on a 2-core CPU."""
    return StudyConfig(retain_authors=3, forget_authors=1, qa_per_author=10, general_items=20, finetune_epochs=4,
                       finetune_batch=4, eval_max_new_tokens=40)


def _check_settings(cache: Path, wanted: dict[str, Any]) -> None:
    from uld.io import atomic_write_json

    path = cache / "study.json"
    wanted = json.loads(json.dumps(wanted))
    if path.is_file():
        if json.loads(path.read_text(encoding="utf-8")) != wanted:
            raise UldError(f"the cache {cache} was built with another model, data or size; choose another --cache or delete it")
    else:
        atomic_write_json(path, wanted)


def run_study(model: str, data: str, out: Path, cache: Path, cfg: StudyConfig, variants: list[Variant],
              seeds: int = 1, log: Log = print, chosen_seeds: int = 1) -> dict[str, Any]:
    """The whole study; returns results.json's content (also written to `out` with REPORT.md and the plot)."""
    from uld.data.records import load_split
    from uld.io import atomic_write_json, atomic_write_text
    from uld.models.gguf import resolve_gguf
    from uld.studies.demo import average, spread
    from uld.studies.tofu_report import plot, report_markdown, summary

    if seeds < 1 or chosen_seeds < 1:
        raise UldError(f"--seeds and --chosen-seeds must be at least 1, got {seeds} and {chosen_seeds}")
    check_out(out)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UldError(f"variant names must be unique, got {names}")
    load_split(data, "full")  # a clear error for bad data before anything is built
    t_start = time.time()
    model = resolve_gguf(model, log=log)
    cache.mkdir(parents=True, exist_ok=True)
    _check_settings(cache, {"model": str(Path(model).resolve()) if Path(model).exists() else model,
                            "data": str(Path(data).resolve()) if Path(data).exists() else data, "study": cfg.to_dict()})
    seconds: dict[str, float] = {}
    spreads: dict[str, dict] = {}
    d, target, retain, ref = cache / "data", cache / "target", cache / "retain_model", cache / "reference"
    sizes = _stage(d, "data", lambda tmp: {"splits": prepare_data(data, cfg, tmp)}, log, seconds)["splits"]
    _stage(target, "target", lambda tmp: _finetune(model, d, "train", cfg, tmp, log), log, seconds)
    _stage(retain, "retain", lambda tmp: _finetune(model, d, "retain", cfg, tmp, log), log, seconds)
    _stage(ref, "reference", lambda tmp: {"n": len(evaluate_dir(retain, d, tmp, cfg, None, log=log))}, log, seconds)
    rows: dict[str, dict] = {}
    per_seed: dict[str, list[dict]] = {}

    def evaluated(path: Path, name: str, model_dir: Path, alpha: float | None) -> dict[str, dict]:
        _stage(path, name, lambda tmp: {"n": len(evaluate_dir(model_dir, d, tmp, cfg, ref, alpha, log))}, log, seconds)
        return json.loads((path / "TOFU_EVAL.json").read_text(encoding="utf-8"))

    def run_seed(v: Variant, seed: int, alphas: list[float | None]) -> None:
        stage_dir = cache / "runs" / f"{v.stage_name()}-s{seed}"
        info = _stage(stage_dir / "run", f"{v.name} seed {seed}",
                      lambda tmp: _run_info(run_variant(v, target, d, tmp / "model", seed, cfg)), log, seconds)
        for alpha in alphas:
            tag = "eval" if alpha is None else f"eval-a{alpha}"
            m = evaluated(stage_dir / tag, f"eval {v.label(alpha)} seed {seed}", stage_dir / "run" / "model", alpha)
            per_seed.setdefault(v.label(alpha), []).append(summary(m, info["seconds"], info.get("final")))

    rows["target"] = summary(evaluated(cache / "eval-target", "eval target", target, None), None)
    # The reference itself: its truth ratios against themselves, KS p-value 1 by definition.
    rows["retain"] = {**summary(json.loads((ref / "TOFU_EVAL.json").read_text(encoding="utf-8")), None),
                      "forget_quality": 1.0, "log10_forget_quality": 0.0}
    for v in variants:
        for seed in range(seeds):
            run_seed(v, seed, v.alphas or [None])
    chosen: dict[str, str] = {}
    if chosen_seeds > seeds:
        so_far = {label: average(r) for label, r in per_seed.items()}
        settings_of = {v.label(a): (v, a) for v in variants for a in v.alphas or [None]}
        for kind, is_uld in (("uld", True), ("baseline", False)):
            labels = [lb for lb, (v, _) in settings_of.items() if (v.method == "uld") == is_uld]
            best = choose(so_far, labels, rows["target"].get("model_utility"))
            if best is None:
                continue
            chosen[kind] = best
            v, alpha = settings_of[best]
            log(f"study: chosen {kind} setting {best!r}: {chosen_seeds} seeds")
            for seed in range(seeds, chosen_seeds):
                run_seed(v, seed, [alpha])
    for label, r in per_seed.items():
        rows[label] = average(r)
        if len(r) > 1:
            spreads[label] = spread(r)
    total = time.time() - t_start
    settings = {"model": model, "data": data, "study": cfg.to_dict(), "split_sizes": sizes,
                "variants": [asdict(v) for v in variants], "seeds": seeds, "chosen_seeds": chosen_seeds,
                "keep_utility": KEEP_UTILITY}
    result = {"results": rows, "per_seed": per_seed, "spread": spreads, "chosen": chosen, "settings": settings,
              "stage_seconds": seconds, "total_seconds": round(total, 1)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "REPORT.md", report_markdown(result))
    plot(rows, out / "fq_vs_utility.png", title=f"uld study tofu: {Path(model).name}")
    log(f"study: wrote {out / 'results.json'}, {out / 'REPORT.md'} and {out / 'fq_vs_utility.png'} in {total:.0f}s")
    return result


def _run_info(run_dir: Path) -> dict[str, Any]:
    """What the report keeps from a run: epochs, steps, why it stopped, its last epoch line."""
    r = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    epochs = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
        epochs = [x for x in lines if x.get("type") == "epoch"]
    return {"status": r.get("status"), "epochs_done": r.get("epochs_done"), "steps": r.get("steps"),
            "reason": r.get("reason"), "final": epochs[-1] if epochs else None}
