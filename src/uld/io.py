"""File input and output with one-sentence errors.

Output is atomic: every result file is written to a temporary name, then renamed, so a failed
or interrupted command leaves the previous file (or nothing), never half a file. Input that is
not UTF-8, not valid JSON or not readable raises `UldError` naming the file and the line.
`check_out` refuses an output path that is a file, that cannot be created, or that would
replace one of the command's own inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from uld.errors import UldError


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
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name the result
            e.filename = str(path)
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


# ----------------------------------------------------------------------------- reading


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of `path`; `UldError` naming the file when it is missing, unreadable or
    not UTF-8 (with the line of the first bad byte)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise UldError(f"{path} is not UTF-8 text (line {line}, byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                       "save it as UTF-8") from e
    except OSError as e:
        raise UldError(f"cannot read {path}: {describe_os_error(e)}") from e


def read_json(path: str | os.PathLike) -> Any:
    """One JSON document from `path`; `UldError` with the real line and column when it is invalid."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UldError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e


def read_json_lines(path: str | os.PathLike, text: str | None = None) -> list[Any]:
    """One JSON value per non-blank line of `path` (or of `text`, read from it); `UldError` with
    the file's own line number when a line is invalid."""
    rows = []
    for n, line in enumerate((read_text(path) if text is None else text).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UldError(f"{path} is not valid JSON lines (line {n}, column {e.colno}: {e.msg})") from e
    return rows


# ----------------------------------------------------------------------------- output paths


def describe_os_error(e: OSError) -> str:
    """A short phrase for an operating-system error: what happened and to which file."""
    import errno

    what = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.ENOTDIR: "a parent is a file, not a directory", errno.EISDIR: "is a directory",
            errno.ENOENT: "no such file or directory", errno.EFBIG: "file too large"}.get(e.errno or -1, e.strerror or type(e).__name__)
    return f"{what} ({e.filename})" if e.filename else what


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG atomically, and close it (also when the write fails)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return Path(path)


def write_json_files(out_dir: str | os.PathLike, files: dict[str, Any]) -> None:
    """Write each `name -> object` as JSON into `out_dir`, each file atomically (temp + rename);
    `UldError` first when `out_dir` cannot be a directory (see `check_out`)."""
    out = check_out(out_dir)
    for name, obj in files.items():
        atomic_write_json(out / name, obj)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None] | None = None,
              flag: str = "--out", kind: str = "dir") -> Path:
    """Check an output path before any work: `UldError` when it is a file but a directory is
    wanted (or the reverse), when its directory cannot be created or written, or when writing
    it would replace one of `inputs` (name -> path; a missing path or a hub id is skipped).

    Writing a directory replaces it as a whole, so an input inside it counts as replaced; an
    input that contains the output (`--out MODEL/eval`) is left alone.
    """
    out = Path(out)
    resolved = out.resolve()
    for name, value in (inputs or {}).items():
        if value is None or not Path(value).exists():
            continue
        src = Path(value).resolve()
        if _inside(src, resolved):
            same = "is" if src == resolved else "contains"
            raise UldError(f"{flag} {str(out)!r} {same} the input {name} {str(value)!r}; writing it would destroy "
                           f"that input: choose another {flag}")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise UldError(f"{flag} {str(out)!r} is a file; give a directory")
    if kind == "file" and out.is_dir():
        raise UldError(f"{flag} {str(out)!r} is a directory; give a file name")
    parent = out if kind == "dir" else out.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UldError(f"{flag} {str(out)!r} cannot be created: {str(existing)!r} is a file")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UldError(f"{flag} {str(out)!r} cannot be written: {str(existing)!r} is not writable")
    return out
