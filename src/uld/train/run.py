"""`uld unlearn` as a library call: check every input, then create the run dir, train, save.

Nothing is written before the inputs are checked (config, method and its options, splits,
records, model), so bad input leaves no run directory. A run directory holds:

    run.json          what ran: command, config, data and augmentation report, world size, status
    config.yaml       the resolved config (`--resume` reads it back)
    metrics.jsonl     one line per logged step and per epoch
    logs/             samples-rank{r}.jsonl: the item ids each process trained on
    checkpoints/      the last epoch checkpoint(s), removed when the run finishes
    + the model       ULD: uld_config.json + adapter (ULDForCausalLM.from_pretrained, uld generate);
                      full: config.json + weights (AutoModelForCausalLM); lora: a peft adapter;
                      offset: offset_config.json (uld.models.loading.load_model); + the tokenizer
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from uld.errors import UldError, unknown_choice
from uld.io import atomic_write_json, atomic_write_text
from uld.train.config import RunConfig, apply_overrides, from_dict, to_yaml

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"


def resume_config(out: Path, overrides: dict[str, Any], flags: dict[str, Any]) -> RunConfig:
    """The saved config of the run in `out`, with `--set` overrides; flags must match it."""
    import yaml

    if not (out / CONFIG_FILE).is_file() or not (out / RUN_FILE).is_file():
        raise UldError(f"cannot resume: {out} holds no run (no {CONFIG_FILE} / {RUN_FILE})")
    saved = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8"))
    for key, value in flags.items():
        have = saved["data"][key.split(".")[1]] if key.startswith("data.") else saved[key]
        if value is not None and value != have:
            raise UldError(f"cannot resume with {key}={value!r}: the run in {out} used {have!r}")
    return from_dict(apply_overrides(saved, overrides, " in --set"))


def unlearn(cfg: RunConfig, out: str | Path, resume: bool = False, command: list[str] | None = None) -> Path:
    """Run one unlearning job into `out`; returns the run directory."""
    import torch

    from uld.data.collate import encode_records
    from uld.data.prompts import PromptFormat
    from uld.data.records import load_split
    from uld.methods.base import available_methods, get_method
    from uld.models.gguf import resolve_gguf
    from uld.models.loading import load_causal_lm, load_tokenizer
    from uld.train.loop import TrainData, TrainingDiverged, make_accelerator, train
    from uld.train.policy import build_policy

    out = Path(out)
    # ---------------------------------------------------------------- check every input
    spec = get_method(cfg.method)
    if not spec.listed:
        raise unknown_choice("method", cfg.method, available_methods())
    cfg.resolve()
    if not cfg.model:
        raise UldError("no model given: pass --model PATH_OR_HUB_ID")
    if not cfg.data.source:
        raise UldError("no data given: pass --data DIR_OR_HUB_ID")
    run_info = _read_run(out) if resume else None
    if resume and run_info.get("status") == "finished":
        raise UldError(f"the run in {out} has already finished; choose another --out to train again")
    if not resume and out.exists() and any(out.iterdir()):
        raise UldError(f"{out} already exists and is not empty; pass --resume to continue that run or choose another --out")
    acc = make_accelerator(cfg)
    acc.wait_for_everyone()  # every rank has checked `out` before rank 0 creates it

    forget = load_split(cfg.data.source, cfg.data.forget)
    needs_retain = "retain" in spec.needs
    if needs_retain and not cfg.data.retain:
        raise UldError(f"method {cfg.method!r} needs a retain split: pass --retain")
    retain = load_split(cfg.data.source, cfg.data.retain) if needs_retain else []

    model_path = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    model_path = resolve_gguf(model_path, log=lambda s: print(s, file=sys.stderr))  # a .gguf file: its converted dir
    if Path(model_path).exists() and not (Path(model_path) / "config.json").is_file():
        raise UldError(f"--model {cfg.model!r} holds no transformers model (no config.json)")
    cfg.model = model_path
    tokenizer = load_tokenizer(model_path)
    fmt = PromptFormat(cfg.data.template, cfg.data.answer_prefix, cfg.data.use_chat_template)

    train_forget, train_retain, alt, augmentation = forget, retain, None, None
    if spec.prepare_data is not None:  # the method's augmentation / alternative answers
        train_forget, train_retain, alt, augmentation = spec.prepare_data(forget, retain, cfg)
    enc = {
        "forget": encode_records(tokenizer, train_forget, fmt, cfg.data.max_length),
        "retain": encode_records(tokenizer, train_retain, fmt, cfg.data.max_length) if train_retain else None,
        "forget_eval": encode_records(tokenizer, forget, fmt, cfg.data.max_length),
    }
    if alt is not None:
        enc["alt"] = encode_records(tokenizer, alt, fmt, cfg.data.max_length)
    truncated = {k: v.truncated for k, v in enc.items() if v is not None}
    if any(truncated.values()) and acc.is_main_process:
        print(f"warning: answers cut to data.max_length={cfg.data.max_length} tokens: {truncated}", file=sys.stderr)
    target = load_causal_lm(model_path)

    # ---------------------------------------------------------------- the run directory
    info = run_info or {
        "command": command,
        "method": cfg.method,
        "policy": cfg.policy.kind,
        "model": model_path,
        "data": {"source": cfg.data.source, "forget": cfg.data.forget, "retain": cfg.data.retain,
                 "forget_items": len(forget), "retain_items": len(retain),
                 "train_forget_items": len(enc["forget"]),
                 "train_retain_items": len(enc["retain"]) if enc["retain"] else 0,
                 "truncated": truncated},
        "augmentation": augmentation,
        "versions": _versions(),
    }
    info.update(status="running", world_size=acc.num_processes, resumed=resume)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG_FILE, to_yaml(cfg))
        atomic_write_json(out / RUN_FILE, info)
    acc.wait_for_everyone()

    # ---------------------------------------------------------------- train, then save
    torch.manual_seed(cfg.seed)  # the policy's initialisation (LoRA A matrices)
    policy = build_policy(target, cfg, spec)
    data = TrainData(enc["forget"], enc["retain"], enc.get("alt"), enc["forget_eval"],
                     tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    t0 = time.time()
    try:
        result = train(policy, spec, data, cfg, out, resume=resume, accelerator=acc)
    except TrainingDiverged as e:
        if acc.is_main_process:
            atomic_write_json(out / RUN_FILE, {**info, "status": "diverged", "error": str(e)})
        raise
    info.update(epochs_done=result.epochs_done, steps=result.steps, reason=result.reason,
                train_seconds=info.get("train_seconds", 0.0) + time.time() - t0)
    if acc.is_main_process:
        if result.finished:
            policy.save(result.module, out, tokenizer, cfg)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        info["status"] = "finished" if result.finished else "stopped"
        atomic_write_json(out / RUN_FILE, info)
        print(f"{cfg.method}: {result.reason}; run saved in {out}", file=sys.stderr)
    acc.wait_for_everyone()
    return out


def _read_run(out: Path) -> dict:
    try:
        return json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UldError(f"cannot resume: {out} holds no readable {RUN_FILE}") from None


def _versions() -> dict[str, str]:
    import accelerate
    import torch
    import transformers

    import uld

    return {"uld": getattr(uld, "__version__", "?"), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}
