"""The miniature TOFU study, cached: world -> tokenizer -> base -> target / retain -> reference log.

Stages (each a directory of the cache, written atomically with a `stage.json` marker, so a
second run reuses every finished stage and an interrupted one leaves nothing half-written):

1. `data/`: the synthetic world (`uld.world.write_world`).
2. `tokenizer/`: a byte-level BPE tokenizer trained on every text of the world.
3. `base/`: a tiny Llama pretrained on the `general` split (the world's "real" knowledge).
4. `target/`: the base fine-tuned on `full` (+ `general` mixed in, so it keeps it).
5. `retain/`: the base fine-tuned on `retain90` (+ `general`): the model that never saw forget10.
   Both fine-tunes also see the training paraphrases of their own authors (`finetune_paraphrases`).
6. `reference/`: `uld eval` of the retain model (TOFU_EVAL.json), the reference for forget quality.

`pipeline.json` records the settings; a cache built with other settings is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.io import atomic_write_json
from uld.studies.stages import STAGE_FILE, cached_stage
from uld.world import WorldConfig, write_world

DEFAULT_CACHE = ".uld-cache/mini"
SETTINGS_FILE = "pipeline.json"


@dataclass
class ModelConfig:
    """The tiny Llama (defaults: 1.3M parameters)."""

    hidden: int = 128
    layers: int = 4
    intermediate: int = 384
    heads: int = 4
    vocab: int = 2048


@dataclass
class PipelineConfig:
    """Every setting of the cached pipeline; the defaults are the `uld demo` miniature."""

    world: WorldConfig = field(default_factory=lambda: WorldConfig(num_authors=40, qa_per_author=10))
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain_epochs: int = 30
    pretrain_lr: float = 3e-3
    finetune_epochs: int = 16
    finetune_lr: float = 2e-3
    batch_size: int = 32
    max_length: int = 128
    eval_max_new_tokens: int = 64
    seed: int = 0
    finetune_paraphrases: bool = True
    """Also fine-tune target and retain model on `full_paraphrased` (the training paraphrases of
    their own authors, never the evaluation's), so they learn facts, not one wording of each."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pipeline:
    """Paths of a finished pipeline, and each stage's seconds (0 when reused)."""

    cache: Path
    data: Path
    tokenizer: Path
    base: Path
    target: Path
    retain: Path
    reference: Path
    seconds: dict[str, float]
    reused: dict[str, bool]


Log = Callable[[str], None]


def _run_config(cfg: PipelineConfig, epochs: int, lr: float):
    from uld.train.config import make_config

    return make_config(method="sft", seed=cfg.seed, train__epochs=epochs, train__lr=lr,
                       train__batch_size=cfg.batch_size, data__max_length=cfg.max_length)


def _save_model(model, tokenizer, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _check_settings(cache: Path, cfg: PipelineConfig) -> None:
    path = cache / SETTINGS_FILE
    wanted = json.loads(json.dumps(cfg.to_dict()))
    if path.is_file():
        have = json.loads(path.read_text(encoding="utf-8"))
        if have != wanted:
            raise UldError(f"the cache {cache} was built with other settings; choose another --cache or delete it")
    else:
        atomic_write_json(path, wanted)


def build_pipeline(cache: str | Path = DEFAULT_CACHE, cfg: PipelineConfig | None = None, log: Log = print,
                   device: str | None = None) -> Pipeline:
    """Run (or reuse) every stage in `cache`; returns the paths. Deterministic in `cfg`."""
    import torch

    from uld.data.records import load_split
    from uld.data.tokenizer import train_bpe_tokenizer
    from uld.models.loading import load_causal_lm, load_tokenizer
    from uld.models.miniature import miniature_llama
    from uld.train.loop import finetune

    cfg = cfg or PipelineConfig()
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    _check_settings(cache, cfg)
    p = Pipeline(cache, cache / "data", cache / "tokenizer", cache / "base", cache / "target", cache / "retain",
                 cache / "reference", {}, {})

    def stage(name: str, path: Path, body: Callable[[Path], dict]) -> None:
        record, reused = cached_stage(path, name, body, log, "pipeline")
        p.reused[name], p.seconds[name] = reused, 0.0 if reused else record["seconds"]

    def data(tmp: Path) -> dict:
        write_world(tmp / "w", cfg.world)
        for f in (tmp / "w").iterdir():
            f.rename(tmp / f.name)
        (tmp / "w").rmdir()
        return {}

    stage("world", p.data, data)

    def tok(tmp: Path) -> dict:
        texts = []
        for f in sorted(p.data.glob("*.json*")):
            if f.name in ("world.json", STAGE_FILE):
                continue
            for line in f.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                texts += [v for v in r.values() if isinstance(v, str)]
                texts += [x for v in r.values() if isinstance(v, list) for x in v if isinstance(x, str)]
        train_bpe_tokenizer(texts, cfg.model.vocab).save_pretrained(tmp)
        return {"texts": len(texts)}

    stage("tokenizer", p.tokenizer, tok)
    general = load_split(str(p.data), "general")

    def base(tmp: Path) -> dict:
        tokenizer = load_tokenizer(str(p.tokenizer))
        m = cfg.model
        torch.manual_seed(cfg.seed)
        model = miniature_llama(tokenizer, m.hidden, m.layers, m.intermediate, m.heads, max(256, cfg.max_length))
        r = finetune(model, tokenizer, general, _run_config(cfg, cfg.pretrain_epochs, cfg.pretrain_lr))
        _save_model(r.module, tokenizer, tmp)
        return {"params": sum(x.numel() for x in model.parameters()), "history": r.history[-1:]}

    stage("base", p.base, base)

    def tuned(split: str) -> Callable[[Path], dict]:
        def body(tmp: Path) -> dict:
            tokenizer = load_tokenizer(str(p.base))
            model = load_causal_lm(str(p.base))
            records = load_split(str(p.data), split)
            if cfg.finetune_paraphrases:
                questions = {r["question"] for r in records}
                records += [r for r in load_split(str(p.data), "full_paraphrased") if r["question"] in questions]
            records += general
            r = finetune(model, tokenizer, records, _run_config(cfg, cfg.finetune_epochs, cfg.finetune_lr))
            _save_model(r.module, tokenizer, tmp)
            return {"split": split, "records": len(records), "history": r.history[-1:]}
        return body

    stage("target", p.target, tuned("full"))
    stage("retain", p.retain, tuned("retain90"))

    def reference(tmp: Path) -> dict:
        evaluate_model(p.retain, p.data, tmp, reference=None, device=device, max_new_tokens=cfg.eval_max_new_tokens)
        return {}

    stage("reference", p.reference, reference)
    return p


def evaluate_model(model_dir: str | Path, data: str | Path, out: str | Path, reference: str | Path | None = None,
                   forget: str = "forget10", device: str | None = None, batch_size: int = 16,
                   max_new_tokens: int = 64) -> dict[str, Any]:
    """`uld eval` of a pipeline model (the same code, `uld.eval.run.evaluate_model`), with the
    miniature's settings: 64 new tokens (its answers are shorter) and batch 16 (values do not
    depend on the batch size). Writes the result files into `out`; returns the full metrics."""
    from uld.eval.config import EvalConfig
    from uld.eval.run import evaluate_model as run_eval

    config = EvalConfig(forget=forget, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens, max_length=256)
    metrics, _ = run_eval(model_dir, data, out, config, reference=reference)
    return metrics
