"""The miniature copyrighted-text study: MUSE's table and the ULD paper's Table 3 columns.

Stages (cached in `cache/`, each written atomically with a `stage.json` marker and reused):

1. `data/`: the synthetic books (`uld.world.books.write_books`) in MUSE's layout, plus
   `train/`: the training splits as records (`forget` = forget chapters + their facts as QA
   documents in other words than KnowMem's, `retain` likewise, `forget_augmented` = forget + the
   paraphrased chapters, `general` = the world's general-knowledge sentences).
2. `tokenizer/`: a byte-level BPE trained on the training texts.
3. `target/`: a tiny Llama trained from scratch on forget + retain chapters + general sentences
   until it memorises them; `retain/`: the same recipe without the forget chapters (MUSE's
   retrained model).
4. `eval-retain/`: the retain model's MUSE_EVAL.json, PrivLeak's reference AUC.

Then each method unlearns the forget chapters from the target (`uld.train.run.unlearn`, one run
per seed) and every model is evaluated with `uld.eval.muse` and `uld.eval.copyright`. A chapter
is a record with an empty question and the chapter as its answer under the template
"{question}", so training sees BOS + chapter + EOS: the sequence the evaluation scores.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.eval.muse import knowmem_prompt
from uld.io import atomic_write_json, atomic_write_text, check_out
from uld.studies.stages import cached_stage
from uld.world.books import BooksConfig, write_books

METHODS = ("uld", "ga", "gd", "npo", "npo_gd", "simnpo", "rmu")
Log = Callable[[str], None]


@dataclass
class MuseStudyConfig:
    """Every setting of the study; the defaults are the miniature (minutes on 2 CPU cores)."""

    books: BooksConfig = field(default_factory=BooksConfig)
    hidden: int = 128
    layers: int = 4
    intermediate: int = 384
    heads: int = 4
    vocab: int = 2048
    train_epochs: int = 40
    """Epochs for the target and the retain model (enough for the target to memorise the chapters)."""
    train_lr: float = 3e-3
    batch_size: int = 16
    max_length: int = 192
    verbmem_max_new_tokens: int = 32
    """VerbMem generation length and reference cut (MUSE: 128; the miniature's continuations are ~35 tokens)."""
    knowmem_max_new_tokens: int = 16
    prefix_tokens: int = 32
    """Copyright protocol prompt length (paper: 200 of 512-token chunks; chapters here are ~100 tokens)."""
    chunk_tokens: int = 96
    completion_tokens: int = 48
    seed: int = 0
    uld_weights: tuple[float, ...] = (0.75, 1.5)
    """ULD is evaluated at each assistant weight α (the first, the paper's 0.75, is the reference row)."""
    recipes: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "uld": {"lr": 3e-3, "epochs": 40, "batch_size": 4, "stop_forget_prob": 0.9, "num_layers": 2, "lora_rank": 0},
        **{m: {"lr": 2e-4, "epochs": 10, "batch_size": 4} for m in ("ga", "gd", "npo", "npo_gd", "simnpo")},
        # RMU's layers scaled to 4 blocks (paper: steer block 7 of 32, update blocks 5-7).
        "rmu": {"lr": 2e-4, "epochs": 10, "batch_size": 4, "loss": {"layer": 2, "update_layers": [0, 1, 2]}},
    })

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _records(texts: list[str]) -> list[dict[str, str]]:
    return [{"question": "", "answer": t} for t in texts]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _general_sentences(seed: int) -> list[str]:
    from uld.world import WorldConfig, generate_world

    world = generate_world(WorldConfig(seed=seed))
    # The sentences behind the multiple-choice tasks (capitals, languages): the general knowledge
    # whose retention the accuracy column measures.
    return [r["answer"] for r in world.splits["general"] if r["answer"].startswith(("The capital of ", "People in "))]


def _data_options(cfg: MuseStudyConfig) -> dict[str, Any]:
    # Raw text: the question is the whole prompt, with no template, prefix or chat template.
    return {"data__template": "{question}", "data__answer_prefix": "", "data__use_chat_template": False,
            "data__max_length": cfg.max_length}


def _stage(path: Path, name: str, body: Callable[[Path], dict], log: Log) -> float:
    record, reused = cached_stage(path, name, body, log, "muse study")
    return 0.0 if reused else record["seconds"]


def build_models(cache: Path, cfg: MuseStudyConfig, log: Log = print) -> dict[str, float]:
    """Stages 1-4 (see the module docstring); returns each stage's seconds (0 when reused)."""
    import torch

    from uld.data.tokenizer import train_bpe_tokenizer
    from uld.models.loading import load_tokenizer
    from uld.models.miniature import miniature_llama
    from uld.train.config import make_config
    from uld.train.loop import finetune

    cache.mkdir(parents=True, exist_ok=True)
    settings = cache / "study.json"
    wanted = json.loads(json.dumps(cfg.to_dict()))
    wanted.pop("recipes")
    if settings.is_file() and json.loads(settings.read_text(encoding="utf-8")) != wanted:
        raise UldError(f"the cache {cache} was built with other settings; choose another --cache or delete it")
    atomic_write_json(settings, wanted)
    secs: dict[str, float] = {}
    data = cache / "data"

    def make_data(tmp: Path) -> dict:
        write_books(tmp / "books", cfg.books)
        b = tmp / "books"
        read = lambda rel: json.loads((b / rel).read_text(encoding="utf-8"))  # noqa: E731
        # QA documents: the prompt "Question: q\nAnswer: " and the answer are tokenised apart (as
        # KnowMem's prompt is: a byte-level BPE keeps the trailing space as its own token there).
        qa = {k: [{"question": knowmem_prompt(q["question"]), "answer": q["answer"]} for q in read(f"train_qa/{k}.json")]
              for k in ("forget", "retain")}
        forget = _records(read("raw/forget.json")) + qa["forget"]
        retain = _records(read("raw/retain1.json") + read("raw/retain2.json")) + qa["retain"]
        _write_jsonl(tmp / "train" / "forget.jsonl", forget)
        _write_jsonl(tmp / "train" / "retain.jsonl", retain)
        _write_jsonl(tmp / "train" / "forget_augmented.jsonl", forget + _records(read("augment/forget_paraphrased.json")))
        _write_jsonl(tmp / "train" / "general.jsonl", _records(_general_sentences(cfg.books.seed)))
        return {"forget_docs": len(forget), "retain_docs": len(retain)}

    secs["data"] = _stage(data, "data", make_data, log)
    train = data / "train"

    def rows(split: str) -> list[dict[str, str]]:
        return [json.loads(x) for x in (train / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]

    def texts(split: str) -> list[str]:
        return [r["question"] + r["answer"] for r in rows(split)]

    def make_tok(tmp: Path) -> dict:
        # Every text the evaluation reads too (holdout chapters, held-out prose): a tokenizer that
        # never saw the holdout books would split them into rarer pieces and bias the Min-K% AUC.
        books = data / "books"
        extra = [t for rel in ("raw/holdout.json", "copyright/ppl.json") for t in json.loads((books / rel).read_text(encoding="utf-8"))]
        all_texts = texts("forget") + texts("retain") + texts("general") + texts("forget_augmented") + extra
        train_bpe_tokenizer(all_texts, cfg.vocab).save_pretrained(tmp)
        return {}

    secs["tokenizer"] = _stage(cache / "tokenizer", "tokenizer", make_tok, log)

    def trained(splits: tuple[str, ...]) -> Callable[[Path], dict]:
        def body(tmp: Path) -> dict:
            tok = load_tokenizer(str(cache / "tokenizer"))
            torch.manual_seed(cfg.seed)
            model = miniature_llama(tok, cfg.hidden, cfg.layers, cfg.intermediate, cfg.heads, max(256, cfg.max_length))
            run = make_config(method="sft", seed=cfg.seed, train__epochs=cfg.train_epochs, train__lr=cfg.train_lr,
                              train__batch_size=cfg.batch_size, **_data_options(cfg))
            records = [r for s in splits for r in rows(s)]
            r = finetune(model, tok, records, run)
            r.module.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            return {"records": len(records), "params": sum(p.numel() for p in model.parameters()), "history": r.history[-1:]}
        return body

    secs["target"] = _stage(cache / "target", "target", trained(("forget", "retain", "general")), log)
    secs["retain"] = _stage(cache / "retain", "retain", trained(("retain", "general")), log)

    def ref(tmp: Path) -> dict:
        evaluate_text_model(cache / "retain", data / "books", tmp, None, cfg)
        return {}

    secs["eval-retain"] = _stage(cache / "eval-retain", "retain model's MUSE log", ref, log)
    return secs


def evaluate_text_model(model_dir: Path, books: Path, out: Path, reference: Path | None, cfg: MuseStudyConfig,
                        batch_size: int = 16, assistant_weight: float | None = None) -> dict[str, float]:
    """MUSE + copyright evaluation of one model directory into `out` (a ULD model at
    `assistant_weight` when given); returns both summaries."""
    from uld.eval.copyright import (
        CopyrightConfig,
        evaluate_copyright,
        load_copyright_data,
        write_copyright_results,
    )
    from uld.eval.muse import (
        MuseConfig,
        evaluate_muse,
        load_muse_data,
        read_muse_log,
        write_muse_results,
    )
    from uld.eval.textlm import HFTextLM
    from uld.models.loading import load_model

    lm_model, tok = load_model(str(model_dir), device="cpu")
    if assistant_weight is not None:
        setattr(lm_model, "assistant_weight" if hasattr(lm_model, "assistant_weight") else "alpha", assistant_weight)
    lm = HFTextLM(lm_model, tok, batch_size=batch_size, max_length=cfg.max_length)
    ref = read_muse_log(reference) if reference else None
    m = evaluate_muse(lm, load_muse_data(books), ref, MuseConfig(cfg.verbmem_max_new_tokens, cfg.knowmem_max_new_tokens))
    s = write_muse_results(out, m)
    c = evaluate_copyright(lm, load_copyright_data(books),
                           CopyrightConfig(cfg.prefix_tokens, cfg.chunk_tokens, cfg.completion_tokens, None))
    s.update(write_copyright_results(out, c))
    return s


def unlearn_books(method: str, recipe: dict[str, Any], cache: Path, out: Path, seed: int, cfg: MuseStudyConfig) -> Path:
    """One `uld unlearn` run of the forget chapters from the target."""
    from uld.train.config import make_config
    from uld.train.run import unlearn

    options: dict[str, Any] = {
        "data__source": str(cache / "data" / "train"), "data__forget": "forget", "data__retain": "retain",
        **_data_options(cfg),
        "train__lr": recipe["lr"], "train__epochs": recipe["epochs"], "train__batch_size": recipe["batch_size"],
        "train__stop_forget_prob": recipe.get("stop_forget_prob"), "loss": dict(recipe.get("loss", {})),
    }
    if method == "uld":
        # ULD's augmentation for text: D'_f = forget chapters + their paraphrased retellings.
        options.update(data__forget="forget_augmented", augment__source="none",
                       policy__num_layers=recipe["num_layers"], policy__lora_rank=recipe["lora_rank"])
    return unlearn(make_config(model=str(cache / "target"), method=method, seed=seed, **options), out)


COLUMNS = (
    ("forget_verbmem_ROUGE", "VerbMem forget ↓"), ("forget_knowmem_ROUGE", "KnowMem forget ↓"),
    ("retain_knowmem_ROUGE", "KnowMem retain ↑"), ("privleak", "PrivLeak →0"),
    ("copyright_BLEU", "BLEU ↓"), ("copyright_ROUGE_L", "ROUGE-L ↓"), ("heldout_word_perplexity", "PPL ↓"),
    ("mc_mean_acc", "Acc ↑"), ("train_seconds", "train s"),
)


def _mean(rows: list[dict[str, float]]) -> dict[str, float | None]:
    keys = {k for r in rows for k in r}
    return {k: (statistics.fmean([r[k] for r in rows]) if all(r.get(k) is not None for r in rows) else None) for k in keys}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def report_markdown(results: dict[str, dict], spread: dict[str, dict], seeds: int, total: float, cfg: MuseStudyConfig) -> str:
    head = "| model | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = ["# uld study muse: the miniature copyrighted-text study", "",
             f"Means over {seeds} unlearning seed(s); ± = standard deviation over seeds.", "", head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, r in results.items():
        cells = []
        for k, _ in COLUMNS:
            sd = spread.get(name, {}).get(k)
            cells.append(_fmt(r.get(k)) + (f" ± {_fmt(sd)}" if sd is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    b = cfg.books
    lines += ["", "## Settings", "",
              f"- Books: {b.forget_books} forget, {b.retain_books} retain, {b.holdout_books} holdout, {b.chapters} chapters each (seed {b.seed}).",
              f"- Model: Llama hidden {cfg.hidden}, {cfg.layers} layers, vocab {cfg.vocab}; target and retain model trained from scratch "
              f"{cfg.train_epochs} epochs, lr {cfg.train_lr}.",
              f"- VerbMem {cfg.verbmem_max_new_tokens} new tokens, KnowMem {cfg.knowmem_max_new_tokens}; copyright prefix {cfg.prefix_tokens} "
              f"tokens of {cfg.chunk_tokens}-token chunks, {cfg.completion_tokens} new tokens.",
              *(f"- {m}: " + ", ".join(f"{k} {v}" for k, v in r.items()) for m, r in cfg.recipes.items()),
              f"- Total wall time: {total:.0f} s.", ""]
    return "\n".join(lines)


def run_muse_study(out: Path, cache: Path, seeds: int = 1, methods: tuple[str, ...] = METHODS,
                   cfg: MuseStudyConfig | None = None, log: Log = print, reference_rows: bool = True,
                   first_seed: int = 0) -> dict[str, dict]:
    """Build (or reuse) the models, unlearn with every method and seed, evaluate, write
    `results.json` and `REPORT.md` into `out`; returns the mean row per model (`reference_rows`:
    also evaluate the target and the retain model, the table's first two rows; `first_seed`: the
    seeds are first_seed, first_seed + 1, ..., so that several processes can share the work)."""
    import shutil
    import tempfile

    if seeds < 1:
        raise UldError(f"--seeds must be at least 1, got {seeds}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UldError(f"unknown method {unknown[0]!r} for the muse study; available: {', '.join(METHODS)}")
    check_out(out)
    cfg = cfg or MuseStudyConfig()
    t0 = time.time()
    stage_secs = build_models(cache, cfg, log)
    books, ref = cache / "data" / "books", cache / "eval-retain"
    work = Path(tempfile.mkdtemp(prefix=".muse-study-", dir=cache))
    results: dict[str, dict] = {}
    spread: dict[str, dict] = {}
    per_seed: dict[str, list[dict]] = {}
    try:
        for name in ("target", "retain") if reference_rows else ():
            log(f"muse study: evaluating {name}")
            results[name] = evaluate_text_model(cache / name, books, work / f"eval-{name}", ref, cfg)
        for method in methods:
            weights = cfg.uld_weights if method == "uld" else (None,)
            names = [method if i == 0 else f"{method} α={w}" for i, w in enumerate(weights)]
            for name in names:
                per_seed[name] = []
            for seed in range(first_seed, first_seed + seeds):
                log(f"muse study: {method} seed {seed}")
                t = time.time()
                run = unlearn_books(method, cfg.recipes[method], cache, work / f"{method}-{seed}", seed, cfg)
                secs = time.time() - t
                for name, w in zip(names, weights, strict=True):
                    row = evaluate_text_model(run, books, work / f"eval-{name}-{seed}", ref, cfg, assistant_weight=w)
                    per_seed[name].append({**row, "train_seconds": secs})
            for name in names:
                rows = per_seed[name]
                results[name] = _mean(rows)
                if seeds > 1:
                    spread[name] = {k: statistics.stdev([r[k] for r in rows]) for k in rows[0] if all(k in r for r in rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {"results": results, "per_seed": per_seed, "std": spread, "seeds": seeds,
                                             "settings": cfg.to_dict(), "stage_seconds": stage_secs, "total_seconds": round(total, 1)})
    atomic_write_text(out / "REPORT.md", report_markdown(results, spread, seeds, total, cfg))
    return results
