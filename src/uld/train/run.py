"""`uld unlearn` as a library call: check every input, then create the run dir, train, save.

Nothing is written before every input is checked: the config and the method's options, the
splits and their records, the model, its tokenizer and the method's fit to the model, the
policy itself (built in memory). Bad input therefore leaves no run directory. A run directory
holds:

    run.json          what ran: command, config, data and augmentation report, world size, status
                      (running / stopped / interrupted / diverged / failed / finished)
    config.yaml       the resolved config, paths absolute (`--resume` reads it back from anywhere)
    metrics.jsonl     one line per logged step and per epoch
    logs/             samples-rank{r}.jsonl: the item ids each process trained on
    checkpoints/      the last epoch checkpoint(s), removed when the run finishes
    .lock             held while a process trains in the directory (one run per directory)
    + the model       ULD: config.json + assistant/ (AutoModelForCausalLM after import uld, uld generate);
                      full: config.json + weights (AutoModelForCausalLM); lora: a peft adapter;
                      offset: offset_config.json (uld.models.loading.load_model); + the tokenizer
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uld.errors import Interrupted, UldError, unknown_choice
from uld.io import atomic_write_json, atomic_write_text, check_out
from uld.train.config import RunConfig, apply_overrides, from_dict, to_yaml

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"

# Options a resumed run may change: they stop or log, they do not change the maths of the
# steps already taken. Anything else is refused (the checkpoint's optimizer and schedule hold
# the old values).
RESUME_OPTIONS = ("train.stop_after_epoch", "train.stop_forget_prob", "train.keep_checkpoints", "train.log_every")


def resume_config(out: Path, overrides: dict[str, Any], flags: dict[str, Any]) -> RunConfig:
    """The saved config of the run in `out`, with `--set` overrides; flags must match it."""
    import yaml

    if not (out / CONFIG_FILE).is_file() or not (out / RUN_FILE).is_file():
        raise UldError(f"cannot resume: {out} holds no run (no {CONFIG_FILE} / {RUN_FILE})")
    saved = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8"))
    # A run saved before the ULD weight was renamed keeps loading.
    if "alpha" in (saved.get("policy") or {}):
        saved["policy"]["assistant_weight"] = saved["policy"].pop("alpha")
    for key, value in flags.items():
        have = saved["data"][key.split(".")[1]] if key.startswith("data.") else saved[key]
        if key in ("model", "data.source") and value is not None and Path(value).exists():
            value = str(Path(value).resolve())
        if value is not None and value != have:
            raise UldError(f"cannot resume with {key}={value!r}: the run in {out} used {have!r}")
    before = from_dict(saved)
    after = from_dict(apply_overrides(saved, overrides, " in --set"))
    changed = [k for k in _diff(before.to_dict(), after.to_dict()) if k not in RESUME_OPTIONS]
    if changed:
        raise UldError(
            f"cannot change {changed[0]} when resuming: the checkpoint was trained with the saved value; "
            f"on resume only {', '.join(RESUME_OPTIONS)} may change (start a new run for other values)"
        )
    return after


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in a.keys() | b.keys():
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return sorted(out)


def unlearn(cfg: RunConfig, out: str | Path, resume: bool = False, command: list[str] | None = None) -> Path:
    """Run one unlearning job into `out`; returns the run directory."""
    import torch

    from uld.data.collate import encode_records
    from uld.data.prompts import PromptFormat
    from uld.data.records import load_split
    from uld.methods.base import available_methods, get_method
    from uld.models.gguf import resolve_gguf
    from uld.models.loading import load_causal_lm, load_tokenizer
    from uld.train.loop import make_accelerator
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
    check_out(out)
    for split in (cfg.data.forget, cfg.data.retain):
        if split and (split in (".", "..") or "/" in split or "\\" in split or Path(split).name != split):
            raise UldError(f"split name {split!r} must be a plain name such as forget10, not a path")
    _check_unlocked(out)
    run_info = _read_run(out) if resume else None
    if resume and run_info.get("status") == "finished":
        raise UldError(f"the run in {out} has already finished; choose another --out to train again")
    if not resume and out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise UldError(f"{out} already exists and is not empty; pass --resume to continue that run or choose another --out")
    needs_retain = "retain" in spec.needs
    if needs_retain and not cfg.data.retain:
        raise UldError(f"method {cfg.method!r} needs a retain split: pass --retain")
    if needs_retain and cfg.data.retain == cfg.data.forget:
        raise UldError(f"the forget and retain splits are the same ({cfg.data.forget!r}); "
                       "the retain split must hold what the model should keep")
    # Absolute paths, so that `--resume` works from any working directory.
    if Path(cfg.data.source).exists():
        cfg.data.source = str(Path(cfg.data.source).resolve())
    if cfg.augment.file:
        cfg.augment.file = str(Path(cfg.augment.file).resolve())
    acc = make_accelerator(cfg)
    micro = cfg.train.micro_batch_size or max(1, cfg.train.batch_size // acc.num_processes)
    if cfg.train.batch_size % (micro * acc.num_processes):
        raise UldError(f"option train.batch_size={cfg.train.batch_size} is not a multiple of the micro-batch "
                       f"{micro} x {acc.num_processes} processes")
    acc.wait_for_everyone()  # every rank has checked `out` before rank 0 creates it

    forget = load_split(cfg.data.source, cfg.data.forget)
    retain = load_split(cfg.data.source, cfg.data.retain) if needs_retain else []
    _check_disjoint(forget, retain, cfg)

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
    model_config = _model_config(model_path)
    if model_config is not None:  # checked before the weights load
        _check_model(model_config, model_config.vocab_size, tokenizer, spec, cfg)
    target = load_causal_lm(model_path)
    _check_model(target.config, target.get_input_embeddings().weight.shape[0], tokenizer, spec, cfg)
    torch.manual_seed(cfg.seed)  # the policy's initialisation (LoRA A matrices)
    policy = build_policy(target, cfg, spec)

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
    info.pop("error", None)
    with _run_dir(out, acc.is_main_process, resume):
        if acc.is_main_process:
            _write(out, CONFIG_FILE, to_yaml(cfg))
            atomic_write_json(out / RUN_FILE, info)
        acc.wait_for_everyone()
        _train_and_save(policy, spec, enc, tokenizer, cfg, out, resume, acc, info)
    return out


def _train_and_save(policy, spec, enc, tokenizer, cfg: RunConfig, out: Path, resume: bool, acc, info: dict) -> None:
    from uld.train.checkpoint import CHECKPOINTS, latest_checkpoint, remove_partial
    from uld.train.loop import TrainData, TrainingDiverged, train

    data = TrainData(enc["forget"], enc["retain"], enc.get("alt"), enc["forget_eval"],
                     tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    t0 = time.time()

    def fail(status: str, error: str) -> None:
        if not acc.is_main_process:
            return
        with contextlib.suppress(OSError):  # a full disk must not hide the original error
            remove_partial(out)
            ckpt = latest_checkpoint(out)
            atomic_write_json(out / RUN_FILE, {**info, "status": status, "error": error,
                                               "last_checkpoint": ckpt.name if ckpt else None,
                                               "train_seconds": info.get("train_seconds", 0.0) + time.time() - t0})

    try:
        result = train(policy, spec, data, cfg, out, resume=resume, accelerator=acc)
        info.update(epochs_done=result.epochs_done, steps=result.steps, reason=result.reason,
                    train_seconds=info.get("train_seconds", 0.0) + time.time() - t0)
        if acc.is_main_process:
            if result.finished:
                _save_model(policy, result.module, out, tokenizer, cfg)
                shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            info["status"] = "finished" if result.finished else "stopped"
            atomic_write_json(out / RUN_FILE, info)
            print(f"{cfg.method}: {result.reason}; run saved in {out}", file=sys.stderr)
    except KeyboardInterrupt:
        fail("interrupted", "interrupted by the user")
        ckpt = latest_checkpoint(out)
        hint = (f"resume with `uld unlearn --out {out} --resume`" if ckpt is not None
                else f"no epoch had finished, so nothing can be resumed; remove {out} to start again")
        # One line from the CLI entry point (exit 130), not this hint and then its own "interrupted".
        raise Interrupted(f"interrupted; {hint}") from None
    except TrainingDiverged as e:
        fail("diverged", str(e))
        raise
    except OSError as e:
        fail("failed", _describe(e))
        raise UldError(f"could not write the run in {out}: {_describe(e)}") from e
    except BaseException as e:
        fail("failed", f"{type(e).__name__}: {e}")
        raise
    acc.wait_for_everyone()


def _save_model(policy, module, out: Path, tokenizer, cfg: RunConfig) -> None:
    """Write the model into a temporary sibling directory, then move its files into `out`: an
    interrupted save leaves no partial model files."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        policy.save(module, tmp, tokenizer, cfg)
        for p in sorted(tmp.iterdir()):
            os.replace(p, out / p.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _run_dir(out: Path, main: bool, resume: bool) -> Iterator[None]:
    """Create `out` (main process) and hold its lock for the run; a directory created here is
    removed again if the run cannot start."""
    if not main:
        yield
        return
    import fcntl

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    except OSError as e:
        raise UldError(f"cannot create the run directory {out}: {_describe(e)}") from e
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise _locked(out) from None
    try:
        if not resume and any(p.name != LOCK_FILE for p in out.iterdir()):  # another run got here first
            raise UldError(f"{out} already exists and is not empty; pass --resume to continue that run or "
                           "choose another --out")
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    except BaseException:
        if created and not (out / RUN_FILE).is_file():
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
        with contextlib.suppress(OSError):
            (out / LOCK_FILE).unlink()


def _describe(e: OSError) -> str:
    return f"{e.strerror or type(e).__name__} ({e.filename})" if e.filename else (e.strerror or str(e))


def _locked(out: Path) -> UldError:
    try:
        pid = (out / LOCK_FILE).read_text(encoding="utf-8").strip() or "?"
    except OSError:
        pid = "?"
    return UldError(f"another `uld unlearn` (pid {pid}) is running in {out}; wait for it to end or choose another --out")


def _check_unlocked(out: Path) -> None:
    """Refuse early, before any loading, when another process holds the run's lock."""
    import fcntl

    if not (out / LOCK_FILE).is_file():
        return
    with open(out / LOCK_FILE, encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _locked(out) from None
        fcntl.flock(fh, fcntl.LOCK_UN)


def _write(out: Path, name: str, text: str) -> None:
    try:
        atomic_write_text(out / name, text)
    except OSError as e:
        raise UldError(f"cannot write in the run directory {out}: {_describe(e)}") from e


def _check_disjoint(forget: list[dict], retain: list[dict], cfg: RunConfig) -> None:
    """Refuse retain records that are forget records too (same question and answer)."""
    seen = {(str(r["question"]).strip(), str(r["answer"]).strip()) for r in forget}
    both = [r for r in retain if (str(r["question"]).strip(), str(r["answer"]).strip()) in seen]
    if both:
        raise UldError(
            f"{len(both)} record(s) of the retain split {cfg.data.retain!r} are also in the forget split "
            f"{cfg.data.forget!r} (e.g. {str(both[0]['question'])[:60]!r}); the splits must not overlap"
        )


def _model_config(model_path: str):
    """The model's transformers config without its weights, or None when it cannot be read alone."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_path)
    except Exception:  # e.g. a GGUF file: the checks run again once the weights are loaded
        return None


def _check_model(model_config, rows: int, tokenizer, spec, cfg: RunConfig) -> None:
    """Refuse a model/tokenizer pairing, an assistant size or method options that do not fit
    the model; `rows` is the size of its token embedding."""
    if len(tokenizer) > rows:
        raise UldError(f"the tokenizer of {cfg.model} has {len(tokenizer)} tokens but the model's embedding has only "
                       f"{rows} rows: they do not belong together")
    n = getattr(model_config, "num_hidden_layers", None)
    k = cfg.policy.num_layers
    if n is not None and k and cfg.policy.kind in ("uld", "offset") and not cfg.policy.offset_model and k >= n:
        raise UldError(f"option policy.num_layers={k} must satisfy 1 <= K < {n} (the target's decoder layers)")
    if spec.check_model is not None:
        spec.check_model(model_config, cfg.loss)


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
