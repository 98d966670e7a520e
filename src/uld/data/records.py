"""QA records in TOFU's schema, from a local directory or the Hugging Face hub.

A *source* is either a local directory holding one file per split (`forget10.json`,
`forget10.jsonl`; JSON lines or one JSON array) or a hub dataset id (`locuslab/TOFU`) whose
config names are the split names. A record is a plain dict with at least `question` and
`answer`; evaluation splits add `paraphrased_answer`, `perturbed_answer`, ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uld.errors import UldError

Record = dict[str, Any]
SPLIT_SUFFIXES = (".json", ".jsonl")


def is_local_source(source: str | Path) -> bool:
    return Path(source).exists()


def available_splits(source: str | Path) -> list[str]:
    """Split names found in a local directory (empty for hub sources)."""
    p = Path(source)
    if not p.is_dir():
        return []
    return sorted({f.stem for f in p.iterdir() if f.suffix in SPLIT_SUFFIXES})


def _read_json_records(path: Path) -> list[Record]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            rows = json.loads(stripped)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise UldError(f"{path} is not valid JSON or JSON lines (line {e.lineno}: {e.msg})") from e
    if not all(isinstance(r, dict) for r in rows):
        raise UldError(f"{path} must hold JSON objects, one per record")
    return rows


def load_split(
    source: str | Path, split: str, required: tuple[str, ...] = ("question", "answer")
) -> list[Record]:
    """Load one split as a list of records and check that each has the `required` fields.

    Raises `UldError` for a missing split, an unreadable file, an empty split or records that
    lack a required field.
    """
    if is_local_source(source):
        root = Path(source)
        if not root.is_dir():
            raise UldError(f"data source {str(source)!r} is a file; pass the directory holding the splits")
        path = next((root / f"{split}{s}" for s in SPLIT_SUFFIXES if (root / f"{split}{s}").exists()), None)
        if path is None:
            splits = available_splits(root)
            raise UldError(
                f"split {split!r} not found in {root}; available splits: {', '.join(splits) or 'none'}"
            )
        rows = _read_json_records(path)
        where = str(path)
    elif "/" in str(source) and not str(source).startswith((".", "/")):
        rows = _load_hub_split(str(source), split)
        where = f"{source}:{split}"
    else:
        raise UldError(f"data source {str(source)!r} is neither an existing directory nor a hub dataset id")
    if not rows:
        raise UldError(f"split {split!r} in {where} is empty")
    for i, r in enumerate(rows):
        missing = [k for k in required if k not in r or r[k] is None]
        if missing:
            raise UldError(
                f"record {i} of {where} lacks field(s) {', '.join(missing)}; each record needs {', '.join(required)}"
            )
    return rows


def _load_hub_split(dataset_id: str, split: str) -> list[Record]:
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, split, split="train")
    except Exception as e:  # network, missing config, ...
        raise UldError(f"could not load split {split!r} of hub dataset {dataset_id!r}: {e}") from e
    return [dict(r) for r in ds]


def as_list(value: Any) -> list[str]:
    """A field that may be a single string or a list of strings, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
