"""What `uld bench` shows and keeps: the summary rows of its terminal table, and bench.json +
bench.md written into the output directory as one atomic step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uld.bench.perf import TRAIN_METHODS, to_markdown
from uld.io import atomic_dir


def write_report(out: Path, res: dict[str, Any]) -> None:
    """`out/bench.json` (every measured number) and `out/bench.md` (the tables), replacing `out` as a whole."""
    with atomic_dir(out) as tmp:
        (tmp / "bench.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        (tmp / "bench.md").write_text(to_markdown(res), encoding="utf-8")


def summary_rows(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, case, value, ratio) per measured case of a `run_benches` result."""
    rows = []
    if "train" in res:
        t = res["train"]
        for m in TRAIN_METHODS:
            ratio = "1.00" if m == "uld" else f"ULD {t[f'speedup_vs_{m}']:.2f}x faster"
            rows.append(("train", m, f"{t[m]['epoch_seconds']:.2f} s/epoch, {t[m]['peak_mb']:.0f} MB", ratio))
    if "generate" in res:
        for key, row in res["generate"].items():
            if key.startswith("batch"):
                rows.append(("generate", f"batch {key[5:]}", f"target {row['target']['tokens_per_s']:.0f} tok/s, "
                             f"ULD {row['uld']['tokens_per_s']:.0f} tok/s", f"{row['throughput_ratio']:.2f}x"))
    if "eval" in res:
        e = res["eval"]
        batched = e[f"batch{e['batch_size']}"]
        rows.append(("eval", f"batch {e['batch_size']} vs 1", f"{batched['items_per_s']:.2f} vs "
                     f"{e['batch1']['items_per_s']:.2f} items/s (max diff {e['max_abs_diff']:.1e})", f"{e['speedup']:.2f}x"))
        for group, row in e.get("groups", {}).items():
            rows.append(("eval", group, f"{row['items_per_s']:.1f} items/s ({row['items']} items)", ""))
        cmp = e.get("openunlearning", {})
        for group, row in cmp.get("groups", {}).items():
            rows.append(("eval vs OpenUnlearning", group, f"uld {row['uld_items_per_s']:.1f}, OpenUnlearning "
                         f"{row['openunlearning_items_per_s']:.1f} items/s", f"uld {row['ratio']:.2f}x faster"))
        for case, row in (("all groups, each alone", cmp), ("all groups in one evaluation", cmp.get("together", {}))):
            if row.get("ratio"):
                rows.append(("eval vs OpenUnlearning", case, f"uld {row['uld_cpu_s']:.2f} s, OpenUnlearning "
                             f"{row['openunlearning_cpu_s']:.2f} s (CPU)", f"uld {row['ratio']:.2f}x faster"))
    return rows
