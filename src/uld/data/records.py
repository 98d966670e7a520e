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
from uld.io import read_json_lines, read_text

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


TEXT_FIELDS = ("question", "answer", "paraphrased_answer", "paraphrased_question")
"""Fields that must be a non-empty string when present (`question` may be "" for raw text)."""
LIST_FIELDS = ("perturbed_answer", "paraphrases", "distractors")
"""Fields that must be a non-empty string or a list of them when present."""


def _read_json_records(path: Path) -> list[Record]:
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UldError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    else:
        rows = read_json_lines(path, text)
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise UldError(f"record {i} of {path} is {type(r).__name__} {str(r)[:40]!r}; each record must be a JSON object")
    return rows


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string"
    return {"list": "a list", "dict": "an object", "bool": "a boolean", "int": "a number",
            "float": "a number"}.get(type(value).__name__, type(value).__name__)


def check_record(record: Record, where: str) -> None:
    """`UldError` naming the record and field when a text field is not a non-empty string (a
    list, a number, an empty string would otherwise be silently turned into text)."""
    for key in TEXT_FIELDS:
        v = record.get(key)
        if key == "question" and v == "":
            continue  # a raw-text record: no prompt, the answer is the text (text studies use it)
        if key in record and v is not None and not (isinstance(v, str) and v.strip()):
            raise UldError(f"{where}: field {key!r} must be a non-empty string, got {_kind(v)} ({str(v)[:40]!r})")
    for key in LIST_FIELDS:
        v = record.get(key)
        if key not in record or v is None:
            continue
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
            raise UldError(f"{where}: field {key!r} must be a non-empty string or a list of them, got {str(v)[:60]!r}")


def check_split_name(split: str) -> str:
    """A split is a file name inside the data directory (or a hub config): no path in it."""
    if not split or split in (".", "..") or "/" in split or "\\" in split or Path(split).name != split:
        raise UldError(f"split name {split!r} must be a plain name such as forget10, not a path; "
                       "the splits are the files inside the data directory")
    return split


def load_split(
    source: str | Path, split: str, required: tuple[str, ...] = ("question", "answer")
) -> list[Record]:
    """Load one split as a list of records and check that each has the `required` fields.

    Raises `UldError` for a missing split, an unreadable file, an empty split or records that
    lack a required field, or whose text fields are not non-empty strings (`check_record`).
    """
    check_split_name(split)
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
        check_record(r, f"record {i} of {where}")
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
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise UldError(f"expected a string or a list of strings, got {str(value)[:60]!r}")
    return list(value)
