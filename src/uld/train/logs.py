"""The training run's logs: `metrics.jsonl`, per-rank sample ids, TensorBoard, the progress bar.

`metrics.jsonl` holds one JSON object per logged step and per epoch; `logs/samples-rank{r}.jsonl`
the forget / retain item ids each rank trained on at each step; `tb/` TensorBoard events when
`tensorboard` is installed. Only the main process writes metrics; every rank writes its samples.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from uld.io import atomic_write_text


class RunLog:
    """Writes a run's log files; does nothing when `run_dir` is None."""

    def __init__(self, run_dir: Path | None, rank: int, main: bool):
        self.run_dir, self.rank, self.main = run_dir, rank, main
        self.writer = _tensorboard(run_dir) if (run_dir is not None and main) else None
        self._samples = None

    def metrics(self, line: dict[str, Any]) -> None:
        """Append one metrics line (main process only) and mirror its numbers to TensorBoard."""
        if self.run_dir is None or not self.main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        if self.writer is not None:
            for k, v in line.items():
                if isinstance(v, float) and k not in ("epoch", "step"):
                    self.writer.add_scalar(f"{line['type']}/{k}", v, line["step"])

    def samples(self, epoch: int, step: int, f_items, r_items) -> None:
        """Record which forget / retain items this rank trained on at `step`."""
        if self.run_dir is None:
            return
        if self._samples is None:
            path = self.run_dir / "logs" / f"samples-rank{self.rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._samples = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._samples.write(json.dumps({
            "epoch": epoch,
            "step": step,
            "forget": [e.meta.get("index") for e in f_items],
            "retain": [e.meta.get("index") for e in r_items],
        }) + "\n")

    def flush(self) -> None:
        if self._samples is not None:
            self._samples.flush()

    def truncate(self, global_step: int) -> None:
        """Drop metric and sample lines past `global_step`: a run killed mid-epoch logged steps
        past its last checkpoint, and resuming replays them."""
        if self.run_dir is None:
            return
        paths = [self.run_dir / "logs" / f"samples-rank{self.rank}.jsonl"]
        if self.main:
            paths.append(self.run_dir / "metrics.jsonl")
        for path in paths:
            if path.is_file():
                keep = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                        if ln.strip() and json.loads(ln)["step"] <= global_step]
                atomic_write_text(path, "".join(ln + "\n" for ln in keep))

    def close(self) -> None:
        if self._samples is not None:
            self._samples.close()
            self._samples = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def to_numbers(acc, values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Detached scalar tensors -> Python floats, averaged over processes: one all-reduce and one
    device-to-host copy for the whole dict."""
    if not values:
        return {}
    keys = list(values)
    stacked = torch.stack([values[k].detach().double().reshape(()) for k in keys]).to(acc.device)
    if acc.num_processes > 1:
        stacked = acc.reduce(stacked, reduction="mean")
    return dict(zip(keys, stacked.tolist(), strict=True))


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))


def progress_bar(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
