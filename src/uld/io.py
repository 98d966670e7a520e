"""Atomic file output: every result file is written to a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside `path` for writing (`"w"` text, UTF-8, or `"wb"`); on success it
    replaces `path` (`os.replace`), on failure it vanishes and `path` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temp file in the same directory + `os.replace`."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as JSON atomically (NaN/inf are written as JSON null)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=indent) + "\n")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _json_safe(obj.item())
    return obj


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path`, on failure it vanishes.

    Nothing is left at `path` when the body raises, so a failed command writes no partial output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists")
        usual_permissions(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def usual_permissions(path: str | os.PathLike) -> None:
    """Give a file, or a directory and everything in it, the permissions `open` and `mkdir` give
    (0666 / 0777 less the umask): `tempfile` makes 0600 / 0700, and some writers (safetensors)
    make 0600, where the rest of a run directory (e.g. tokenizer files) is 0644."""
    umask = os.umask(0)
    os.umask(umask)
    paths = [Path(path)]
    if paths[0].is_dir():
        paths += list(paths[0].rglob("*"))
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory `src` to `dst`, swapping out an existing `dst` by renames (no copy)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
