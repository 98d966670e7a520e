"""The one training loop: (policy, method, data, config) -> trained policy, on Accelerate.

Read it top to bottom: set-up (optimizer, schedule, resume), then epochs of optimizer steps
(each a forget micro-batch paired with a retain micro-batch, one forward pass for both, the
method's pure loss, backward, clip, step), then at each epoch end the forget-probability
check, a checkpoint and the stop rules. The loop's whole state is (epoch, global step, the
trainable weights, the optimizer, the schedule, the RNG states); data order is a function of
(seed, epoch, rank) (`uld.data.collate.PairedSchedule`), so stopping after an epoch and
resuming gives the same weights as an uninterrupted run.

Run files (only when `run_dir` is given): `metrics.jsonl` (one JSON object per logged step and
per epoch), `logs/samples-rank{r}.jsonl` (the forget / retain item ids each rank trained on),
`checkpoints/epoch-{e}/` (the last `keep_checkpoints` epochs), TensorBoard events in `tb/`
when `tensorboard` is installed.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uld.data.collate import EncodedSet, PairedSchedule, hash_key, pad_batch
from uld.errors import UldError
from uld.io import atomic_write_json
from uld.methods.base import LossInputs, MethodSpec
from uld.ops import sequence_nll
from uld.train.config import RunConfig
from uld.train.policy import Policy

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"


@dataclass
class TrainData:
    """Encoded items. `alt[i]` pairs forget item i's question with another answer (IdkPO);
    `forget_eval` is what the forget-probability check scores (the forget QAs before augmentation)."""

    forget: EncodedSet
    retain: EncodedSet | None = None
    alt: EncodedSet | None = None
    forget_eval: EncodedSet | None = None
    pad_id: int = 0


@dataclass
class TrainResult:
    module: torch.nn.Module
    """The trained policy module, unwrapped from Accelerate."""
    epochs_done: int
    steps: int
    finished: bool
    """False when the run stopped early on `stop_after_epoch` and should be resumed."""
    reason: str
    history: list[dict[str, Any]] = field(default_factory=list)
    """The epoch metric lines of this process's run (forget_prob, loss, time)."""


class TrainingDiverged(UldError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_mixed_precision(choice: str) -> str:
    """'auto' -> bf16 on a GPU that supports it, fp16 on other GPUs, 'no' on CPU (DESIGN §5:
    bf16 is ~3.5x slower than fp32 on a CPU without bf16 units)."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(cfg: RunConfig):
    import os

    from accelerate import Accelerator

    # Accelerate starts its gloo (CPU) process group only when told cpu=True; without it a
    # `torchrun` / `accelerate launch --multi_gpu` run on a machine with no GPU would train
    # each process alone.
    cpu_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision), cpu=cpu_group)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up over `warmup` steps, then linear / cosine decay to 0 (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def train(
    policy: Policy,
    spec: MethodSpec,
    data: TrainData,
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    accelerator=None,
) -> TrainResult:
    """Train `policy` with method `spec` on `data`; see the module docstring."""
    # ---------------------------------------------------------------- set-up
    acc = accelerator or make_accelerator(cfg)
    tc, world, rank = cfg.train, acc.num_processes, acc.process_index
    run_dir = Path(run_dir) if run_dir is not None else None
    opts = {**spec.defaults, **cfg.loss}
    needs = spec.needs
    if "alt" in needs and data.alt is None:
        raise UldError(f"method {spec.name!r} needs alternative answers for the forget questions")
    if "retain" in needs and not data.retain:
        raise UldError(f"method {spec.name!r} needs a retain set (--retain)")

    micro = tc.micro_batch_size or max(1, tc.batch_size // world)
    if tc.batch_size % (micro * world):
        raise UldError(
            f"train.batch_size {tc.batch_size} is not a multiple of micro_batch_size {micro} x {world} processes"
        )
    accum = tc.batch_size // (micro * world)
    schedule = PairedSchedule(
        num_forget=len(data.forget),
        num_retain=len(data.retain) if "retain" in needs else 0,
        micro_batch=micro,
        seed=cfg.seed,
        rank=rank,
        world=world,
    )
    steps_per_epoch = math.ceil(schedule.micro_steps / accum)
    total_steps = steps_per_epoch * tc.epochs

    hidden_layer, control = None, None
    if "hidden" in needs:
        hidden_layer = int(opts["layer"])
        n_layers = policy.module.config.num_hidden_layers
        if not 0 <= hidden_layer < n_layers:
            raise UldError(f"loss.layer {hidden_layer} is out of range for a model with {n_layers} layers")
        from uld.methods.rmu import rmu_control

        g = torch.Generator().manual_seed(hash_key(cfg.seed, 7))
        control = rmu_control(policy.module.config.hidden_size, float(opts["steering_coeff"]), g)

    if tc.gradient_checkpointing:
        target = getattr(policy.module, "model", policy.module)
        if not hasattr(target, "gradient_checkpointing_enable"):
            raise UldError(f"the {policy.kind} policy does not support gradient checkpointing")
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    params = policy.trainable_parameters()
    if not params:
        raise UldError("the policy has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay)
    warmup = int(tc.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, tc.schedule)
    )
    module, optimizer = acc.prepare(policy.module, optimizer)
    policy.to(acc.device)
    if control is not None:
        control = control.to(acc.device)

    start_epoch, global_step = 1, 0
    history: list[dict[str, Any]] = []
    ckpt = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
    if ckpt is not None:
        state = _load_checkpoint(ckpt, acc, module, optimizer, scheduler)
        start_epoch, global_step = state["epoch"] + 1, state["global_step"]
        history = state.get("history", [])
        if state.get("world_size") != world and acc.is_main_process:
            print(f"warning: the checkpoint was written with {state.get('world_size')} processes, now {world}: "
                  "the data order differs from an uninterrupted run")
        if run_dir is not None and acc.is_main_process:
            _truncate_metrics(run_dir / "metrics.jsonl", global_step)
    else:
        # Per-rank dropout streams (the weights were initialised identically on every rank).
        torch.manual_seed(hash_key(cfg.seed, 1 + rank))
    acc.wait_for_everyone()

    writer = _tensorboard(run_dir) if (run_dir is not None and acc.is_main_process) else None
    progress = _progress(acc.is_main_process)
    task = progress.add_task("train", total=total_steps, completed=global_step, loss=float("nan"), tps=0.0)
    finished, reason = True, f"completed {tc.epochs} epochs"
    epoch = start_epoch - 1

    # ---------------------------------------------------------------- epochs
    with progress:
        for epoch in range(start_epoch, tc.epochs + 1):
            module.train()
            t_epoch = time.perf_counter()
            forget_batches = schedule.forget_indices(epoch)
            retain_batches = schedule.retain_indices(epoch)
            epoch_loss, epoch_n = 0.0, 0
            for s in range(steps_per_epoch):
                t0, tokens = time.perf_counter(), 0
                group = range(s * accum, min((s + 1) * accum, schedule.micro_steps))
                step_logs: dict[str, float] = {}
                step_loss = 0.0
                for j, m in enumerate(group):
                    f_items = [data.forget.items[i] for i in forget_batches[m]]
                    r_items = [data.retain.items[i] for i in retain_batches[m]] if "retain" in needs else []
                    a_items = [data.alt.items[i] for i in forget_batches[m]] if "alt" in needs else []
                    batch = pad_batch(f_items + r_items + a_items, data.pad_id)
                    batch = {k: v.to(acc.device) for k, v in batch.items()}
                    tokens += int(batch["attention_mask"].sum())
                    if run_dir is not None:
                        _log_samples(run_dir, rank, epoch, global_step, f_items, r_items)
                    last = j == len(group) - 1
                    sync = contextlib.nullcontext() if last else acc.no_sync(module)
                    with sync:
                        with acc.autocast():
                            logits, hidden = policy.logits(module, batch, hidden_layer)
                            sizes = (len(f_items), len(r_items), len(a_items))
                            inputs = _loss_inputs(policy, module, batch, logits, hidden, sizes, needs, hidden_layer, control)
                            loss, logs = spec(inputs, **cfg.loss)
                        if not _all_finite(acc, loss):
                            raise TrainingDiverged(
                                f"the {spec.name} loss became {loss.item()} at step {global_step + 1} (epoch {epoch}); "
                                f"training stopped and the last good checkpoint is kept"
                                + (f" in {latest_checkpoint(run_dir)}" if run_dir and latest_checkpoint(run_dir) else "")
                                + "; try a lower train.lr"
                            )
                        acc.backward(loss / len(group))  # mean over the accumulated micro-batches
                    step_loss += loss.item() / len(group)
                    for k, v in logs.items():
                        step_logs[k] = step_logs.get(k, 0.0) + v / len(group)
                grad_norm = acc.clip_grad_norm_(params, tc.max_grad_norm) if tc.max_grad_norm > 0 else None
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                epoch_loss, epoch_n = epoch_loss + step_loss, epoch_n + 1

                tps = tokens * world / max(time.perf_counter() - t0, 1e-9)
                progress.update(task, advance=1, loss=step_loss, tps=tps, description=f"epoch {epoch}/{tc.epochs}")
                if global_step % tc.log_every == 0:
                    line = {
                        "type": "step",
                        "epoch": epoch,
                        "step": global_step,
                        "loss": _mean_over_ranks(acc, step_loss),
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "tokens_per_s": tps,
                        **{k: _mean_over_ranks(acc, v) for k, v in step_logs.items()},
                    }
                    _write_metrics(run_dir, acc, writer, line)

            # ------------------------------------------------------------ epoch end
            line = {
                "type": "epoch",
                "epoch": epoch,
                "step": global_step,
                "loss": _mean_over_ranks(acc, epoch_loss / max(1, epoch_n)),
                "time_s": time.perf_counter() - t_epoch,
            }
            if data.forget_eval is not None:
                line["forget_prob"] = forget_probability(policy, module, data.forget_eval, data.pad_id, micro, acc)
            history.append(line)
            _write_metrics(run_dir, acc, writer, line)
            if run_dir is not None:
                save_checkpoint(run_dir, epoch, global_step, acc, module, optimizer, scheduler, history, tc.keep_checkpoints)
            if tc.stop_forget_prob is not None and line.get("forget_prob", 0.0) >= tc.stop_forget_prob:
                reason = f"forget-answer probability {line['forget_prob']:.3f} >= {tc.stop_forget_prob} after epoch {epoch}"
                break
            if tc.stop_after_epoch is not None and epoch == tc.stop_after_epoch and epoch < tc.epochs:
                finished, reason = False, f"stopped after epoch {epoch} as asked; continue with --resume"
                break

    if writer is not None:
        writer.close()
    acc.wait_for_everyone()
    return TrainResult(acc.unwrap_model(module), epoch, global_step, finished, reason, history)


# -------------------------------------------------------------------- one step's loss inputs


def _loss_inputs(policy, module, batch, logits, hidden, sizes, needs, hidden_layer, control) -> LossInputs:
    """Split the joint forward pass [forget; retain; alt] into the method's `LossInputs`."""
    nf, nr, na = sizes
    f, r, a = slice(0, nf), slice(nf, nf + nr), slice(nf + nr, nf + nr + na)
    labels, mask = batch["labels"], batch["attention_mask"]
    inputs = LossInputs(forget_logits=logits[f], forget_labels=labels[f], forget_mask=mask[f])
    if "retain" in needs:
        inputs.retain_logits, inputs.retain_labels, inputs.retain_mask = logits[r], labels[r], mask[r]
    if "alt" in needs:
        inputs.alt_logits, inputs.alt_labels = logits[a], labels[a]
    if "hidden" in needs:
        inputs.forget_hidden, inputs.retain_hidden, inputs.control = hidden[f], hidden[r], control
    if needs & {"reference", "hidden"}:
        ref_logits, ref_hidden = policy.reference(module, batch, hidden_layer)
        if "reference" in needs:
            inputs.ref_forget_logits = ref_logits[f]
            inputs.ref_retain_logits = ref_logits[r] if nr else None
            inputs.ref_alt_logits = ref_logits[a] if na else None
        if "hidden" in needs:
            inputs.ref_retain_hidden = ref_hidden[r]
    return inputs


def _all_finite(acc, loss: torch.Tensor) -> bool:
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=acc.device)
    return float(acc.reduce(bad, reduction="sum").item()) == 0.0


def _mean_over_ranks(acc, value: float) -> float:
    if acc.num_processes == 1:
        return float(value)
    t = torch.tensor([float(value)], device=acc.device)
    return float(acc.reduce(t, reduction="mean").item())


@torch.no_grad()
def forget_probability(policy: Policy, module, items: EncodedSet, pad_id: int, batch_size: int, acc) -> float:
    """Mean over items of exp(-mean answer-token NLL) under the policy (TOFU's probability),
    each rank scoring its share, in eval mode (no dropout, no RNG draws)."""
    module.eval()
    mine = items.items[acc.process_index :: acc.num_processes]
    total = torch.zeros(2, device=acc.device, dtype=torch.float64)
    for i in range(0, len(mine), batch_size):
        batch = {k: v.to(acc.device) for k, v in pad_batch(mine[i : i + batch_size], pad_id).items()}
        with acc.autocast():
            logits, _ = policy.logits(module, batch)
        p = torch.exp(-sequence_nll(logits.float(), batch["labels"]))
        total += torch.stack([p.sum().double(), torch.tensor(float(len(p)), device=acc.device, dtype=torch.float64)])
    total = acc.reduce(total, reduction="sum") if acc.num_processes > 1 else total
    module.train()
    return float(total[0] / total[1].clamp_min(1))


# -------------------------------------------------------------------- checkpoints


def latest_checkpoint(run_dir: Path | None) -> Path | None:
    """The newest complete `checkpoints/epoch-N` (complete = has state.json), or None."""
    if run_dir is None or not (run_dir / CHECKPOINTS).is_dir():
        return None
    done = [p for p in (run_dir / CHECKPOINTS).glob("epoch-*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _uses_sharded_state(acc) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_checkpoint(run_dir, epoch, global_step, acc, module, optimizer, scheduler, history, keep) -> Path:
    """Write `checkpoints/epoch-{epoch}` atomically: trainable weights, optimizer, schedule, each
    rank's RNG states, then state.json (the completeness marker); prune older checkpoints."""
    root = run_dir / CHECKPOINTS
    final, tmp = root / f"epoch-{epoch}", root / f".epoch-{epoch}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    if _uses_sharded_state(acc):
        acc.save_state(str(tmp / "accelerate"))  # FSDP / DeepSpeed shard weights and optimizer
    else:
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(module)
            weights = {n: p.detach().cpu().clone() for n, p in unwrapped.named_parameters() if p.requires_grad}
            torch.save(weights, tmp / "trainable.pt")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(_rng_state(), tmp / f"rng-rank{acc.process_index}.pt")
    if acc.is_main_process:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        atomic_write_json(
            tmp / STATE_FILE,
            {"epoch": epoch, "global_step": global_step, "world_size": acc.num_processes, "history": history},
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        old = sorted((p for p in root.glob("epoch-*") if p != final), key=lambda p: int(p.name.split("-")[1]))
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def _load_checkpoint(ckpt: Path, acc, module, optimizer, scheduler) -> dict:
    state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    if _uses_sharded_state(acc):
        acc.load_state(str(ckpt / "accelerate"))
    else:
        weights = torch.load(ckpt / "trainable.pt", map_location="cpu", weights_only=True)
        unwrapped = acc.unwrap_model(module)
        result = unwrapped.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise UldError(f"checkpoint {ckpt} does not fit this policy (unexpected {result.unexpected_keys[:2]})")
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rng = ckpt / f"rng-rank{acc.process_index}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=True))
    return state


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------- logging


def _write_metrics(run_dir, acc, writer, line: dict) -> None:
    if run_dir is None or not acc.is_main_process:
        return
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    if writer is not None:
        for k, v in line.items():
            if isinstance(v, float) and k not in ("epoch", "step"):
                writer.add_scalar(f"{line['type']}/{k}", v, line["step"])


def _truncate_metrics(path: Path, global_step: int) -> None:
    # A run killed mid-epoch logged steps past its last checkpoint; resuming replays them.
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= global_step]
    path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")


def _log_samples(run_dir: Path, rank: int, epoch: int, step: int, f_items, r_items) -> None:
    path = run_dir / "logs" / f"samples-rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({
            "epoch": epoch,
            "step": step + 1,
            "forget": [e.meta.get("index") for e in f_items],
            "retain": [e.meta.get("index") for e in r_items],
        }) + "\n")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _progress(enabled: bool):
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


# -------------------------------------------------------------------- plain fine-tuning


def _nll_loss(inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised fine-tuning: token-mean NLL of the answers (prompt tokens masked)."""
    from uld.methods.functional import mean_nll

    loss = mean_nll(inputs.forget_logits, inputs.forget_labels)
    return loss, {"nll": loss.item()}


SFT = MethodSpec("sft", _nll_loss, frozenset(), {}, "Supervised fine-tuning on QA records.")
"""Not an unlearning method (not in the registry): the loop's plain fine-tuning objective."""


def finetune(model, tokenizer, records, cfg: RunConfig | None = None, run_dir: str | Path | None = None,
             resume: bool = False, accelerator=None) -> TrainResult:
    """Fine-tune every weight of `model` on QA `records` with the same loop (e.g. to build a
    target or a retain model for a benchmark). `cfg.method` is ignored; defaults: TOFU's
    fine-tuning recipe (lr 1e-5, 5 epochs, batch 32)."""
    from uld.data.collate import encode_records
    from uld.data.prompts import PromptFormat
    from uld.train.policy import FullPolicy

    cfg = cfg or RunConfig(method="sft")
    fmt = PromptFormat(cfg.data.template, cfg.data.answer_prefix, cfg.data.use_chat_template)
    items = encode_records(tokenizer, records, fmt, cfg.data.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    policy = FullPolicy(model, needs_frozen=False)
    return train(policy, SFT, TrainData(forget=items, pad_id=pad), cfg, run_dir, resume, accelerator)
