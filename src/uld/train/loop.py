"""The one training loop: (policy, method, data, config) -> trained policy, on Accelerate.

Read it top to bottom: set-up (optimizer, schedule, the method's prepared tensors, resume),
then epochs of optimizer steps (each a forget micro-batch paired with a retain micro-batch, one
forward pass for both, the method's pure loss, backward, one non-finite check per step, clip,
step), then at each epoch end the forget-probability check, a checkpoint and the stop rules.
The loop's whole state is (epoch, global step, the trainable weights, the optimizer, the
schedule, the RNG states); data order is a function of (seed, epoch, rank)
(`uld.data.collate.PairedSchedule`), so stopping after an epoch and resuming gives the same
weights as an uninterrupted run. Losses return detached tensors; the loop turns them into
numbers once per logging interval (`train.log_every`).

Run files (only when `run_dir` is given): see `uld.train.logs` (metrics, samples, TensorBoard)
and `uld.train.checkpoint` (`checkpoints/epoch-{e}/`, the last `keep_checkpoints` epochs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uld.data.collate import EncodedSet, PairedSchedule, hash_key, pad_batch
from uld.errors import UldError
from uld.methods.base import LossInputs, MethodSpec, get_method
from uld.ops import sequence_nll
from uld.train.checkpoint import Checkpointer, latest_checkpoint
from uld.train.config import PolicyConfig, RunConfig
from uld.train.logs import RunLog, progress_bar, to_numbers
from uld.train.policy import Policy

__all__ = ["TrainData", "TrainResult", "TrainingDiverged", "finetune", "forget_probability", "latest_checkpoint",
           "lr_factor", "make_accelerator", "train"]


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
    """The loss became NaN or infinite; the message says which checkpoint, if any, is kept."""


def resolve_mixed_precision(choice: str) -> str:
    """'auto' -> bf16 on a GPU that supports it, fp16 on other GPUs, 'no' on CPU (bf16 is about
    3.5x slower than fp32 on a CPU without bf16 units)."""
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
    opts = spec.parse_options(cfg.loss)
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

    # What the method asks for: hidden states at one block, tensors built once.
    model_config = getattr(policy.module, "config", None)
    hidden_layer = spec.hidden_layer(opts) if "hidden" in needs and spec.hidden_layer else None
    if hidden_layer is not None and spec.check_model is not None:
        spec.check_model(model_config, opts)
    prepared: dict[str, torch.Tensor] = {}
    if spec.prepare is not None:
        g = torch.Generator().manual_seed(hash_key(cfg.seed, 7))
        prepared = spec.prepare(model_config, opts, g)

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
    prepared = {k: v.to(acc.device) for k, v in prepared.items()}
    ckpts = Checkpointer(acc, scheduler)
    log = RunLog(run_dir, rank, acc.is_main_process)

    start_epoch, global_step = 1, 0
    history: list[dict[str, Any]] = []
    ckpt = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
    if ckpt is not None:
        state = ckpts.load(ckpt)
        start_epoch, global_step = state["epoch"] + 1, state["global_step"]
        history = state.get("history", [])
        if state.get("world_size") != world and acc.is_main_process:
            print(f"warning: the checkpoint was written with {state.get('world_size')} processes, now {world}: "
                  "the data order differs from an uninterrupted run")
        log.truncate(global_step)
    else:
        # Per-rank dropout streams (the weights were initialised identically on every rank).
        torch.manual_seed(hash_key(cfg.seed, 1 + rank))
    acc.wait_for_everyone()

    progress = progress_bar(acc.is_main_process)
    task = progress.add_task("train", total=total_steps, completed=global_step, loss=float("nan"), tps=0.0)
    finished, reason = True, f"completed {tc.epochs} epochs"
    epoch = start_epoch - 1

    # ---------------------------------------------------------------- epochs
    try:
        with progress:
            for epoch in range(start_epoch, tc.epochs + 1):
                module.train()
                t_epoch = time.perf_counter()
                forget_batches = schedule.forget_indices(epoch)
                retain_batches = schedule.retain_indices(epoch)
                epoch_loss = torch.zeros((), dtype=torch.float64, device=acc.device)
                epoch_n = 0
                for s in range(steps_per_epoch):
                    t0, tokens = time.perf_counter(), 0
                    group = range(s * accum, min((s + 1) * accum, schedule.micro_steps))
                    step_logs: dict[str, torch.Tensor] = {}
                    losses: list[torch.Tensor] = []
                    for j, m in enumerate(group):
                        f_items = [data.forget.items[i] for i in forget_batches[m]]
                        r_items = [data.retain.items[i] for i in retain_batches[m]] if "retain" in needs else []
                        a_items = [data.alt.items[i] for i in forget_batches[m]] if "alt" in needs else []
                        batch = pad_batch(f_items + r_items + a_items, data.pad_id)
                        tokens += int(batch["attention_mask"].sum())  # counted on the host: no device sync
                        batch = {k: v.to(acc.device) for k, v in batch.items()}
                        log.samples(epoch, global_step + 1, f_items, r_items)
                        last = j == len(group) - 1
                        sync = contextlib.nullcontext() if last else acc.no_sync(module)
                        with sync:
                            with acc.autocast():
                                logits, hidden = policy.logits(module, batch, hidden_layer)
                                sizes = (len(f_items), len(r_items), len(a_items))
                                inputs = _loss_inputs(policy, module, batch, logits, hidden, sizes, needs,
                                                      hidden_layer, prepared)
                                loss, logs = spec(inputs, opts)
                            acc.backward(loss / len(group))  # mean over the accumulated micro-batches
                        losses.append(loss.detach())
                        for k, v in logs.items():
                            step_logs[k] = step_logs.get(k, 0.0) + v.detach().double() / len(group)
                    # One check (and one all-reduce) per optimizer step, before the weights move.
                    _check_finite(acc, losses, spec, epoch, global_step, run_dir)
                    step_loss = sum(x.double() for x in losses) / len(group)
                    grad_norm = acc.clip_grad_norm_(params, tc.max_grad_norm) if tc.max_grad_norm > 0 else None
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    epoch_loss, epoch_n = epoch_loss + step_loss, epoch_n + 1

                    tps = tokens * world / max(time.perf_counter() - t0, 1e-9)
                    if global_step % tc.log_every == 0:
                        extra = {} if grad_norm is None else {"grad_norm": grad_norm}
                        nums = to_numbers(acc, {"loss": step_loss, **extra, **step_logs})
                        line = {"type": "step", "epoch": epoch, "step": global_step, "loss": nums.pop("loss"),
                                "lr": scheduler.get_last_lr()[0], "grad_norm": nums.pop("grad_norm", None),
                                "tokens_per_s": tps, **nums}
                        log.metrics(line)
                        progress.update(task, loss=line["loss"])
                    progress.update(task, advance=1, tps=tps, description=f"epoch {epoch}/{tc.epochs}")

                # ------------------------------------------------------------ epoch end
                line = {
                    "type": "epoch",
                    "epoch": epoch,
                    "step": global_step,
                    "loss": to_numbers(acc, {"loss": epoch_loss / max(1, epoch_n)})["loss"],
                    "time_s": time.perf_counter() - t_epoch,
                }
                if data.forget_eval is not None:
                    line["forget_prob"] = forget_probability(policy, module, data.forget_eval, data.pad_id, micro, acc)
                history.append(line)
                log.metrics(line)
                log.flush()
                if run_dir is not None:
                    ckpts.save(run_dir, epoch, global_step, history, tc.keep_checkpoints)
                if tc.stop_forget_prob is not None and line.get("forget_prob", 0.0) >= tc.stop_forget_prob:
                    reason = f"forget-answer probability {line['forget_prob']:.3f} >= {tc.stop_forget_prob} after epoch {epoch}"
                    break
                if tc.stop_after_epoch is not None and epoch == tc.stop_after_epoch and epoch < tc.epochs:
                    finished, reason = False, f"stopped after epoch {epoch} as asked; continue with --resume"
                    break
    finally:
        log.close()
        ckpts.close()

    acc.wait_for_everyone()
    return TrainResult(acc.unwrap_model(module), epoch, global_step, finished, reason, history)


# -------------------------------------------------------------------- one step's loss inputs


def _loss_inputs(policy, module, batch, logits, hidden, sizes, needs, hidden_layer, prepared) -> LossInputs:
    """Split the joint forward pass [forget; retain; alt] into the method's `LossInputs`."""
    nf, nr, na = sizes
    f, r, a = slice(0, nf), slice(nf, nf + nr), slice(nf + nr, nf + nr + na)
    labels, mask = batch["labels"], batch["attention_mask"]
    inputs = LossInputs(forget_logits=logits[f], forget_labels=labels[f], forget_mask=mask[f], prepared=prepared)
    if "retain" in needs:
        inputs.retain_logits, inputs.retain_labels, inputs.retain_mask = logits[r], labels[r], mask[r]
    if "alt" in needs:
        inputs.alt_logits, inputs.alt_labels = logits[a], labels[a]
    if "hidden" in needs:
        inputs.forget_hidden, inputs.retain_hidden = hidden[f], hidden[r]
    if needs & {"reference", "hidden"}:
        ref_logits, ref_hidden = policy.reference(module, batch, hidden_layer)
        if "reference" in needs:
            inputs.ref_forget_logits = ref_logits[f]
            inputs.ref_retain_logits = ref_logits[r] if nr else None
            inputs.ref_alt_logits = ref_logits[a] if na else None
        if "hidden" in needs:
            inputs.ref_retain_hidden = ref_hidden[r]
    return inputs


def _check_finite(acc, losses: list[torch.Tensor], spec: MethodSpec, epoch: int, global_step: int, run_dir) -> None:
    """Raise `TrainingDiverged` when any process saw a non-finite loss in this step."""
    bad = torch.stack([(~torch.isfinite(x)).any() for x in losses]).any().float().reshape(1)
    if acc.num_processes > 1:
        bad = acc.reduce(bad, reduction="sum")
    if float(bad.item()) == 0.0:
        return
    value = next((x.item() for x in losses if not torch.isfinite(x).all()), float("nan"))
    ckpt = latest_checkpoint(run_dir)
    kept = (f"the last good checkpoint, {ckpt}, is kept and --resume continues from it" if ckpt is not None
            else "no checkpoint had been written yet")
    raise TrainingDiverged(
        f"the {spec.name} loss became {value} at step {global_step + 1} (epoch {epoch}); training stopped, "
        f"{kept}; try a lower train.lr"
    )


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


# -------------------------------------------------------------------- plain fine-tuning


def finetune(model, tokenizer, records, cfg: RunConfig | None = None, run_dir: str | Path | None = None,
             resume: bool = False, accelerator=None) -> TrainResult:
    """Fine-tune every weight of `model` on QA `records` with the same loop (e.g. to build a
    target or a retain model for a benchmark), with the `sft` objective (token-mean answer NLL).
    `cfg.method` is ignored; defaults: TOFU's fine-tuning recipe (lr 1e-5, 5 epochs, batch 32)."""
    from uld.data.collate import encode_records
    from uld.data.prompts import PromptFormat
    from uld.train.policy import FullPolicy

    cfg = cfg or RunConfig(method="sft")
    fmt = PromptFormat(cfg.data.template, cfg.data.answer_prefix, cfg.data.use_chat_template)
    items = encode_records(tokenizer, records, fmt, cfg.data.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    policy = FullPolicy(model, needs_frozen=False)
    sft = get_method("sft")
    if cfg.method != "sft":  # the loss options and the policy belong to another method
        cfg = dataclasses.replace(cfg, method="sft", loss={}, policy=PolicyConfig())
    return train(policy, sft, TrainData(forget=items, pad_id=pad), cfg, run_dir, resume, accelerator)
