"""A study's cached stages: each stage is one directory, built once and reused on the next run.

The directory is written atomically (`uld.io.atomic_dir`) and `stage.json`, the stage's record
(its name, its seconds, whatever the stage reported), is the last file written inside it. So a
directory with `stage.json` is finished, and a run stopped midway leaves no half-built stage
behind: the next run builds that stage again and reuses every finished one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uld.io import atomic_dir

STAGE_FILE = "stage.json"


def is_finished(path: str | Path) -> bool:
    """Whether `path` holds a finished stage."""
    return (Path(path) / STAGE_FILE).is_file()


def cached_stage(path: str | Path, name: str, body: Callable[[Path], dict[str, Any] | None],
                 log: Callable[[str], Any], label: str) -> tuple[dict[str, Any], bool]:
    """Build stage `name` into `path` with `body(tmp)` (which writes into `tmp` and may return facts
    to record) unless `path` holds a finished stage. Logs `"{label}: {name}: reused|building ..."`.

    Returns `(record, reused)`: the record is `stage.json`'s content, `{"stage": name, "seconds":
    build time rounded to 0.1 s, **what body returned}`, read back when the stage is reused.
    """
    path = Path(path)
    if is_finished(path):
        log(f"{label}: {name}: reused {path}")
        return json.loads((path / STAGE_FILE).read_text(encoding="utf-8")), True
    log(f"{label}: {name}: building {path}")
    t0 = time.time()
    with atomic_dir(path) as tmp:
        facts = body(tmp) or {}
        record = {"stage": name, "seconds": round(time.time() - t0, 1), **facts}
        (tmp / STAGE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log(f"{label}: {name}: done in {record['seconds']:.1f}s")
    return record, False
