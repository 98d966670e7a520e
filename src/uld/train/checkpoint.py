"""Epoch checkpoints: one format, Accelerate's `save_state`, written atomically.

`checkpoints/epoch-{e}/` holds `accelerate/` (what `Accelerator.save_state` writes: the policy's
*trainable* weights as `model.safetensors`, the optimizer, each process's RNG states; FSDP /
DeepSpeed shards in their own layout) and `state.json` (epoch, global step, world size, the
epoch history and the learning-rate schedule's state), written last: a checkpoint without it is
incomplete and ignored. The schedule lives in `state.json` rather than being registered with
`register_for_checkpointing`, because Accelerate reloads registered objects with a full unpickle
(`weights_only=False`); everything it still pickles (optimizer, RNG) it reloads with
`weights_only=True`. The directory is built as `.epoch-{e}.tmp`
and renamed into place, so an interrupted save never leaves a half checkpoint behind.

Only parameters with `requires_grad` are saved (a pre-save hook filters the state dict): the
frozen rest of the policy comes from the target, so a ULD checkpoint holds the LoRA adapter,
not a copy of the target's embeddings and head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from uld.errors import UldError
from uld.io import atomic_write_json

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
STATE_DIR = "accelerate"


def latest_checkpoint(run_dir: str | Path | None) -> Path | None:
    """The newest complete `checkpoints/epoch-N` (complete = has state.json), or None."""
    if run_dir is None or not (Path(run_dir) / CHECKPOINTS).is_dir():
        return None
    done = [p for p in (Path(run_dir) / CHECKPOINTS).glob("epoch-*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def remove_partial(run_dir: str | Path) -> None:
    """Delete checkpoints whose save was cut short (`.epoch-N.tmp`)."""
    root = Path(run_dir) / CHECKPOINTS
    for tmp in root.glob(".epoch-*.tmp") if root.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)


def _keep_trainable(models, weights, output_dir) -> None:
    # Accelerate's pre-save hook: drop frozen tensors from each model's state dict (in place).
    for i, model in enumerate(models[: len(weights)]):
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        weights[i] = {k: v.contiguous() for k, v in weights[i].items() if k in trainable}


class Checkpointer:
    """Saves and restores the loop's whole state through `acc` (prepared module and optimizer,
    the scheduler registered here)."""

    def __init__(self, acc, scheduler):
        self.acc = acc
        self.scheduler = scheduler
        self._hook = acc.register_save_state_pre_hook(_keep_trainable)

    def close(self) -> None:
        self._hook.remove()

    def save(self, run_dir: Path, epoch: int, global_step: int, history: list[dict[str, Any]], keep: int) -> Path:
        """Write `checkpoints/epoch-{epoch}` atomically and keep only the newest `keep`."""
        acc = self.acc
        root = run_dir / CHECKPOINTS
        final, tmp = root / f"epoch-{epoch}", root / f".epoch-{epoch}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp / STATE_DIR))
            acc.wait_for_everyone()
            if acc.is_main_process:
                atomic_write_json(tmp / STATE_FILE, {"epoch": epoch, "global_step": global_step,
                                                     "world_size": acc.num_processes, "history": history,
                                                     "scheduler": self.scheduler.state_dict()})
                shutil.rmtree(final, ignore_errors=True)
                tmp.replace(final)
        except BaseException:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if acc.is_main_process:
            old = sorted((p for p in root.glob("epoch-*") if p != final), key=lambda p: int(p.name.split("-")[1]))
            for p in old[: max(0, len(old) - (keep - 1))]:
                shutil.rmtree(p, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load(self, ckpt: Path) -> dict[str, Any]:
        """Restore weights, optimizer, schedule and RNG states from `ckpt`; returns its state.json."""
        if not (ckpt / STATE_DIR).is_dir():
            raise UldError(f"checkpoint {ckpt} was written in an older format (pickled .pt files) and cannot be resumed")
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        try:
            self.acc.load_state(str(ckpt / STATE_DIR), strict=False)
        except (RuntimeError, ValueError, KeyError) as e:
            raise UldError(f"checkpoint {ckpt} does not fit this run's policy: {str(e).splitlines()[0]}") from e
        schedule = state.get("scheduler")
        if schedule is None:  # written before the schedule moved into state.json
            import torch

            schedule = torch.load(ckpt / STATE_DIR / "custom_checkpoint_0.pkl", weights_only=True)
        self.scheduler.load_state_dict(schedule)
        return state
