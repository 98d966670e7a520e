"""A ULD run directory: writing it and loading it back.

    config.json              ULDConfig (model_type "uld"): weight, rate, K, LoRA settings, the target's
                             location and fingerprint; written last, so a directory with it is complete
    assistant/               the assistant adapter in peft's format (adapter_config.json +
                             adapter_model.safetensors), loadable by `PeftModel.from_pretrained` onto the
                             target cut to its first K blocks; a private block copy (LoRA rank 0) is
                             `assistant/blocks.safetensors` instead
    generation_config.json   the target's generation settings
    target/                  the target itself, when saved with `save_target=True` (a self-contained
                             bundle) or when it could not be found again otherwise
    tokenizer files          when a tokenizer is given

The target is recorded as given: a hub id as is, a local directory as a path relative to the run
directory ("./target", "../base"), so the run and its target can be moved together. Directories
written before this format (`uld_config.json` + `assistant.safetensors`, weight stored as "alpha")
still load.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from uld.errors import UldError
from uld.io import atomic_write_text, replace_dir, usual_permissions
from uld.models.assistant import build_assistant
from uld.models.defaults import LORA_ALPHA, LORA_DROPOUT
from uld.models.uld.config import ULDConfig
from uld.models.uld.identity import fingerprint_difference, target_fingerprint

if TYPE_CHECKING:
    from uld.models.uld.model import ULDForCausalLM

CONFIG_NAME = "config.json"
ASSISTANT_DIR = "assistant"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
BLOCKS_NAME = "blocks.safetensors"
TARGET_DIR = "target"
LEGACY_CONFIG, LEGACY_ADAPTER = "uld_config.json", "assistant.safetensors"
PEFT_PREFIX = "base_model.model."
ADAPTER = "default"

# Options of `from_pretrained` passed on to the target's loader, and those that loaders such as
# `AutoModelForCausalLM`, `pipeline` or lm-eval add and that mean nothing here.
_TARGET_OPTIONS = ("attn_implementation", "revision", "cache_dir", "local_files_only", "token", "low_cpu_mem_usage",
                   "force_download", "proxies")
_IGNORED = ("trust_remote_code", "adapter_kwargs", "use_safetensors", "subfolder")


def is_uld_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a ULD run directory (new or old format)."""
    p = Path(path)
    if (p / LEGACY_CONFIG).is_file():
        return True
    try:
        return json.loads((p / CONFIG_NAME).read_text(encoding="utf-8")).get("model_type") == ULDConfig.model_type
    except (OSError, ValueError, AttributeError):
        return False


# -- saving --------------------------------------------------------------------------------------

def save_uld(model: ULDForCausalLM, save_directory: str | os.PathLike, save_target: bool = False, tokenizer=None,
             is_main_process: bool = True, **_: Any) -> Path:
    """Write `model` as a run directory (module docstring); returns its path. Each file is written
    atomically, `config.json` last."""
    out = Path(save_directory)
    if not is_main_process:
        return out
    out.mkdir(parents=True, exist_ok=True)
    source = _target_source(model.target)
    if save_target or source is None:
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".target.", suffix=".tmp"))
        model.target.save_pretrained(tmp)
        usual_permissions(tmp)
        replace_dir(tmp, out / TARGET_DIR)
        entry = f"./{TARGET_DIR}"
    else:
        entry = _relative_entry(source, out)
    _save_assistant(model, out, entry)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        atomic_write_text(out / "generation_config.json", gen.to_json_string(use_diff=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    config = ULDConfig.from_dict(model.config.to_dict())
    config.target_name_or_path = entry
    config.target_saved_from = source if source and os.path.isabs(source) and entry != f"./{TARGET_DIR}" else None
    config.target_fingerprint = target_fingerprint(model.target)
    config.architectures = [type(model).__name__]
    atomic_write_text(out / CONFIG_NAME, config.to_json_string(use_diff=False))
    for old in (LEGACY_CONFIG, LEGACY_ADAPTER):  # an older save in the same directory
        (out / old).unlink(missing_ok=True)
    return out


def _save_assistant(model: ULDForCausalLM, out: Path, target_entry: str) -> None:
    from safetensors.torch import save_file

    assistant = model.assistant
    acfg = assistant.assistant_config
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in assistant.adapter_state_dict().items()}
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".assistant.", suffix=".tmp"))
    if acfg["lora_rank"] > 0:
        from peft import LoraConfig

        names = acfg["lora_modules"]
        LoraConfig(
            r=acfg["lora_rank"], lora_alpha=acfg["lora_alpha"], lora_dropout=acfg["lora_dropout"],
            target_modules=names, fan_in_fan_out=_is_conv1d(assistant.model, names[0]), bias="none",
            task_type="CAUSAL_LM", base_model_name_or_path=target_entry,
        ).save_pretrained(tmp)
        peft_tensors = {PEFT_PREFIX + k.replace(f".{ADAPTER}.", "."): v for k, v in tensors.items()}
        save_file(peft_tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
    else:
        save_file(tensors, str(tmp / BLOCKS_NAME), metadata={"format": "pt"})
    usual_permissions(tmp)
    replace_dir(tmp, out / ASSISTANT_DIR)


def _is_conv1d(model: torch.nn.Module, name: str) -> bool:
    from transformers.pytorch_utils import Conv1D

    layer = model.get_submodule(name)
    return isinstance(getattr(layer, "base_layer", layer), Conv1D)


def _target_source(target: torch.nn.Module) -> str | None:
    """The target's hub id or absolute directory, or None when it cannot be loaded from anywhere."""
    src = getattr(target, "name_or_path", "") or getattr(target.config, "_name_or_path", "") or ""
    if not src:
        return None
    p = Path(src)
    if p.is_dir():
        return str(p.resolve()) if (p / "config.json").is_file() else None
    if _is_hub_id(src):
        return src
    return None


def _is_hub_id(entry: str) -> bool:
    return bool(re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", entry)) and not entry.startswith((".", "/", "~"))


def _relative_entry(source: str, out: Path) -> str:
    """A hub id as is; a local directory relative to the run directory, starting with ./ or ../."""
    if not os.path.isabs(source):
        return source
    try:
        rel = os.path.relpath(source, out.resolve())
    except ValueError:  # another drive (Windows): only an absolute path can say where
        return source
    return rel if rel.startswith("..") else f"./{rel}"


# -- loading -------------------------------------------------------------------------------------

def read_config(root: Path) -> ULDConfig:
    """The run's `ULDConfig`, from `config.json` or an older `uld_config.json`."""
    if not root.is_dir():
        raise UldError(f"{str(root)!r} is not a ULD run directory: no such directory")
    if (root / CONFIG_NAME).is_file() and is_uld_dir(root) and not (root / LEGACY_CONFIG).is_file():
        try:
            return ULDConfig.from_pretrained(str(root))
        except Exception as e:
            raise UldError(f"{str(root / CONFIG_NAME)!r} is not a valid ULD config: {e}") from e
    path = root / LEGACY_CONFIG
    if not path.is_file():
        raise UldError(f"{str(root)!r} is not a ULD run directory: {CONFIG_NAME} with model_type 'uld' is missing")
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UldError(f"{str(path)!r} is not valid JSON: {e}") from e
    required = ("alpha", "filter_rate", "num_layers", "lora_rank", "target_name_or_path")
    missing = [k for k in required if k not in old] if isinstance(old, dict) else list(required)
    if missing:
        raise UldError(f"{str(path)!r} lacks the keys {missing}")
    entry = f"./{TARGET_DIR}" if old.get("target_saved") else old["target_name_or_path"]
    return ULDConfig(
        assistant_weight=float(old["alpha"]), filter_rate=float(old["filter_rate"]), num_layers=int(old["num_layers"]),
        lora_rank=int(old["lora_rank"]), lora_alpha=float(old.get("lora_alpha", LORA_ALPHA)),
        lora_dropout=float(old.get("lora_dropout", LORA_DROPOUT)), target_modules=old.get("target_modules"),
        target_name_or_path=entry, vocab_size=old.get("vocab_size"),
    )


def resolve_target(root: Path, entry: str | None, saved_from: str | None = None) -> str:
    """Where the target recorded as `entry` is: a directory (relative entries against the run
    directory; else `saved_from`, the absolute directory at save time) or a hub id. One sentence
    naming the path tried when it is not there."""
    hint = "pass target=... to from_pretrained (or --target to `uld generate`)"
    if not entry:
        raise UldError(f"the ULD run in {str(root)!r} records no target; {hint}")
    if entry.startswith(("./", "../", ".\\", "..\\")) or entry in (".", ".."):
        tried = (root / entry).resolve()
    elif os.path.isabs(entry):
        tried = Path(entry)
    elif (root / entry).is_dir():  # an older run directory recorded its saved target as "target"
        return str((root / entry).resolve())
    else:
        return entry  # a hub id
    if not (tried / "config.json").is_file() and saved_from and (Path(saved_from) / "config.json").is_file():
        return saved_from
    if not (tried / "config.json").is_file():
        what = "no directory" if not tried.exists() else "no config.json"
        raise UldError(f"the run's target is not where it was recorded: {str(tried)!r} ({entry!r} in "
                       f"{str(root / CONFIG_NAME)!r}) has {what}; {hint}")
    return str(tried)


def load_uld(cls: type[ULDForCausalLM], path: str | os.PathLike, *, target=None, config: ULDConfig | None = None,
             dtype=None, torch_dtype=None, device_map=None, device: str | None = None,
             ignore_target_mismatch: bool = False, **kwargs: Any) -> ULDForCausalLM:
    """Rebuild a saved ULD model: its target, the assistant with its adapter, weight and rate.

    target: a directory, hub id or loaded model to use instead of the recorded one (the
        fingerprint is still checked). dtype / torch_dtype: a torch.dtype, its name, or "auto", for
        the target (LoRA weights keep peft's dtype). device_map: as in transformers, on one device
        (ULD runs the shared blocks of both models together). ignore_target_mismatch: combine the
        adapter with a target whose fingerprint differs from the recorded one.
    """
    from uld.models.loading import load_causal_lm, resolve_dtype

    root = Path(path)
    unknown = [k for k in kwargs if k not in _TARGET_OPTIONS and k not in _IGNORED and not k.startswith("_")]
    if unknown:
        raise UldError(f"ULDForCausalLM.from_pretrained does not support the option {unknown[0]!r}")
    if dtype is not None and torch_dtype is not None and resolve_dtype(dtype) != resolve_dtype(torch_dtype):
        raise UldError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree: give one of them")
    dtype = resolve_dtype(dtype if dtype is not None else torch_dtype)
    cfg = read_config(root) if not isinstance(config, ULDConfig) else config
    if isinstance(target, torch.nn.Module):
        target_model, target_path = target, getattr(target, "name_or_path", "") or ""
        if dtype is not None and dtype != "auto":
            target_model.to(dtype)
    else:
        target_path = str(target) if target is not None else resolve_target(root, cfg.target_name_or_path,
                                                                              cfg.target_saved_from)
        options = {k: v for k, v in kwargs.items() if k in _TARGET_OPTIONS}
        target_model = load_causal_lm(target_path, dtype=dtype, device_map=device_map, **options)
    _check_one_device(target_model)
    if cfg.target_fingerprint and not ignore_target_mismatch:
        why = fingerprint_difference(cfg.target_fingerprint, target_model)
        if why:
            raise UldError(
                f"the target {target_path!r} is not the model this run was trained on ({why}); pass "
                "ignore_target_mismatch=True (--ignore-target-mismatch) to combine them anyway"
            )
    if target_path and Path(target_path).is_dir():
        _check_tokenizers(root, target_path)
    vocab = target_model.get_output_embeddings().weight.shape[0]
    if cfg.vocab_size not in (None, vocab):
        raise UldError(f"the target {target_path!r} has {vocab} output tokens but the ULD model in "
                       f"{str(root)!r} was built for {cfg.vocab_size}")
    assistant = build_assistant(target_model, num_layers=cfg.num_layers, lora_rank=cfg.lora_rank,
                                lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                target_modules=cfg.target_modules, norm_scale=float(cfg.norm_scale or 0.0))
    assistant.load_adapter_state_dict(_read_adapter(root))
    model = cls(target_model, assistant, assistant_weight=cfg.assistant_weight, filter_rate=cfg.filter_rate)
    model.config.target_name_or_path = target_path or cfg.target_name_or_path
    model.config.target_fingerprint = cfg.target_fingerprint
    model.name_or_path = str(path)
    model.config._name_or_path = str(path)
    if (root / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(str(root))
    if device:
        model.to(device)
    return model.eval()


def _check_one_device(target: torch.nn.Module) -> None:
    devices = {str(d) for d in (getattr(target, "hf_device_map", None) or {}).values()}
    if len(devices) > 1:
        raise UldError(
            f"device_map spreads the target over {len(devices)} devices ({', '.join(sorted(devices))}); ULD runs the "
            "assistant's blocks with the target's, so give one device (e.g. device_map='cuda:0')"
        )


def _read_adapter(root: Path) -> dict[str, torch.Tensor]:
    """The assistant's tensors, named as inside the assistant's model (`adapter_state_dict`)."""
    from safetensors.torch import load_file

    peft_file, blocks, legacy = root / ASSISTANT_DIR / PEFT_WEIGHTS, root / ASSISTANT_DIR / BLOCKS_NAME, root / LEGACY_ADAPTER
    path = next((p for p in (peft_file, blocks, legacy) if p.is_file()), None)
    if path is None:
        raise UldError(f"the ULD directory {str(root)!r} has no adapter file ({ASSISTANT_DIR}/{PEFT_WEIGHTS}, "
                       f"{ASSISTANT_DIR}/{BLOCKS_NAME} or {LEGACY_ADAPTER})")
    try:
        tensors = load_file(str(path))  # safetensors: no unpickling
    except Exception as e:
        raise UldError(f"the adapter file {str(path)!r} is corrupt or not safetensors ({e})") from e
    if path != peft_file:
        return tensors
    out = {}
    for key, value in tensors.items():
        name = key.removeprefix(PEFT_PREFIX)
        for part in ("lora_A", "lora_B"):
            name = name.replace(f".{part}.weight", f".{part}.{ADAPTER}.weight")
        out[name] = value
    return out


def _check_tokenizers(root: Path, target_path: str) -> None:
    """When the ULD directory and the target both ship a tokenizer, their vocabularies must agree."""
    tdir = Path(target_path)
    has = lambda p: (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()  # noqa: E731
    if not (has(root) and tdir.is_dir() and has(tdir)) or root.resolve() == tdir.resolve():
        return
    from uld.models.loading import load_tokenizer

    a, b = load_tokenizer(root), load_tokenizer(tdir)
    if a.get_vocab() != b.get_vocab():
        raise UldError(
            f"tokenizer mismatch: the tokenizer in {str(root)!r} differs from the target's in {target_path!r}"
        )



def export_run(run: str | os.PathLike, out: str | os.PathLike, bundle: bool = False, target: str | None = None,
               ignore_target_mismatch: bool = False) -> Path:
    """Write the run in `run` to a new directory `out` (which must not exist): with `bundle`, a
    self-contained copy holding its target under `out/target`; without, a copy that refers to
    the target (relative to `out` when local). `target` loads another copy of the target (it must
    match the recorded fingerprint unless `ignore_target_mismatch`). Written atomically: `out`
    appears complete or not at all."""
    from uld.io import atomic_dir
    from uld.models.loading import load_model
    from uld.models.uld.model import ULDForCausalLM

    src, dst = Path(run), Path(out)
    if not is_uld_dir(src):
        raise UldError(f"{str(src)!r} is not a ULD run directory (no config.json with model_type 'uld')")
    if dst.exists():
        raise UldError(f"{str(dst)!r} already exists: give a new directory to export to")
    model, tokenizer = load_model(src, target=target, ignore_target_mismatch=ignore_target_mismatch)
    if not isinstance(model, ULDForCausalLM):
        raise UldError(f"{str(src)!r} did not load as a ULD model")
    # `tmp` is a sibling of `dst`: a target path relative to it is the same relative to `dst`.
    with atomic_dir(dst, overwrite=False) as tmp:
        save_uld(model, tmp, save_target=bundle, tokenizer=tokenizer)
    return dst
